import Foundation

/// A streamed run: activations live in host memory, each node uploads its own weights and runs
/// in the tiles `TilePlanner` chose, so the device never holds more than the budget.
extension Network {
    /// Which normalizations a streamed run defers, and where it gathers their statistics.
    ///
    /// A normalization whose input comes straight from a device node (one tensor, already
    /// final) is *deferred*: its producer computes the chunk moments of every output tile while
    /// the tile is still on the device, and each later reader applies the scale and shift to the
    /// boxes it uploads, in place, before its own kernel (Concat and Identity just pass the
    /// pending normalization along). The normalized tensor never makes a round trip of its own.
    /// Values that reach a graph output are always materialized.
    struct StreamFusion {
        /// Deferred normalization node indices.
        var deferred: Set<Int> = []
        /// Producer node index -> the normalization whose moments it gathers.
        var momentsFor: [Int: Int] = [:]
        /// Per activation: the deferred normalizations its readers must apply on upload.
        var pending: [String: [Int]] = [:]
    }

    func streamFusion() -> StreamFusion {
        var fusion = StreamFusion()
        var producer: [String: Int] = [:]
        for (i, node) in order.enumerated() { for o in node.outputs { producer[o] = i } }
        // Values from which a graph output can be reached through Concat/Identity.
        var reachesOutput = Set(graph.outputs.map(\.name))
        for node in order.reversed() where (node.op == .concat || node.op == .identity) && reachesOutput.contains(node.outputs[0]) {
            for x in node.inputs { reachesOutput.insert(x) }
        }
        for (i, node) in order.enumerated() {
            let out = node.outputs[0]
            switch node.op {
            case .instanceNormalization, .groupNormalization:
                // The producer must be a device node that can gather the moments: not a
                // normalization, not already gathering them for another reader.
                guard let x = node.input(0), let p = producer[x], fusion.pending[x] == nil, !reachesOutput.contains(out),
                      ![.concat, .identity].contains(order[p].op), normGroups[p] == nil, fusion.momentsFor[p] == nil else { continue }
                fusion.deferred.insert(i)
                fusion.pending[out] = [i]
                fusion.momentsFor[p] = i
            case .concat, .identity:
                let carried = node.inputs.flatMap { fusion.pending[$0] ?? [] }
                if !carried.isEmpty { fusion.pending[out] = carried }
            default:
                break
            }
        }
        return fusion
    }

    /// The planner's description of every node for an input of `shapes` (see `TilePlanner.Step`),
    /// with the extra device bytes of the deferred normalizations (`StreamFusion`).
    func tileSteps(shapes: [String: [Int]], fusion: StreamFusion) throws -> [TilePlanner.Step] {
        try order.enumerated().map { i, node in
            var step = try tileStep(i, node: node, shapes: shapes)
            guard step.kind != .host else { return step }
            if fusion.deferred.contains(i) {
                // Only the statistics remain, gathered by the producer.
                step.kind = .host
                step.inputs = []
                step.weightBytes = 0
                step.scratchBytes = 0
                return step
            }
            if let norm = fusion.momentsFor[i] {
                step.scratchBytes += TilePlanner.bufferBytes(floats: 2 * normGroups[norm]! * tuning.normPartitions)
            }
            // Readers apply pending normalizations: their scale, shift and statistics are resident meanwhile.
            for x in Set(node.inputs) {
                for norm in fusion.pending[x] ?? [] {
                    step.weightBytes += nodeWeightBytes[norm] + TilePlanner.bufferBytes(floats: 2 * normGroups[norm]!)
                }
            }
            return step
        }
    }

