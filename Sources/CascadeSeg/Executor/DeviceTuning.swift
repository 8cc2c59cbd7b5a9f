/// Block and work-group sizes for one device: the CLBlast idea of plain kernels parameterised
/// by defines, with the parameters chosen per device. Defaults come from the device's
/// properties; `ConvAutotuner` can measure better ones.
public struct DeviceTuning: Codable, Equatable, Sendable, CustomStringConvertible {
    /// conv3d_s1 and conv_transpose3d_k2s2: output channels per work-item, vector width along
    /// x, vectors per work-item.
    public var convKB: Int
    public var convXV: Int
    public var convXN: Int
    /// Local size of the convolution kernels.
    public var convLocal: [Int]
    /// conv3d_blocked cache blocking: x blocks per work-item, input channels per chunk.
    public var convTileBlocks: Int
    public var convChannelChunk: Int
    /// Elementwise kernels: local size (also compiled in as GROUP) and values per work-item.
    public var elementwiseGroup: Int
    public var elementwisePerItem: Int
    /// Normalization: partial sums per group, and whether each reads one contiguous chunk.
    public var normPartitions: Int
    public var normChunked: Bool
    /// Local size of the one-work-item-per-voxel kernels (pool, resize, pad, slice).
    public var voxelLocal: [Int]

    public var description: String {
        "conv KB=\(convKB) XV=\(convXV) XN=\(convXN) TX=\(convTileBlocks) CC=\(convChannelChunk) local=\(convLocal); elementwise \(elementwiseGroup)x\(elementwisePerItem); norm P=\(normPartitions)\(normChunked ? " chunked" : "")"
    }

    /// The tuning a network uses when none is given: the cached autotuning result of this
    /// device (`cascadeseg tune`), or the defaults.
    public static func preferred(for device: ComputeDevice) -> DeviceTuning {
        ConvAutotuner.cached(for: device) ?? defaults(for: device)
    }

    /// Sizes every kernel accepts (guards a hand-edited or stale cache file).
    var isValid: Bool {
        [4, 8, 16].contains(convXV) && (1...16).contains(convKB) && (1...4).contains(convXN)
            && (1...64).contains(convTileBlocks) && convChannelChunk >= 1
            && convLocal.count == 3 && convLocal.allSatisfy { $0 >= 1 && $0 <= 1024 } && convLocal.reduce(1, *) <= 1024
            && elementwiseGroup >= 1 && elementwisePerItem >= 1 && normPartitions >= 1 && voxelLocal.count == 3
            && voxelLocal.allSatisfy { $0 >= 1 } && voxelLocal.reduce(1, *) <= 1024
    }

    public static func defaults(for device: ComputeDevice) -> DeviceTuning {
        device.isCPU ? cpu(vectorWidth: device.preferredFloatVectorWidth, computeUnits: device.computeUnits) : gpu
    }

    /// CPUs: one work-item per group, explicit vectors as wide as the SIMD unit; 12 (AVX2, 16
    /// registers) to 16 (AVX-512, 32 registers) vector accumulators so nothing spills.
    public static func cpu(vectorWidth: Int, computeUnits: Int) -> DeviceTuning {
        let wide = vectorWidth >= 16
        // Eight x blocks per work-item and eight input channels per chunk keep a chunk's weights
        // and input rows in L1/L2 on large feature maps (measured 2-5x faster than no blocking on
        // a 64->32 channel 3x3x3 conv at 128^3 here; see BENCHMARKS.md).
        return DeviceTuning(convKB: wide ? 8 : 6, convXV: wide ? 16 : 8, convXN: 2, convLocal: [1, 1, 1],
                            convTileBlocks: 8, convChannelChunk: 8,
                            elementwiseGroup: 1, elementwisePerItem: 4096,
                            normPartitions: 4 * max(computeUnits, 1), normChunked: true,
                            voxelLocal: [16, 1, 1])
    }

    /// GPUs: many light work-items, coalesced along x.
    public static let gpu = DeviceTuning(convKB: 4, convXV: 4, convXN: 1, convLocal: [8, 8, 1],
                                         convTileBlocks: 1, convChannelChunk: 1 << 20,
                                         elementwiseGroup: 256, elementwisePerItem: 4,
                                         normPartitions: 256, normChunked: false, voxelLocal: [32, 4, 1])
}
