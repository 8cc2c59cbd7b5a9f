import Foundation
@testable import CascadeSeg

/// The `<name>_in_<size>.npy` / `<name>_out_<size>.npy` pairs stored next to a fixture network.
enum FixturePairs {
    static func load(_ name: String, in folder: URL) throws -> [(size: String, input: Tensor, expected: Tensor)] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasPrefix("\(name)_in_") && $0.hasSuffix(".npy") }.sorted()
            .map { file in
                let size = String(file.dropFirst("\(name)_in_".count).dropLast(4))
                return (size, try NpyFile.read(folder.appendingPathComponent(file).path),
                        try NpyFile.read(folder.appendingPathComponent("\(name)_out_\(size).npy").path))
            }
    }
}

/// How far a result is from its reference: relative L2 error and largest absolute difference.
func differences(_ y: [Float], _ expected: [Float]) -> (relativeL2: Double, maxAbs: Float) {
    var err2 = 0.0, ref2 = 0.0
    var maxErr: Float = 0
    for (a, b) in zip(y, expected) {
        err2 += Double(a - b) * Double(a - b)
        ref2 += Double(b) * Double(b)
        maxErr = max(maxErr, abs(a - b))
    }
    return ((err2 / max(ref2, 1e-30)).squareRoot(), maxErr)
}
