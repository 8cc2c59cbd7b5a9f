import Foundation

/// A streamed run: activations live in host memory, each node uploads its own weights and runs
/// in the tiles `TilePlanner` chose, so the device never holds more than the budget.
extension Network {
    /// The planner's description of every node for an input of `shapes` (see `TilePlanner.Step`).
    func tileSteps(shapes: [String: [Int]]) throws -> [TilePlanner.Step] {
        try order.enumerated().map { i, node in
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
        return TilePlanner.minimumBudget(try tileSteps(shapes: shapes)).bytes
    }

    /// Runs the graph streamed within `budget` device bytes (everything else the context holds included).
    func runTiled(_ input: Tensor, shape: [Int], budget: Int, profile: Bool) throws -> RunResult {
        let shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: shape, constants: constantShapes)
        let steps = try tileSteps(shapes: shapes)
        releaseDeviceWeights()
        let others = context.memory.liveBytes
        guard others < budget else {
            throw CascadeSegError.budget("the device already holds \(others) bytes, leaving nothing of the \(budget)-byte budget for '\(graph.name)'")
        }
        let tilings = try TilePlanner.plan(steps, budget: budget - others)
        let start = DispatchTime.now()
        context.memory.resetPeak()
        var timings: [(String, OpType, Double)] = []

        // Host copies of the activations, dropped after their last reader.
        var host: [String: [Float]] = [graph.input.name: input.data]
        var lastUse: [String: Int] = [:]
        for (i, node) in order.enumerated() { for x in node.inputs where !x.isEmpty { lastUse[x] = i } }
        for o in graph.outputs { lastUse[o.name] = order.count }

        for (i, node) in order.enumerated() {
            let t0 = DispatchTime.now()
            let out = node.outputs[0]
            switch steps[i].kind {
            case .host:
                if node.op == .identity {
                    host[out] = host[node.inputs[0]]!
                } else {
                    // Channel concatenation: NCDHW with N = 1 puts the inputs one after another.
                    var joined: [Float] = []
                    joined.reserveCapacity(shapes[out]!.reduce(1, *))
                    for x in node.inputs { joined.append(contentsOf: host[x]!) }
                    host[out] = joined
                }
            case .tiled, .whole:
                let op = try lowerNode(i)
                if case .norm(let n) = op {
                    host[out] = try runNormalization(n, node: node, shapes: shapes, tiling: tilings[i], host: host)
                } else {
                    host[out] = try runTiles(op, node: node, step: steps[i], shapes: shapes, tiling: tilings[i], host: host)
                }
            }
            for x in Set(node.inputs) where lastUse[x] == i { host[x] = nil }
            if profile {
                timings.append((node.name, node.op, Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9))
            }
        }
        var outputs: [String: Tensor] = [:]
        for o in graph.outputs { outputs[o.name] = Tensor(shape: shapes[o.name]!, data: host[o.name]!) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        return RunResult(outputs: outputs, peakDeviceBytes: context.memory.peakBytes,
                         plannedPeakBytes: others + (tilings.map(\.peakBytes).max() ?? 0),
                         seconds: seconds, profile: timings, tiles: tilings.map(\.tileCount).max() ?? 1)
    }

    /// One guarded input buffer (the view inside the guard bands is what kernels see).
    private func guardedBuffer(floats: Int, label: String) throws -> (owner: DeviceBuffer, view: DeviceBuffer) {
        let owner = try context.allocate(bytes: TilePlanner.guardedBufferBytes(floats: floats), label: label)
        return (owner, try context.view(of: owner, offset: TilePlanner.guardBytes, bytes: TilePlanner.bufferBytes(floats: floats)))
    }

    /// Runs a node other than a normalization over its tiles.
    private func runTiles(_ op: LoweredOp, node: Node, step: TilePlanner.Step, shapes: [String: [Int]],
                          tiling: TilePlanner.Tiling, host: [String: [Float]]) throws -> [Float] {
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
        var result = [Float](repeating: 0, count: outShape.reduce(1, *))
        var staging: [Float] = []
        for zr in TilePlanner.ranges(extent: outShape[2], tile: tiling.depth) {
            for yr in TilePlanner.ranges(extent: outShape[3], tile: tiling.height) {
                var tileShapes = constantShapes
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
                    try uploadBox(host[name]!, shape: s, z: iz, y: iy, to: buffers[name]!.view, staging: &staging)
                }
                try execute(Self.withLocalPadding(op, pads), node: node, shapes: tileShapes, concatenatedInPlace: [],
                            buffer: { name in name == outName ? outBuffer : buffers[name]!.view },
                            scratch: { _, _ in throw CascadeSegError.invalidGraph("node '\(node.name)' has no scratch in a streamed run") })
                try downloadBox(outBuffer, into: &result, shape: outShape, z: zr, y: yr, staging: &staging)
            }
        }
        return result
    }

