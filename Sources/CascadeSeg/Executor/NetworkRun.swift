import Foundation

/// The result of one forward pass.
public struct RunResult: Sendable {
    /// Graph outputs by name, in host memory.
    public var outputs: [String: Tensor]
    /// Highest number of device bytes held during the run (weights included), measured by the
    /// engine's count of live buffers.
    public var peakDeviceBytes: Int
    /// What the plan predicted for this network alone (weights + arena).
    public var plannedPeakBytes: Int
    public var seconds: Double
    /// Per-node wall time, when profiling was requested (each node then waits for the device).
    public var profile: [(node: String, op: OpType, seconds: Double)]
    /// Most spatial tiles any node ran in (1 when the whole tensors fit on the device).
    public var tiles: Int = 1
}

extension Network {
    /// Runs the graph on one input (1 x C x D x H x W, or C x D x H x W).
    ///
    /// With a `memoryBudget` (bytes) the device never holds more than that at once, counting
    /// everything the context holds (other networks' weights included): the whole-tensor plan
    /// when it fits, else a streamed run in tiles (`TiledRun.swift`), which gives the same
    /// labels (logits within float rounding of the normalizations' statistics). A budget too
    /// small for any tiling is refused before any work, naming the minimum. A network run under
    /// a budget releases its device weights afterwards, so that it holds nothing between runs.
    public func run(_ input: Tensor, memoryBudget: Int? = nil, profile: Bool = false) throws -> RunResult {
        // One run at a time per network: a run swaps the device weights in and out.
        try runLock.locked { try runLocked(input, memoryBudget: memoryBudget, profile: profile) }
    }

    private func runLocked(_ input: Tensor, memoryBudget: Int?, profile: Bool) throws -> RunResult {
        let shape = input.shape.count == 4 ? [1] + input.shape : input.shape
        if let bad = input.data.firstIndex(where: { !$0.isFinite }) {
            throw CascadeSegError.invalidInput("input value \(bad) is \(input.data[bad]) (NaN or infinite values are not accepted)")
        }
        guard let memoryBudget else { return try runWhole(input, plan: try plan(inputShape: shape), profile: profile) }
        guard memoryBudget > 0 else { throw CascadeSegError.usage("the memory budget must be positive, got \(memoryBudget)") }
        defer { dropDeviceWeights() }
        let others = context.memory.liveBytes - (weightsResident ? weightBytes : 0)
        let whole = try plan(inputShape: shape)
        if whole.peakBytes <= memoryBudget - others {
            return try runWhole(input, plan: whole, profile: profile)
        }
        return try runTiled(input, shape: shape, budget: memoryBudget, profile: profile)
    }

    /// Runs with every tensor whole on the device, in one arena.
    func runWhole(_ input: Tensor, plan: ExecutionPlan, profile: Bool) throws -> RunResult {
        try ensureDeviceWeights()
        let shape = plan.inputShape
        let start = DispatchTime.now()
        let window = context.memory.openWindow()
        defer { context.memory.close(window) }
        var timings: [(String, OpType, Double)] = []
        var outputs: [String: Tensor] = [:]
        do {
            let arena = try context.allocate(bytes: plan.arenaAllocationBytes, label: "activations of '\(graph.name)' for input \(shape)")
            // One view per place in the arena, so that values sharing storage share the view.
            var views: [[Int]: DeviceBuffer] = [:]
            func buffer(_ value: String) throws -> DeviceBuffer {
                let storage = plan.storageOf[value]!
                let inside = plan.offsetInStorage[value] ?? 0
                let bytes = inside == 0 ? plan.storageBytes[storage]! : plan.shapes[value]!.reduce(4, *)
                if let v = views[[storage, inside, bytes]] { return v }
                let v = try context.view(of: arena, offset: ExecutionPlan.guardBytes + plan.arena.offsets[storage]! + inside, bytes: max(bytes, 4))
                views[[storage, inside, bytes]] = v
                return v
            }
            try context.upload(input.data, to: try buffer(graph.input.name))
            for (i, node) in order.enumerated() {
                let t0 = DispatchTime.now()
                // Scratch views are cut from the arena itself: OpenCL has no sub-buffers of sub-buffers.
                try execute(lowered[i], node: node, shapes: plan.shapes, concatenatedInPlace: plan.concatenatedInPlace, buffer: buffer, scratch: { offset, bytes in
                    try self.context.view(of: arena, offset: ExecutionPlan.guardBytes + plan.arena.offsets[plan.scratchOf[i]!]! + offset, bytes: bytes)
                })
                if profile {
                    try context.finish()
                    timings.append((node.name, node.op, t0.secondsElapsed))
                }
            }
            for o in graph.outputs {
                let s = plan.shapes[o.name]!
                outputs[o.name] = Tensor(shape: s, data: try context.download(try buffer(o.name), count: s.reduce(1, *)))
            }
            try context.finish()
        }
        let seconds = start.secondsElapsed
        return RunResult(outputs: outputs, peakDeviceBytes: window.peak, plannedPeakBytes: plan.peakBytes,
                         seconds: seconds, profile: timings)
    }