    private func tileStep(_ i: Int, node: Node, shapes: [String: [Int]]) throws -> TilePlanner.Step {
        do {
            let out = shapes[node.outputs[0]]!
            let outSpatial = Array(out[2...])
            func activation(_ name: String, z: TilePlanner.AxisMap, y: TilePlanner.AxisMap) -> TilePlanner.Operand {
                let s = shapes[name]!
                // An operand with one voxel where the output has more is broadcast: read whole.
                return .init(channels: s[1], spatial: Array(s[2...]),
                             z: s[2] == 1 && out[2] != 1 ? .whole : z, y: s[3] == 1 && out[3] != 1 ? .whole : y)
            }
            let activations = node.inputs.filter { !$0.isEmpty && constantShapes[$0] == nil }
            let elementwise = activations.map { activation($0, z: .identity, y: .identity) }
            var step = TilePlanner.Step(name: node.name, kind: .tiled, inputs: elementwise, outputChannels: out[1],
                                        outputSpatial: outSpatial, weightBytes: nodeWeightBytes[i])
            switch node.op {
            case .conv, .convTranspose:
                let w = hostWeights[node.inputs[1]]!
                let inChannels = node.op == .conv ? w.shape[1] * (try node.int("group", default: 1)) : w.shape[0]
                let p = try ConvParameters(node: node, inputChannels: inChannels, weightShape: w.shape,
                                           biasShape: node.input(2).flatMap { hostWeights[$0]?.shape })
                let map = { (a: Int) -> TilePlanner.AxisMap in
                    p.transposed ? .transposed(kernel: p.kernel[a], stride: p.strides[a], dilation: p.dilations[a], padBegin: p.padsBegin[a])
                                 : .window(kernel: p.kernel[a], stride: p.strides[a], dilation: p.dilations[a], padBegin: p.padsBegin[a]) }
                step.inputs = [activation(node.inputs[0], z: map(0), y: map(1))]
                if p.transposed {
                    // The 2x2x2 stride-2 kernel has no padding argument: tiles start on even outputs.
                    step.zAlignment = p.strides[0]
                    step.yAlignment = p.strides[1]
                }
            case .maxPool, .averagePool:
                let p = try PoolParameters(node: node)
                let map = { (a: Int) -> TilePlanner.AxisMap in .window(kernel: p.kernel[a], stride: p.strides[a], dilation: p.dilations[a], padBegin: p.padsBegin[a]) }
                step.inputs = [activation(node.inputs[0], z: map(0), y: map(1))]
            case .instanceNormalization, .groupNormalization:
                let groups = normGroups[i]!
                step.scratchBytes = TilePlanner.bufferBytes(floats: 2 * groups * tuning.normPartitions) + TilePlanner.bufferBytes(floats: 2 * groups)
            case .concat, .identity:
                step.kind = .host
            case .resize, .pad, .slice:
                // Their kernels index whole tensors; they run untiled (and count so in the minimum).
                step.kind = .whole
                step.inputs = activations.map { activation($0, z: .whole, y: .whole) }
            case .prelu, .add, .mul:
                // A constant operand with a full spatial extent is indexed per voxel of the whole tensor.
                let spatialConstant = node.inputs.contains { constantShapes[$0].map { $0.count >= 3 && $0.suffix(3).reduce(1, *) > 1 } ?? false }
                if spatialConstant {
                    step.kind = .whole
                    step.inputs = activations.map { activation($0, z: .whole, y: .whole) }
                }
            case .batchNormalization, .relu, .leakyRelu, .sigmoid, .tanh, .softmax, .argMax:
                break
            }
            return step
        }
    }

