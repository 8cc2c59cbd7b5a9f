import Foundation

/// A stage network's class scores on a grid: K channels over `size` voxels, channel-major
/// (channel k of voxel i, i = x + nx * (y + ny * z), is `values[k * voxelCount + i]`), the same
/// layout as the network's 1 x K x D x H x W output, so cropping and resampling work channel by
/// channel on contiguous planes.
public struct ClassLogits: Equatable, Sendable {
    public var size: SIMD3<Int>
    public var channels: Int
    public var values: [Float]

    public init(size: SIMD3<Int>, channels: Int, values: [Float]) {
        precondition(size.x >= 1 && size.y >= 1 && size.z >= 1 && channels >= 1, "logits need a non-empty grid and a channel")
        precondition(values.count == channels * size.x * size.y * size.z, "\(values.count) values do not fill \(channels) channels of \(size)")
        self.size = size
        self.channels = channels
        self.values = values
    }

    public var voxelCount: Int { size.x * size.y * size.z }

    /// The first `size` voxels of each axis of a network's 1 x K x D x H x W output (the rest is
    /// the zero padding the input was given). Refuses an output that is not on a grid holding
    /// `size`, has fewer than two channels (an arg-max or a single score is not a set of class
    /// logits), or holds NaN or infinite values (a broken network, which arg-max and softmax
    /// would otherwise turn into arbitrary labels).
    public init(networkOutput output: Tensor, graphName: String, croppedTo size: SIMD3<Int>) throws {
        let s = output.shape
        guard s.count == 5, s[0] == 1, s[2] >= size.z, s[3] >= size.y, s[4] >= size.x else {
            throw CascadeSegError.invalidGraph("graph '\(graphName)' must output 1 x K x D x H x W logits on its input's grid, not \(s)")
        }
        guard s[1] >= 2 else {
            throw CascadeSegError.invalidGraph("graph '\(graphName)' outputs \(s[1]) channel(s); segmentation needs K >= 2 channels of class logits")
        }
        let k = s[1], n = size.x * size.y * size.z
        var nonFinite = 0
        if Array(s[2...]) == size.zyx {
            // Nothing to crop: share the output's storage (a K-channel output can be large).
            output.data.withUnsafeBufferPointer { v in for x in v where !x.isFinite { nonFinite += 1 } }
            guard nonFinite == 0 else {
                throw CascadeSegError.invalidGraph("graph '\(graphName)' produced \(nonFinite) NaN or infinite logits")
            }
            self.init(size: size, channels: k, values: output.data)
            return
        }
        var values = [Float](repeating: 0, count: k * n)
        output.data.withUnsafeBufferPointer { src in
            values.withUnsafeMutableBufferPointer { dst in
                for c in 0..<k {
                    for z in 0..<size.z {
                        for y in 0..<size.y {
                            let from = ((c * s[2] + z) * s[3] + y) * s[4], to = c * n + (z * size.y + y) * size.x
                            for x in 0..<size.x {
                                let v = src[from + x]
                                if !v.isFinite { nonFinite += 1 }
                                dst[to + x] = v
                            }
                        }
                    }
                }
            }
        }
        guard nonFinite == 0 else {
            throw CascadeSegError.invalidGraph("graph '\(graphName)' produced \(nonFinite) NaN or infinite logits")
        }
        self.init(size: size, channels: k, values: values)
    }

    /// The label each channel stands for: channel k is the label with the k-th smallest id when
    /// the label table has one entry per channel, otherwise label id k. In the second case every
    /// id in the table must be below K, or the table describes labels the network cannot output.
    public static func labelOfChannel(_ labels: [ModelMetadata.Label], channels: Int) throws -> [Int32] {
        let ids = labels.map(\.id).sorted()
        if ids.count == channels { return ids.map { Int32($0) } }
        if let unreachable = ids.first(where: { $0 >= channels }) {
            throw CascadeSegError.invalidModel("the network outputs \(channels) channels but the label table has \(ids.count) entries, including id \(unreachable): with a count that differs, channel k is label k, so the table's ids must be below \(channels)")
        }
        return (0..<channels).map { Int32($0) }
    }

    /// The label of each voxel: the first channel with the highest score.
    public func argMax(labelOfChannel: [Int32]) -> [Int32] {
        precondition(labelOfChannel.count == channels, "\(labelOfChannel.count) labels for \(channels) channels")
        let n = voxelCount
        var labels = [Int32](repeating: 0, count: n)
        values.withUnsafeBufferPointer { v in
            for i in 0..<n {
                var best = v[i], index = 0
                for k in 1..<channels where v[k * n + i] > best { best = v[k * n + i]; index = k }
                labels[i] = labelOfChannel[index]
            }
        }
        return labels
    }

    /// Every channel resampled to `size` (trilinear, by physical extent, **without**
    /// anti-aliasing: logits are not an image to be smoothed, and without the filter the result
    /// at each voxel is a convex combination of the scores around it).
    public func resampled(to size: SIMD3<Int>) -> ClassLogits {
        if size == self.size { return self }
        let n = voxelCount
        var out = [Float]()
        out.reserveCapacity(channels * size.x * size.y * size.z)
        for k in 0..<channels {
            let plane = Volume(size: self.size, voxels: Array(values[(k * n)..<((k + 1) * n)]))
            out += Resampler.resample(plane, toSize: size, antiAliasing: false).voxels
        }
        return ClassLogits(size: size, channels: channels, values: out)
    }
}