    /// The first output of a single-output run, for convenience.
    public func callAsFunction(_ input: Tensor) throws -> Tensor {
        let result = try run(input)
        return result.outputs[graph.outputs[0].name]!
    }

    // MARK: - Kernel launches

    /// `norm_apply`: y = (x - mean) * invstd * scale + bias, then the fused activation, for
    /// `channels` channels of `spatial` values each, starting `offset` floats into x and y.
    func launchNormApply(_ n: LoweredOp.Norm, program: CompiledProgram, x: DeviceBuffer, y: DeviceBuffer, stats: DeviceBuffer,
                         spatial: Int, channels: Int, offset: Int = 0) throws {
        let (act, alpha) = n.activation.kernelCode
        let perLaunch = tuning.elementwisePerItem * tuning.elementwiseGroup
        try context.launch(program, "norm_apply", global: [(spatial + perLaunch - 1) / perLaunch * tuning.elementwiseGroup, channels],
                           local: [tuning.elementwiseGroup, 1],
                           [.buffer(x), .buffer(y), .buffer(stats), .buffer(n.scale), .buffer(n.bias), .long(Int64(spatial)),
                            .int(Int32(channels / n.groups)), .int(Int32(act)), .float(alpha), .long(Int64(offset))])
    }

    /// Launches the kernels of one node. `shapes` gives the extents of the buffers `buffer`
    /// returns (whole tensors, or the tiles of a streamed run).
    func execute(_ op: LoweredOp, node: Node, shapes: [String: [Int]], concatenatedInPlace: Set<String>,
                 buffer: (String) throws -> DeviceBuffer, scratch: (_ offset: Int, _ bytes: Int) throws -> DeviceBuffer) throws {
        let outShape = shapes[node.outputs[0]]!
        let out = try buffer(node.outputs[0])
        func int(_ v: Int) -> KernelArgument { .int(Int32(v)) }
        func long(_ v: Int) -> [KernelArgument] { [.long(Int64(v))] }
        let voxelGlobal = { (s: [Int]) in [s[4], s[3], s[2] * s[1]] }
        let local = tuning.voxelLocal
        func elementwiseProgram() throws -> CompiledProgram {
            try context.program("elementwise.cl", defines: ["GROUP": "\(tuning.elementwiseGroup)", "PER_ITEM": "\(tuning.elementwisePerItem)"])
        }
        func elementwiseGlobal(_ n: Int) -> [Int] {
            [(n + tuning.elementwisePerItem * tuning.elementwiseGroup - 1) / (tuning.elementwisePerItem * tuning.elementwiseGroup) * tuning.elementwiseGroup]
        }
        let count = outShape.reduce(1, *)
        let spatial = outShape[2] * outShape[3] * outShape[4]

        switch op {
        case .conv(let c):
            var xShape = shapes[node.inputs[0]]!
            var outShape = outShape
            let x = try buffer(node.inputs[0])
            let p = c.params
            if c.kernel == .blocked, p.kernel == [1, 1, 1], p.strides == [1, 1, 1], p.padsBegin == [0, 0, 0], p.padsEnd == [0, 0, 0] {
                // A pointwise convolution sees the volume as one long row: no row ends to mask.
                xShape = [1, xShape[1], 1, 1, spatial]
                outShape = [1, outShape[1], 1, 1, spatial]
            }
            let (act, alpha) = p.activation.kernelCode
            let common: [KernelArgument] = [.buffer(x), .buffer(c.weights), .buffer(c.bias), .buffer(out),
                                            int(xShape[1]), int(xShape[2]), int(xShape[3]), int(xShape[4]),
                                            int(outShape[1]), int(outShape[2]), int(outShape[3]), int(outShape[4])]
            let blocks = (p.outChannels + c.blockSize - 1) / c.blockSize
            // Outputs along x per work-item block (the k2s2 program is built with one vector).
            let xw = tuning.convXV * (c.kernel == .transposeK2S2 ? 1 : tuning.convXN)
            switch c.kernel {
            case .blocked:
                let tiles = ((outShape[4] + xw - 1) / xw + tuning.convTileBlocks - 1) / tuning.convTileBlocks
                try context.launch(c.program, "conv3d_blocked", global: [tiles, outShape[3], outShape[2] * blocks],
                                   local: tuning.convLocal,
                                   common + [int(p.kernel[0]), int(p.kernel[1]), int(p.strides[0]), int(p.strides[1]),
                                             int(p.padsBegin[0]), int(p.padsBegin[1]), int(p.padsBegin[2]), int(act), .float(alpha)])
            case .general:
                try context.launch(c.program, "conv3d_general", global: [(outShape[4] + xw - 1) / xw, outShape[3], outShape[2] * blocks],
                                   local: tuning.convLocal,
                                   common + (p.kernel + p.strides + p.dilations + p.padsBegin).map(int) + [int(p.group), int(act), .float(alpha)])
            case .transposeGeneral:
                try context.launch(c.program, "conv_transpose3d_general", global: [(outShape[4] + xw - 1) / xw, outShape[3], outShape[2] * blocks],
                                   local: tuning.convLocal,
                                   common + (p.kernel + p.strides + p.dilations + p.padsBegin).map(int) + [int(act), .float(alpha)])
            case .transposeK2S2:
                try context.launch(c.program, "conv_transpose3d_k2s2", global: [(xShape[4] + xw - 1) / xw, outShape[3], outShape[2] * blocks],
                                   local: tuning.convLocal, common + [int(act), .float(alpha)])
            }

        case .pool(let p):
            let xShape = shapes[node.inputs[0]]!
            let program = try context.program("pool.cl")
            try context.launch(program, "pool3d", global: voxelGlobal(outShape), local: local,
                               [.buffer(try buffer(node.inputs[0])), .buffer(out)]
                               + (Array(xShape[2...]) + Array(outShape[2...]) + p.kernel + p.strides + p.dilations + p.padsBegin + p.padsEnd).map(int)
                               + [int(p.isMax ? 1 : 0), int(p.countIncludePad ? 1 : 0)])

        case .norm(let n):
            let x = try buffer(node.inputs[0])
            let program = try context.program("norm.cl", defines: ["CHUNKED": tuning.normChunked ? "1" : "0",
                                                                  "GROUP": "\(tuning.elementwiseGroup)", "PER_ITEM": "\(tuning.elementwisePerItem)"])
            // Scratch layout (normScratchLayout): partial sums, then the statistics at an aligned
            // offset. Each gets its own view so that no two kernel arguments alias.
            let partitions = tuning.normPartitions
            let layout = normScratchLayout(groups: n.groups)
            let partials = try scratch(0, layout.partialBytes)
            let statsView = try scratch(layout.statsOffset, 2 * n.groups * 4)
            let len = count / n.groups
            if tuning.normChunked {
                try context.launch(program, "norm_chunk_moments", global: [partitions, n.groups], local: [1, 1],
                                   [.buffer(x), .buffer(partials)] + long(len) + [int(partitions)])
                try context.launch(program, "norm_combine_moments", global: [n.groups], local: [1],
                                   [.buffer(partials), .buffer(statsView)] + long(len) + [int(partitions), int(n.groups), .float(n.epsilon)])
            } else {
                for pass in 0..<2 {
                    try context.launch(program, "norm_partial_sums", global: [partitions, n.groups], local: [1, 1],
                                       [.buffer(x), .buffer(statsView), .buffer(partials)] + long(len) + [int(partitions), int(pass)])
                    try context.launch(program, "norm_finalize", global: [n.groups], local: [1],
                                       [.buffer(partials), .buffer(statsView)] + long(len) + [int(partitions), int(n.groups), int(pass), .float(n.epsilon)])
                }
            }
            try launchNormApply(n, program: program, x: x, y: out, stats: statsView, spatial: spatial, channels: outShape[1])

        case .channelAffine(let scale, let shift):
            try context.launch(try elementwiseProgram(), "channel_affine", global: elementwiseGlobal(count), local: [tuning.elementwiseGroup],
                               [.buffer(try buffer(node.inputs[0])), .buffer(out), .buffer(scale), .buffer(shift)] + long(count) + long(spatial)
                               + [int(0), .float(0)])

        case .unary(let activation):
            let (act, alpha) = activation.kernelCode
            try context.launch(try elementwiseProgram(), "unary", global: elementwiseGlobal(count), local: [tuning.elementwiseGroup],
                               [.buffer(try buffer(node.inputs[0])), .buffer(out)] + long(count) + [int(act), .float(alpha)])

        case .identity:
            let x = try buffer(node.inputs[0])
            if x !== out { try context.copy(from: x, sourceOffsetFloats: 0, to: out, destinationOffsetFloats: 0, count: count) }

        case .prelu(let slope, _):
            // The slope broadcasts as a scalar, per channel, or (shape inference allows it) at the full shape.
            let mode: Int
            switch Broadcast.classify(shapes[node.inputs[1]]!, against: outShape)! { case .scalar: mode = 0; case .perChannel: mode = 1; case .same: mode = 2 }
            try context.launch(try elementwiseProgram(), "prelu", global: elementwiseGlobal(count), local: [tuning.elementwiseGroup],
                               [.buffer(try buffer(node.inputs[0])), .buffer(out), .buffer(slope)] + long(count) + long(spatial) + [int(mode)])

        case .binary(let isMul, let constant, let swapped, let activation):
            // The kernel reads `a` at full size and broadcasts `b`: a smaller first activation
            // (per channel or scalar) swaps the operands, as a constant first operand does.
            let swap = swapped || (constant == nil && shapes[node.inputs[0]]! != outShape)
            let aName = swap ? node.inputs[1] : node.inputs[0]
            let bName = swap ? node.inputs[0] : node.inputs[1]
            let a = try buffer(aName)
            let b = try constant ?? buffer(bName)
            let bShape = shapes[bName] ?? constantShapes[bName]!
            let mode: Int
            switch Broadcast.classify(bShape, against: outShape)! { case .same: mode = 0; case .perChannel: mode = 1; case .scalar: mode = 2 }
            let (act, alpha) = activation.kernelCode
            try context.launch(try elementwiseProgram(), "binary", global: elementwiseGlobal(count), local: [tuning.elementwiseGroup],
                               [.buffer(a), .buffer(b), .buffer(out)] + long(count) + long(spatial)
                               + [int(mode), int(isMul ? 1 : 0), int(act), .float(alpha)])

        case .concat:
            var offset = 0
            for input in node.inputs {
                let n = shapes[input]!.reduce(1, *)
                if !concatenatedInPlace.contains(input) {
                    // A kernel, not clEnqueueCopyBuffer: some drivers (PoCL) copy on one thread.
                    try context.launch(try elementwiseProgram(), "copy_to_offset", global: elementwiseGlobal(n), local: [tuning.elementwiseGroup],
                                       [.buffer(try buffer(input)), .buffer(out)] + long(n) + long(offset))
                }
                offset += n
            }

        case .resize(let r):
            let xShape = shapes[node.inputs[0]]!
            let scales = (0..<3).map { Float(r.scale(axis: $0, input: xShape[2 + $0], output: outShape[2 + $0])) }
            let transform: Int
            switch r.transform { case .halfPixel: transform = 0; case .alignCorners: transform = 1; case .asymmetric: transform = 2; case .pytorchHalfPixel: transform = 3 }
            let program = try context.program("resize.cl")
            var args: [KernelArgument] = [.buffer(try buffer(node.inputs[0])), .buffer(out)]
                + (Array(xShape[2...]) + Array(outShape[2...])).map(int) + scales.map { .float($0) } + [int(transform)]
            if r.mode == .nearest {
                let rounding: Int
                switch r.rounding { case .roundPreferFloor: rounding = 0; case .roundPreferCeil: rounding = 1; case .floor: rounding = 2; case .ceil: rounding = 3 }
                args.append(int(rounding))
                try context.launch(program, "resize_nearest", global: voxelGlobal(outShape), local: local, args)
            } else {
                try context.launch(program, "resize_linear", global: voxelGlobal(outShape), local: local, args)
            }

        case .softmax, .argMax:
            let xShape = shapes[node.inputs[0]]!
            let name = { if case .softmax = op { return "softmax_channels" } else { return "argmax_channels" } }()
            try context.launch(try context.program("channelwise.cl"), name, global: [spatial], local: [local[0]],
                               [.buffer(try buffer(node.inputs[0])), .buffer(out), int(xShape[1])] + long(spatial))

        case .pad(let p):
            let xShape = shapes[node.inputs[0]]!
            let mode = p.mode == .constant ? 0 : p.mode == .reflect ? 1 : 2
            try context.launch(try context.program("layout.cl"), "pad3d", global: voxelGlobal(outShape), local: local,
                               [.buffer(try buffer(node.inputs[0])), .buffer(out)]
                               + (Array(xShape[2...]) + Array(outShape[2...]) + p.padsBegin).map(int) + [int(mode), .float(p.value)])

        case .slice(let s):
            let xShape = shapes[node.inputs[0]]!
            let resolved = try s.resolve(xShape)
            try context.launch(try context.program("layout.cl"), "slice5d", global: voxelGlobal(outShape), local: local,
                               [.buffer(try buffer(node.inputs[0])), .buffer(out)]
                               + (Array(xShape[2...]) + Array(outShape[2...]) + Array(resolved.starts[1...]) + Array(resolved.steps[1...])).map(int))
        }
    }
}
