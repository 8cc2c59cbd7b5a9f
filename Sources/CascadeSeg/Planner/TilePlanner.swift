/// Plans a streamed run under a device-memory budget: pure arithmetic, no device.
///
/// When the whole-tensor plan (weights + activation arena) does not fit, the executor runs the
/// graph node by node with the activations in host memory. Each node uploads its own weights,
/// then computes its output in tiles: a box of whole x rows (`depth` z-planes by `height`
/// y-rows), uploading for each tile the input box it reads (the tile grown by the node's
/// receptive field, its halo) and downloading the result. Every output voxel is computed by the
/// same kernel from the same inputs as in an untiled run, so convolutions, pools and elementwise
/// nodes give bit-identical results; normalizations gather their statistics over all tiles first
/// (only the order of the summation changes).
///
/// For each node the planner picks the fewest tiles whose buffers fit: whole z-slabs first, and
/// y-rows only when a single z-plane is too large. The device bytes of a node are exactly what
/// the executor allocates: the node's weights, its scratch, one guarded buffer per activation
/// input sized for the largest input box of any tile, and one output buffer for the largest tile.
public enum TilePlanner {
    /// How the output coordinates of a node along one axis map to the input coordinates it reads.
    public enum AxisMap: Equatable, Sendable {
        /// Output voxel i reads input voxel i (elementwise nodes).
        case identity
        /// The whole input axis is read (broadcast operands; nodes that run untiled).
        case whole
        /// Convolution or pooling: output i reads `i * stride - padBegin + k * dilation`, k < kernel.
        case window(kernel: Int, stride: Int, dilation: Int, padBegin: Int)
        /// Transposed convolution: output o receives input i when `o = i * stride - padBegin + k * dilation`.
        case transposed(kernel: Int, stride: Int, dilation: Int, padBegin: Int)

        /// The input voxels `[lo, hi)` that outputs `[o0, o1)` read, cut to an input of `n`
        /// voxels; never empty (a tile whose taps all fall in the padding still gets one voxel,
        /// which it then does not read).
        public func inputRange(outputs o0: Int, _ o1: Int, inputSize n: Int) -> Range<Int> {
            var lo: Int, hi: Int
            switch self {
            case .identity: lo = o0; hi = o1
            case .whole: lo = 0; hi = n
            case .window(let k, let s, let d, let p):
                lo = o0 * s - p
                hi = (o1 - 1) * s - p + (k - 1) * d + 1
            case .transposed(let k, let s, let d, let p):
                lo = Self.ceilDiv(o0 + p - (k - 1) * d, s)
                hi = Self.floorDiv(o1 - 1 + p, s) + 1
            }
            lo = max(0, lo)
            hi = min(n, hi)
            if hi <= lo { lo = min(max(lo, 0), n - 1); hi = lo + 1 }
            return lo..<hi
        }

        /// The padding the kernel must assume on the low side when it sees the input from `inputStart`
        /// for outputs starting at `o0` (the whole tensor: `inputStart = o0 = 0`, the node's own padding).
        public func localPadBegin(outputStart o0: Int, inputStart a: Int) -> Int {
            switch self {
            case .identity, .whole: return 0
            case .window(_, let s, _, let p): return p - o0 * s + a
            case .transposed(_, let s, _, let p): return p + o0 - a * s
            }
        }

        static func floorDiv(_ a: Int, _ b: Int) -> Int { a >= 0 ? a / b : -((-a + b - 1) / b) }
        static func ceilDiv(_ a: Int, _ b: Int) -> Int { -floorDiv(-a, b) }
    }

    /// An activation a node reads: its channels, spatial extent (D, H, W) and axis maps for z and y
    /// (x is never cut: kernels work on whole rows).
    public struct Operand: Equatable, Sendable {
        public var channels: Int
        public var spatial: [Int]
        public var z: AxisMap
        public var y: AxisMap
        public init(channels: Int, spatial: [Int], z: AxisMap, y: AxisMap) {
            self.channels = channels; self.spatial = spatial; self.z = z; self.y = y
        }
    }

