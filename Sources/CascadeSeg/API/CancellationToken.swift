import Foundation

/// A flag that asks a running segmentation to stop.
///
/// Pass one in `SegmentationOptions.cancellation` and call `cancel()` from any thread. The
/// segmentation checks the flag before each stage and before each stage-2 ROI, and then throws
/// `CascadeSegError.cancelled`; a network run that has started finishes first. A cancelled
/// segmentation writes nothing and releases what it allocated. A token stays cancelled once
/// cancelled: use a new one for the next segmentation.
///
/// Thread safety: every member may be called from any thread at any time.
public final class CancellationToken: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    /// A token that is not cancelled.
    public init() {}

    /// Asks the work that checks this token to stop at its next check. Idempotent.
    public func cancel() {
        lock.lock(); cancelled = true; lock.unlock()
    }

    /// Whether `cancel()` has been called.
    public var isCancelled: Bool {
        lock.lock(); defer { lock.unlock() }
        return cancelled
    }

    /// Throws `CascadeSegError.cancelled(place)` when cancelled; `place` says where the work stopped.
    public func check(_ place: String) throws {
        if isCancelled { throw CascadeSegError.cancelled("stopped \(place)") }
    }
}
