/// One launch of a stage network on a volume: the volume is placed at the origin of a zero
/// tensor of the padded size (zero padding at the far end of each axis, i.e. the normalized
/// background), the network runs, and only the logits of the volume's own voxels are kept.
/// Both the whole-volume stage (padded to the size multiple) and each stage-2 ROI (padded to the
/// planner's input size) go through here, so the two cannot drift apart.
public enum StageRun {
    public struct Output: Sendable {
        /// The logits on the volume's grid (the padding cropped off).
        public var logits: ClassLogits
        public var run: RunResult
    }

    /// The size `size` padded up to a multiple of `multiple` on each axis.
    public static func padded(_ size: SIMD3<Int>, toMultipleOf multiple: SIMD3<Int>) -> SIMD3<Int> {
        var out = size
        for a in 0..<3 { out[a] = (size[a] + multiple[a] - 1) / multiple[a] * multiple[a] }
        return out
    }

    /// Runs `network` on `volume` zero-padded to `paddedSize` (each component at least the
    /// volume's), passing `memoryBudget` to `Network.run`.
    public static func run(_ volume: Volume, paddedTo paddedSize: SIMD3<Int>, network: Network, memoryBudget: Int? = nil) throws -> Output {
        let size = volume.size
        precondition(all(paddedSize .>= size), "padded size \(paddedSize) is smaller than the volume \(size)")
        var input = Tensor(zeros: [1, 1, paddedSize.z, paddedSize.y, paddedSize.x])
        input.data.withUnsafeMutableBufferPointer { dst in
            volume.voxels.withUnsafeBufferPointer { src in
                for z in 0..<size.z {
                    for y in 0..<size.y {
                        let from = (z * size.y + y) * size.x, to = (z * paddedSize.y + y) * paddedSize.x
                        for x in 0..<size.x { dst[to + x] = src[from + x] }
                    }
                }
            }
        }
        let run = try network.run(input, memoryBudget: memoryBudget)
        let name = network.graph.name
        guard let output = run.outputs[network.graph.outputs[0].name], output.shape.count == 5,
              Array(output.shape[2...]) == [paddedSize.z, paddedSize.y, paddedSize.x] else {
            throw CascadeSegError.invalidGraph("graph '\(name)' must output 1 x K x D x H x W logits on the input's grid \(paddedSize.zyx)")
        }
        return Output(logits: try ClassLogits(networkOutput: output, graphName: name, croppedTo: size), run: run)
    }
}
