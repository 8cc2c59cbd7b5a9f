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
