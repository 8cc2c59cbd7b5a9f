import CascadeSeg
import Foundation

/// Reads the tensor a command runs on: a float32 `.npy` (1xCxDxHxW or CxDxHxW) as is, or a 3-D
/// NIfTI volume as 1x1xZxYxX, z-scored over its non-zero voxels and zero-padded at the far end of
/// each axis up to `multiple`.
enum VolumeInput {
    static func load(_ path: String, multiple: [Int] = [1, 1, 1]) throws -> (tensor: Tensor, description: String) {
        if path.hasSuffix(".nii") || path.hasSuffix(".nii.gz") {
            let image = try NiftiImage(contentsOf: path)
            guard image.nonFiniteCount == 0 else {
                throw CascadeSegError.invalidInput("\(path) has \(image.nonFiniteCount) NaN or infinite voxels")
            }
            let (nx, ny, nz) = (image.nx, image.ny, image.nz)
            let foreground = image.voxels.filter { $0 != 0 }
            let values = foreground.isEmpty ? image.voxels : foreground
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(max(values.count, 1))
            let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(max(values.count, 1))
            let scale = variance > 0 ? 1 / variance.squareRoot() : 1
            let padded = [nz, ny, nx].enumerated().map { (i, n) in (n + multiple[i] - 1) / multiple[i] * multiple[i] }
            var tensor = Tensor(zeros: [1, 1] + padded)
            for z in 0..<nz {
                for y in 0..<ny {
                    for x in 0..<nx {
                        tensor.data[(z * padded[1] + y) * padded[2] + x] = Float((Double(image.voxels[(z * ny + y) * nx + x]) - mean) * scale)
                    }
                }
            }
            let s = image.spacing
            return (tensor, String(format: "%@: %dx%dx%d voxels of %.2fx%.2fx%.2f mm, z-scored, padded to %@",
                                   (path as NSString).lastPathComponent, nx, ny, nz, s.x, s.y, s.z, padded.map(String.init).joined(separator: "x")))
        }
        var tensor = try NpyFile.read(path)
        guard tensor.shape.count == 5 && tensor.shape[0] == 1 || tensor.shape.count == 4 else {
            throw CascadeSegError.invalidInput("\(path): shape \(tensor.shape) must be 1xCxDxHxW or CxDxHxW")
        }
        if tensor.shape.count == 4 { tensor.shape = [1] + tensor.shape }
        return (tensor, "\((path as NSString).lastPathComponent): \(tensor.shape)")
    }
}