    /// The smallest budget (device bytes, for this network alone) a run on `inputShape` can meet.
    public func minimumMemoryBudget(inputShape: [Int]) throws -> Int {
        let shape = inputShape.count == 4 ? [1] + inputShape : inputShape
        let shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: shape, constants: constantShapes)
        return TilePlanner.minimumBudget(try tileSteps(shapes: shapes, fusion: streamFusion())).bytes
    }

    /// Runs the graph streamed within `budget` device bytes (everything else the context holds included).
    func runTiled(_ input: Tensor, shape: [Int], budget: Int, profile: Bool) throws -> RunResult {
        let shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: shape, constants: constantShapes)
        let fusion = streamFusion()
        let steps = try tileSteps(shapes: shapes, fusion: fusion)
        dropDeviceWeights()
        let others = context.memory.liveBytes
        guard others < budget else {
            throw CascadeSegError.budget("the device already holds \(others) bytes, leaving nothing of the \(budget)-byte budget for '\(graph.name)'")
        }
        let tilings = try TilePlanner.plan(steps, budget: budget - others)
        let start = DispatchTime.now()
        let window = context.memory.openWindow()
        defer { context.memory.close(window) }
        var timings: [(String, OpType, Double)] = []

        var stream = Stream(host: [graph.input.name: HostValue(parts: [.init(data: input.data, channels: shape[1])])])
        var lastUse: [String: Int] = [:]
        for (i, node) in order.enumerated() { for x in node.inputs where !x.isEmpty { lastUse[x] = i } }
        for o in graph.outputs { lastUse[o.name] = order.count }

        for (i, node) in order.enumerated() {
            let t0 = DispatchTime.now()
            let out = node.outputs[0]
            switch node.op {
            case _ where fusion.deferred.contains(i):
                // A deferred normalization: its readers apply it with the statistics its producer gathered.
                var part = stream.host[node.inputs[0]]!.parts[0]
                part.pending = PendingNormalization(node: i, stats: stream.moments[i]!.statistics(epsilon: normEpsilon(i)))
                stream.host[out] = HostValue(parts: [part])
            case .identity:
                stream.host[out] = stream.host[node.inputs[0]]!
            case .concat:
                // Channel concatenation of NCDHW tensors (N = 1): the parts, one after another.
                stream.host[out] = HostValue(parts: node.inputs.flatMap { stream.host[$0]!.parts })
            default:
                let op = try lowerNode(i)
                if case .norm(let n) = op {
                    stream.host[out] = try runNormalization(n, index: i, node: node, shapes: shapes, tiling: tilings[i], stream: &stream)
                } else {
                    stream.host[out] = try runTiles(op, index: i, node: node, step: steps[i], shapes: shapes, tiling: tilings[i],
                                                    momentsFor: fusion.momentsFor[i], stream: &stream)
                }
            }
            for x in Set(node.inputs) where lastUse[x] == i { stream.drop(x) }
            if profile {
                timings.append((node.name, node.op, t0.secondsElapsed))
            }
        }
        var outputs: [String: Tensor] = [:]
        for o in graph.outputs {
            let value = stream.host[o.name]!
            precondition(value.parts.allSatisfy { $0.pending == nil }, "graph outputs are never left pending")
            outputs[o.name] = Tensor(shape: shapes[o.name]!, data: value.parts.count == 1 ? value.parts[0].data : value.parts.flatMap(\.data))
        }
        let seconds = start.secondsElapsed
        return RunResult(outputs: outputs, peakDeviceBytes: window.peak,
                         plannedPeakBytes: others + (tilings.map(\.peakBytes).max() ?? 0),
                         seconds: seconds, profile: timings, tiles: tilings.map(\.tileCount).max() ?? 1)
    }

    private func normEpsilon(_ index: Int) -> Double {
        Double((try? order[index].float("epsilon", default: 1e-5)) ?? 1e-5)
    }

    /// One guarded input buffer (the view inside the guard bands is what kernels see).
    private func guardedBuffer(floats: Int, label: String) throws -> (owner: DeviceBuffer, view: DeviceBuffer) {
        let owner = try context.allocate(bytes: TilePlanner.guardedBufferBytes(floats: floats), label: label)
        return (owner, try context.view(of: owner, offset: TilePlanner.guardBytes, bytes: TilePlanner.bufferBytes(floats: floats)))
    }

    /// Uploads the box `z` x `y` of a host value into `buffer` (packed, channel-major) and applies
    /// its pending normalizations there, in place. `resident` keeps the normalizations' device
    /// parameters for the rest of the node.
    private func uploadValue(_ value: HostValue, shape: [Int], z: Range<Int>, y: Range<Int>, to buffer: DeviceBuffer,
                             staging: inout [Float], resident: inout [Int: (op: LoweredOp.Norm, stats: DeviceBuffer)]) throws {
        let boxFloats = z.count * y.count * shape[4]
        var channel = 0
        for part in value.parts {
            let partShape = [1, part.channels] + shape[2...]
            try uploadBox(part.data, shape: partShape, z: z, y: y, to: buffer, offsetBytes: channel * boxFloats * 4, staging: &staging)
            if let pending = part.pending {
                if resident[pending.node] == nil {
                    guard case .norm(let n) = try lowerNode(pending.node) else { preconditionFailure("pending node is a normalization") }
                    resident[pending.node] = (n, try context.upload(pending.stats, label: "statistics of \(order[pending.node].name)"))
                }
                let (n, stats) = resident[pending.node]!
                try launchNormApply(n, program: try normProgram(), x: buffer, y: buffer, stats: stats, spatial: boxFloats,
                                    channels: part.channels, offset: channel * boxFloats)
            }
            channel += part.channels
        }
    }

    private func normProgram() throws -> CompiledProgram {
        try context.program("norm.cl", defines: ["CHUNKED": "1", "GROUP": "\(tuning.elementwiseGroup)", "PER_ITEM": "\(tuning.elementwisePerItem)"])
    }

    /// Adds the chunk moments of a packed tile in `buffer` (channels x `spatial`) to `moments`.
    private func gatherMoments(_ buffer: DeviceBuffer, channels: Int, spatial: Int, groups: Int, partials: DeviceBuffer,
                               into moments: inout ChunkMoments) throws {
        let len = channels / groups * spatial
        let partitions = tuning.normPartitions
        try context.launch(try normProgram(), "norm_chunk_moments", global: [partitions, groups], local: [1, 1],
                           [.buffer(buffer), .buffer(partials), .long(Int64(len)), .int(Int32(partitions))])
        moments.merge(try context.download(partials, count: 2 * groups * partitions), length: len, partitions: partitions)
    }

    /// Runs a node other than a normalization over its tiles.
    private func runTiles(_ op: LoweredOp, index: Int, node: Node, step: TilePlanner.Step, shapes: [String: [Int]],
                          tiling: TilePlanner.Tiling, momentsFor norm: Int?, stream: inout Stream) throws -> HostValue {
        let outName = node.outputs[0]
        let outShape = shapes[outName]!
        let activations = node.inputs.filter { !$0.isEmpty && constantShapes[$0] == nil }
        var buffers: [String: (owner: DeviceBuffer, view: DeviceBuffer)] = [:]
        for (j, name) in activations.enumerated() where buffers[name] == nil {
            let e = tiling.inputExtents[j]
            let s = shapes[name]!
            buffers[name] = try guardedBuffer(floats: s[1] * e[0] * e[1] * s[4], label: "tile of \(name)")
        }
        let outBuffer = try context.allocate(bytes: TilePlanner.bufferBytes(floats: outShape[1] * tiling.depth * tiling.height * outShape[4]),
                                             label: "tile of \(outName)")
        var partials: DeviceBuffer? = nil
        if let norm = norm {
            partials = try context.allocate(bytes: TilePlanner.bufferBytes(floats: 2 * normGroups[norm]! * tuning.normPartitions), label: "moments of \(order[norm].name)")
            stream.moments[norm] = ChunkMoments(groups: normGroups[norm]!)
        }
        var resident: [Int: (op: LoweredOp.Norm, stats: DeviceBuffer)] = [:]
        var result = stream.take(count: outShape.reduce(1, *))
        var staging: [Float] = []
        // Shapes the kernels see: the constants', and per tile the boxes of inputs and output.
        var tileShapes = constantShapes
        for zr in TilePlanner.ranges(extent: outShape[2], tile: tiling.depth) {
            for yr in TilePlanner.ranges(extent: outShape[3], tile: tiling.height) {
                tileShapes[outName] = [1, outShape[1], zr.count, yr.count, outShape[4]]
                var pads: [Int] = []
                for (j, name) in activations.enumerated() {
                    let operand = step.inputs[j]
                    let iz = operand.z.inputRange(outputs: zr.lowerBound, zr.upperBound, inputSize: operand.spatial[0])
                    let iy = operand.y.inputRange(outputs: yr.lowerBound, yr.upperBound, inputSize: operand.spatial[1])
                    if j == 0 {
                        pads = [operand.z.localPadBegin(outputStart: zr.lowerBound, inputStart: iz.lowerBound),
                                operand.y.localPadBegin(outputStart: yr.lowerBound, inputStart: iy.lowerBound)]
                    }
                    let s = shapes[name]!
                    tileShapes[name] = [1, s[1], iz.count, iy.count, s[4]]
                    if j > 0, activations[..<j].contains(name) { continue }
                    try uploadValue(stream.host[name]!, shape: s, z: iz, y: iy, to: buffers[name]!.view, staging: &staging, resident: &resident)
                }
                try execute(Self.withLocalPadding(op, pads), node: node, shapes: tileShapes, concatenatedInPlace: [],
                            buffer: { name in name == outName ? outBuffer : buffers[name]!.view },
                            scratch: { _, _ in throw CascadeSegError.invalidGraph("node '\(node.name)' has no scratch in a streamed run") })
                if let norm, let partials {
                    try gatherMoments(outBuffer, channels: outShape[1], spatial: zr.count * yr.count * outShape[4], groups: normGroups[norm]!,
                                      partials: partials, into: &stream.moments[norm]!)
                }
                try downloadBox(outBuffer, into: &result, shape: outShape, z: zr, y: yr, staging: &staging)
            }
        }
        return HostValue(parts: [.init(data: result, channels: outShape[1])])
    }

    /// Instance or group normalization materialized over tiles (when it cannot be deferred):
    /// the moments of every tile's chunks (unless its producer gathered them), then the scale
    /// and shift tile by tile.
    private func runNormalization(_ n: LoweredOp.Norm, index: Int, node: Node, shapes: [String: [Int]], tiling: TilePlanner.Tiling,
                                  stream: inout Stream) throws -> HostValue {
        let name = node.inputs[0]
        let shape = shapes[name]!
        let x = stream.host[name]!
        let (channels, width) = (shape[1], shape[4])
        let input = try guardedBuffer(floats: channels * tiling.depth * tiling.height * width, label: "tile of \(name)")
        let output = try context.allocate(bytes: TilePlanner.bufferBytes(floats: channels * tiling.depth * tiling.height * width), label: "tile of \(node.outputs[0])")
        let partials = try context.allocate(bytes: TilePlanner.bufferBytes(floats: 2 * n.groups * tuning.normPartitions), label: "moments of \(node.name)")
        let zs = TilePlanner.ranges(extent: shape[2], tile: tiling.depth), ys = TilePlanner.ranges(extent: shape[3], tile: tiling.height)
        var staging: [Float] = []
        var resident: [Int: (op: LoweredOp.Norm, stats: DeviceBuffer)] = [:]

        var moments = stream.moments[index] ?? ChunkMoments(groups: n.groups)
        if stream.moments[index] == nil {
            for zr in zs {
                for yr in ys {
                    try uploadValue(x, shape: shape, z: zr, y: yr, to: input.view, staging: &staging, resident: &resident)
                    try gatherMoments(input.view, channels: channels, spatial: zr.count * yr.count * width, groups: n.groups,
                                      partials: partials, into: &moments)
                }
            }
        }
        let statistics = try context.upload(moments.statistics(epsilon: Double(n.epsilon)), label: "statistics of \(node.name)")

        var result = stream.take(count: shape.reduce(1, *))
        for zr in zs {
            for yr in ys {
                try uploadValue(x, shape: shape, z: zr, y: yr, to: input.view, staging: &staging, resident: &resident)
                try launchNormApply(n, program: try normProgram(), x: input.view, y: output, stats: statistics,
                                    spatial: zr.count * yr.count * width, channels: channels)
                try downloadBox(output, into: &result, shape: shape, z: zr, y: yr, staging: &staging)
            }
        }
        return HostValue(parts: [.init(data: result, channels: channels)])
    }

    /// The op with the padding a tile's kernel must assume along z and y.
    static func withLocalPadding(_ op: LoweredOp, _ pads: [Int]) -> LoweredOp {
        guard pads.count == 2 else { return op }
        switch op {
        case .conv(var c):
            c.params.padsBegin[0] = pads[0]
            c.params.padsBegin[1] = pads[1]
            return .conv(c)
        case .pool(var p):
            p.padsBegin[0] = pads[0]
            p.padsBegin[1] = pads[1]
            return .pool(p)
        default:
            return op
        }
    }

    /// Uploads the box `z` x `y` (whole x rows) of every channel of a 1 x C x D x H x W host
    /// tensor into `buffer`, packed. Whole y-ranges are one contiguous block per channel and go
    /// straight from the host tensor; partial ones are packed in `staging` first.
    func uploadBox(_ source: [Float], shape: [Int], z: Range<Int>, y: Range<Int>, to buffer: DeviceBuffer, offsetBytes: Int = 0,
                   staging: inout [Float]) throws {
        let (c, d, h, w) = (shape[1], shape[2], shape[3], shape[4])
        guard y.count == h else {
            Self.gather(source, shape: shape, z: z, y: y, into: &staging)
            return try staging.withUnsafeBytes { try context.upload(from: $0.baseAddress!, bytes: $0.count, to: buffer, offsetBytes: offsetBytes) }
        }
        let block = z.count * h * w
        try source.withUnsafeBytes { raw in
            for ch in 0..<c {
                try context.upload(from: raw.baseAddress! + (ch * d + z.lowerBound) * h * w * 4, bytes: block * 4, to: buffer,
                                   offsetBytes: offsetBytes + ch * block * 4)
            }
        }
    }

    /// Downloads a packed tile from `buffer` into its box of a 1 x C x D x H x W host tensor.
    func downloadBox(_ buffer: DeviceBuffer, into destination: inout [Float], shape: [Int], z: Range<Int>, y: Range<Int>, staging: inout [Float]) throws {
        let (c, d, h, w) = (shape[1], shape[2], shape[3], shape[4])
        guard y.count == h else {
            let tile = try context.download(buffer, count: c * z.count * y.count * w)
            return Self.scatter(tile, into: &destination, shape: shape, z: z, y: y)
        }
        let block = z.count * h * w
        try destination.withUnsafeMutableBytes { raw in
            for ch in 0..<c {
                try context.download(buffer, offsetBytes: ch * block * 4, bytes: block * 4, into: raw.baseAddress! + (ch * d + z.lowerBound) * h * w * 4)
            }
        }
    }

    /// Copies the box `z` x `y` (whole x rows) of every channel of a 1 x C x D x H x W tensor into `staging`.
    static func gather(_ source: [Float], shape: [Int], z: Range<Int>, y: Range<Int>, into staging: inout [Float]) {
        let (c, d, h, w) = (shape[1], shape[2], shape[3], shape[4])
        let rows = y.count * w
        staging.removeAll(keepingCapacity: true)
        staging.reserveCapacity(c * z.count * rows)
        source.withUnsafeBufferPointer { src in
            for ch in 0..<c {
                for zz in z {
                    let from = ((ch * d + zz) * h + y.lowerBound) * w
                    staging.append(contentsOf: src[from..<(from + rows)])
                }
            }
        }
    }

    /// The inverse of `gather`: writes a tile back into its box of the whole tensor.
    static func scatter(_ tile: [Float], into destination: inout [Float], shape: [Int], z: Range<Int>, y: Range<Int>) {
        let (c, d, h, w) = (shape[1], shape[2], shape[3], shape[4])
        let rows = y.count * w
        destination.withUnsafeMutableBufferPointer { dst in
            tile.withUnsafeBufferPointer { src in
                var at = 0
                for ch in 0..<c {
                    for zz in z {
                        let to = ((ch * d + zz) * h + y.lowerBound) * w
                        (dst.baseAddress! + to).update(from: src.baseAddress! + at, count: rows)
                        at += rows
                    }
                }
            }
        }
    }
}

