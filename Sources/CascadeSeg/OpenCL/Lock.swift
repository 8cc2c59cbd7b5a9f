import Foundation

/// A mutex with a closure-scoped critical section.
final class Lock: @unchecked Sendable {
    private let lock = NSLock()
    @discardableResult
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