    /// Instance or group normalization over tiles: the moments of every tile's chunks, merged on
    /// the host in Double, then the scale-and-shift tile by tile.
    private func runNormalization(_ n: LoweredOp.Norm, node: Node, shapes: [String: [Int]], tiling: TilePlanner.Tiling,
                                  host: [String: [Float]]) throws -> [Float] {
        let name = node.inputs[0]
        let shape = shapes[name]!
        let x = host[name]!
        let (channels, width) = (shape[1], shape[4])
        let perGroup = channels / n.groups
        let partitions = tuning.normPartitions
        let program = try context.program("norm.cl", defines: ["CHUNKED": "1", "GROUP": "\(tuning.elementwiseGroup)", "PER_ITEM": "\(tuning.elementwisePerItem)"])
        let input = try guardedBuffer(floats: channels * tiling.depth * tiling.height * width, label: "tile of \(name)")
        let output = try context.allocate(bytes: TilePlanner.bufferBytes(floats: channels * tiling.depth * tiling.height * width), label: "tile of \(node.outputs[0])")
        let partials = try context.allocate(bytes: TilePlanner.bufferBytes(floats: 2 * n.groups * partitions), label: "moments of \(node.name)")
        let statistics = try context.allocate(bytes: TilePlanner.bufferBytes(floats: 2 * n.groups), label: "statistics of \(node.name)")
        let zs = TilePlanner.ranges(extent: shape[2], tile: tiling.depth), ys = TilePlanner.ranges(extent: shape[3], tile: tiling.height)
        var staging: [Float] = []

        // Pass 1: per group, count, mean and sum of squared deviations, merged chunk by chunk
        // (Chan, Golub and LeVeque), exactly as norm_combine_moments does within one tensor.
        var count = [Double](repeating: 0, count: n.groups), mean = count, m2 = count
        for zr in zs {
            for yr in ys {
                try uploadBox(x, shape: shape, z: zr, y: yr, to: input.view, staging: &staging)
                let len = perGroup * zr.count * yr.count * width
                try context.launch(program, "norm_chunk_moments", global: [partitions, n.groups], local: [1, 1],
                                   [.buffer(input.view), .buffer(partials), .long(Int64(len)), .int(Int32(partitions))])
                let moments = try context.download(partials, count: 2 * n.groups * partitions)
                let chunk = (len + partitions - 1) / partitions
                for g in 0..<n.groups {
                    for p in 0..<partitions {
                        let begin = min(p * chunk, len)
                        let nb = Double(min(begin + chunk, len) - begin)
                        guard nb > 0 else { continue }
                        let (mb, m2b) = (Double(moments[2 * (g * partitions + p)]), Double(moments[2 * (g * partitions + p) + 1]))
                        let na = count[g], total = na + nb
                        let delta = mb - mean[g]
                        mean[g] += delta * nb / total
                        m2[g] += m2b + delta * delta * na * nb / total
                        count[g] = total
                    }
                }
            }
        }
        var stats: [Float] = []
        for g in 0..<n.groups {
            stats.append(Float(mean[g]))
            stats.append(Float(1 / (m2[g] / max(count[g], 1) + Double(n.epsilon)).squareRoot()))
        }
        try context.upload(stats, to: statistics)

        // Pass 2: normalize, scale, shift and activate each tile.
        let (act, alpha) = n.activation.kernelCode
        var result = [Float](repeating: 0, count: x.count)
        for zr in zs {
            for yr in ys {
                try uploadBox(x, shape: shape, z: zr, y: yr, to: input.view, staging: &staging)
                let spatial = zr.count * yr.count * width
                let perLaunch = tuning.elementwisePerItem * tuning.elementwiseGroup
                try context.launch(program, "norm_apply", global: [(spatial + perLaunch - 1) / perLaunch * tuning.elementwiseGroup, channels],
                                   local: [tuning.elementwiseGroup, 1],
                                   [.buffer(input.view), .buffer(output), .buffer(statistics), .buffer(n.scale), .buffer(n.bias),
                                    .long(Int64(spatial)), .int(Int32(perGroup)), .int(Int32(act)), .float(alpha)])
                try downloadBox(output, into: &result, shape: shape, z: zr, y: yr, staging: &staging)
            }
        }
        return result
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
    func uploadBox(_ source: [Float], shape: [Int], z: Range<Int>, y: Range<Int>, to buffer: DeviceBuffer, staging: inout [Float]) throws {
        let (c, d, h, w) = (shape[1], shape[2], shape[3], shape[4])
        guard y.count == h else {
            Self.gather(source, shape: shape, z: z, y: y, into: &staging)
            return try context.upload(staging, to: buffer)
        }
        let block = z.count * h * w
        try source.withUnsafeBytes { raw in
            for ch in 0..<c {
                try context.upload(from: raw.baseAddress! + (ch * d + z.lowerBound) * h * w * 4, bytes: block * 4, to: buffer, offsetBytes: ch * block * 4)
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