/// An activation of a streamed run in host memory: channel ranges (a Concat's inputs are kept
/// apart, not copied), each raw data with perhaps a normalization its readers still apply.
struct HostValue {
    struct Part {
        var data: [Float]
        var channels: Int
        var pending: PendingNormalization? = nil
    }
    var parts: [Part]
}

/// A deferred normalization: its node and statistics (mean, 1 / sqrt(var + eps) per group).
struct PendingNormalization {
    var node: Int
    var stats: [Float]
}

/// What a streamed run carries between nodes: host values, gathered normalization moments, and
/// the host arrays of dropped values for reuse. Reuse matters: writing a freshly allocated
/// array faults in every page (here about 0.8 GB/s, against 15 GB/s for a copy into touched
/// memory), which would cost more than the transfers themselves.
struct Stream {
    var host: [String: HostValue]
    var moments: [Int: ChunkMoments] = [:]
    private var pool: [[Float]] = []

    init(host: [String: HostValue]) { self.host = host }

    /// An array of `count` floats with unspecified contents (the caller overwrites all of them).
    mutating func take(count: Int) -> [Float] {
        if let i = pool.indices.filter({ pool[$0].count >= count }).min(by: { pool[$0].count < pool[$1].count }) {
            var array = pool.remove(at: i)
            array.removeLast(array.count - count)
            return array
        }
        return [Float](repeating: 0, count: count)
    }

