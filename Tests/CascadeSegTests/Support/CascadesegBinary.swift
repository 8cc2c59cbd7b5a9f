import Foundation
import XCTest
@testable import CascadeSeg

/// Runs the `cascadeseg` binary SwiftPM built next to the tests (`swift build --build-tests`
/// builds it), as a user would: arguments in; exit status, stdout and stderr out.
enum CascadesegBinary {
    struct Outcome { var status: Int32; var stdout: String; var stderr: String }

    static var url: URL {
        let bundle = Bundle(for: Anchor.self)
        let candidates = [Bundle.main.executableURL?.deletingLastPathComponent(), bundle.bundleURL,
                          bundle.bundleURL.deletingLastPathComponent()].compactMap { $0 }
        return candidates.map { $0.appendingPathComponent("cascadeseg") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0].appendingPathComponent("cascadeseg")
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        let binary = url
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw CascadeSegError.io("the cascadeseg binary is not built next to the tests (\(binary.path)); run `swift build --build-tests`")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Drain stderr on another thread, so that a child filling one pipe cannot block on it.
        let errData = LockedData()
        let reader = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.done { usleep(1000) }
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                       stderr: String(decoding: errData.value, as: UTF8.self))
    }

    /// A fresh folder removed when `test` ends.
    static func temporaryDirectory(for test: XCTestCase) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cascadeseg-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    private final class Anchor {}

    private final class LockedData: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data(), finished = false
        func set(_ d: Data) { lock.lock(); data = d; finished = true; lock.unlock() }
        var done: Bool { lock.lock(); defer { lock.unlock() }; return finished }
        var value: Data { lock.lock(); defer { lock.unlock() }; return data }
    }
}