    /// What one node needs on the device.
    public struct Step: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            /// Runs on the device tile by tile.
            case tiled
            /// Runs on the device with whole tensors (nodes whose tiles are not supported).
            case whole
            /// Runs in host memory (concatenation, identity): no device memory.
            case host
        }
        public var name: String
        public var kind: Kind
        public var inputs: [Operand]
        public var outputChannels: Int
        public var outputSpatial: [Int]
        /// Device bytes of the node's weights and of its scratch (statistics), each one allocation.
        public var weightBytes: Int
        public var scratchBytes: Int
        /// Tile starts along z and y must be multiples of these (a 2x2x2 stride-2 transposed
        /// convolution maps even outputs to whole inputs).
        public var zAlignment: Int
        public var yAlignment: Int

        public init(name: String, kind: Kind, inputs: [Operand], outputChannels: Int, outputSpatial: [Int],
                    weightBytes: Int = 0, scratchBytes: Int = 0, zAlignment: Int = 1, yAlignment: Int = 1) {
            self.name = name; self.kind = kind; self.inputs = inputs; self.outputChannels = outputChannels
            self.outputSpatial = outputSpatial; self.weightBytes = weightBytes; self.scratchBytes = scratchBytes
            self.zAlignment = zAlignment; self.yAlignment = yAlignment
        }
    }

    /// The tiles of one node: `depth` z-planes by `height` y-rows of whole x rows each.
    public struct Tiling: Equatable, Sendable {
        public var depth: Int
        public var height: Int
        public var tileCount: Int
        /// Device bytes the node holds while it runs (exactly what the executor allocates).
        public var peakBytes: Int
        /// Largest input box per operand over all tiles (z, y extents), for sizing the buffers.
        public var inputExtents: [[Int]]
    }

    /// Bytes of the guard band on each side of an input buffer (see `ExecutionPlan.guardBytes`).
    public static let guardBytes = 4096
    /// Bytes the executor allocates for a buffer of `floats` values (drivers refuse empty buffers).
    public static func bufferBytes(floats: Int) -> Int { max(floats * 4, 4) }
    public static func guardedBufferBytes(floats: Int) -> Int { bufferBytes(floats: floats) + 2 * guardBytes }

    /// The tiles' output ranges along one axis.
    public static func ranges(extent: Int, tile: Int) -> [Range<Int>] {
        stride(from: 0, to: extent, by: tile).map { $0..<min(extent, $0 + tile) }
    }

    /// The tiling of `step` with tiles of `depth` x `height` and the device bytes it needs.
    public static func tiling(_ step: Step, depth: Int, height: Int) -> Tiling {
        let (d, h) = (step.outputSpatial[0], step.outputSpatial[1])
        let zs = ranges(extent: d, tile: depth), ys = ranges(extent: h, tile: height)
        var bytes = step.weightBytes + step.scratchBytes
        var extents: [[Int]] = []
        for input in step.inputs {
            let ez = zs.map { input.z.inputRange(outputs: $0.lowerBound, $0.upperBound, inputSize: input.spatial[0]).count }.max()!
            let ey = ys.map { input.y.inputRange(outputs: $0.lowerBound, $0.upperBound, inputSize: input.spatial[1]).count }.max()!
            extents.append([ez, ey])
            bytes += guardedBufferBytes(floats: input.channels * ez * ey * input.spatial[2])
        }
        bytes += bufferBytes(floats: step.outputChannels * min(depth, d) * min(height, h) * step.outputSpatial[2])
        return Tiling(depth: min(depth, d), height: min(height, h), tileCount: zs.count * ys.count, peakBytes: bytes, inputExtents: extents)
    }

    /// The device bytes of a node run with whole tensors.
    public static func wholeTiling(_ step: Step) -> Tiling {
        switch step.kind {
        case .host:
            return Tiling(depth: step.outputSpatial[0], height: step.outputSpatial[1], tileCount: 1, peakBytes: 0,
                          inputExtents: step.inputs.map { [$0.spatial[0], $0.spatial[1]] })
        case .tiled, .whole:
            return tiling(step, depth: step.outputSpatial[0], height: step.outputSpatial[1])
        }
    }

    /// The smallest tiling a step allows (the fewest bytes it can run in).
    public static func smallestTiling(_ step: Step) -> Tiling {
        step.kind == .tiled ? tiling(step, depth: step.zAlignment, height: step.yAlignment) : wholeTiling(step)
    }

    /// The budget below which some node cannot run, and that node's name.
    public static func minimumBudget(_ steps: [Step]) -> (bytes: Int, node: String) {
        steps.map { (smallestTiling($0).peakBytes, $0.name) }.max { $0.0 < $1.0 } ?? (0, "")
    }

    /// Fewest tiles per node within `budget` bytes, or an error naming the minimum budget.
    public static func plan(_ steps: [Step], budget: Int) throws -> [Tiling] {
        let minimum = minimumBudget(steps)
        guard minimum.bytes <= budget else {
            throw CascadeSegError.budget("a memory budget of \(budget) bytes is below the \(minimum.bytes) bytes node '\(minimum.node)' needs at its smallest tile; give at least \(minimum.bytes) bytes")
        }
        return steps.map { plan($0, budget: budget) }
    }

    /// The tiling of one step with the fewest tiles that fits (the step is known to fit at its smallest).
    static func plan(_ step: Step, budget: Int) -> Tiling {
        let whole = wholeTiling(step)
        guard step.kind == .tiled, whole.peakBytes > budget else { return whole }
        let (d, h) = (step.outputSpatial[0], step.outputSpatial[1])
        // Whole z-slabs: the largest aligned depth that fits, then the same number of tiles made
        // as even as alignment allows (smaller halos are never worse).
        if let depth = largestFitting(upTo: d, alignment: step.zAlignment, { tiling(step, depth: $0, height: h).peakBytes <= budget }) {
            let even = tiling(step, depth: evened(extent: d, tile: depth, alignment: step.zAlignment), height: h)
            return even.peakBytes <= budget ? even : tiling(step, depth: depth, height: h)
        }
        let depth = step.zAlignment
        let height = largestFitting(upTo: h, alignment: step.yAlignment, { tiling(step, depth: depth, height: $0).peakBytes <= budget })
            ?? step.yAlignment
        let even = tiling(step, depth: depth, height: evened(extent: h, tile: height, alignment: step.yAlignment))
        return even.peakBytes <= budget ? even : tiling(step, depth: depth, height: height)
    }

    /// The largest multiple of `alignment` (or `extent` itself) in 1...extent for which `fits`
    /// holds, assuming `fits` only turns false as the size grows.
    static func largestFitting(upTo extent: Int, alignment: Int, _ fits: (Int) -> Bool) -> Int? {
        var candidates = Array(stride(from: alignment, to: extent, by: alignment))
        candidates.append(extent)
        guard fits(candidates[0]) else { return nil }
        var (lo, hi) = (0, candidates.count - 1)
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if fits(candidates[mid]) { lo = mid } else { hi = mid - 1 }
        }
        return candidates[lo]
    }

    /// The smallest aligned tile that still covers `extent` in as many tiles as `tile` does.
    static func evened(extent: Int, tile: Int, alignment: Int) -> Int {
        let count = (extent + tile - 1) / tile
        let even = (extent + count - 1) / count
        return min(tile, (even + alignment - 1) / alignment * alignment)
    }
}