    /// Drops a value, keeping its arrays for `take` (a few of them: enough for a U-Net's widest level).
    mutating func drop(_ name: String) {
        guard let value = host.removeValue(forKey: name) else { return }
        pool.append(contentsOf: value.parts.map(\.data))
        if pool.count > 6 { pool.sort { $0.count > $1.count }; pool.removeLast(pool.count - 6) }
    }
}

/// Count, mean and sum of squared deviations per group, merged chunk by chunk in Double with
/// Chan, Golub and LeVeque's update, as `norm_combine_moments` merges them within one tensor.
struct ChunkMoments {
    var count: [Double], mean: [Double], m2: [Double]

    init(groups: Int) {
        count = Array(repeating: 0, count: groups); mean = count; m2 = count
    }

    /// Adds the moments `norm_chunk_moments` wrote for groups of `length` values in `partitions` chunks.
    mutating func merge(_ moments: [Float], length: Int, partitions: Int) {
        let chunk = (length + partitions - 1) / partitions
        for g in count.indices {
            for p in 0..<partitions {
                let begin = min(p * chunk, length)
                let nb = Double(min(begin + chunk, length) - begin)
                guard nb > 0 else { continue }
                let (mb, m2b) = (Double(moments[2 * (g * partitions + p)]), Double(moments[2 * (g * partitions + p) + 1]))
                let total = count[g] + nb
                let delta = mb - mean[g]
                mean[g] += delta * nb / total
                m2[g] += m2b + delta * delta * count[g] * nb / total
                count[g] = total
            }
        }
    }

    /// Mean and inverse deviation per group, the layout `norm_apply` reads.
    func statistics(epsilon: Double) -> [Float] {
        count.indices.flatMap { g in [Float(mean[g]), Float(1 / (m2[g] / max(count[g], 1) + epsilon).squareRoot())] }
    }
}
