/// One graph loaded on one device, ready to run on inputs of any size its graph allows.
///
/// Loading optimizes the graph (BatchNorm folding, activation fusion), picks a kernel for each
/// node and uploads the weights in the layout that kernel reads. Running plans the activations
/// into one arena (liveness-based, in place where safe), launches the kernels in order and
/// reports the exact peak of device memory. Under a memory budget the whole-tensor plan may not
/// fit: the run then streams (`TiledRun.swift`), and the device weights are released so that
/// each node uploads only its own.
public final class Network {
    public let graph: Graph
    public let context: ComputeContext
    public let tuning: DeviceTuning
    /// Bytes of device memory the weights hold while they are resident (all of them uploaded).
    public private(set) var weightBytes = 0
    public private(set) var parameterCount = 0

    let order: [Node]
    let constantShapes: [String: [Int]]
    /// The optimized graph's weights, kept on the host so that they can be uploaded again after
    /// a streamed run released them, or node by node.
    let hostWeights: [String: Tensor]
    /// Per node: may its output share its first input's storage; groups of a normalization.
    /// (What planning needs to know, without holding device buffers.)
    let runsInPlace: [Bool]
    let normGroups: [Int?]
    /// Device bytes of each node's weights (what a streamed run uploads for it).
    let nodeWeightBytes: [Int]
    /// Device form of every node while the weights are resident; empty after `releaseDeviceWeights`.
    var lowered: [LoweredOp] = []
    /// Serializes runs: a run may upload or release the device weights (`lowered`). Networks
    /// are otherwise independent, so two networks on one device run concurrently.
    let runLock = Lock()

    /// `residentWeights: false` (for runs under a memory budget) validates every node against
    /// its weights but keeps none on the device: runs upload what they need.
    public init(graph original: Graph, weights originalWeights: [String: Tensor], context: ComputeContext,
                tuning: DeviceTuning? = nil, residentWeights: Bool = true) throws {
        let (graph, weights) = try GraphOptimizer.optimize(original, weights: originalWeights)
        self.graph = graph
        self.context = context
        self.tuning = tuning ?? DeviceTuning.preferred(for: context.device)
        let constants = Set(weights.keys)
        order = try graph.validatedOrder(constants: constants)
        constantShapes = weights.mapValues(\.shape)
        hostWeights = weights
        parameterCount = weights.values.reduce(0) { $0 + $1.count }
        // Lowering every node checks its attributes against the weights, so errors surface at load time.
        var lowered: [LoweredOp] = []
        var inPlace: [Bool] = [], groups: [Int?] = [], bytes: [Int] = []
        for node in order {
            let op = try Self.lower(node, weights: weights, context: context, tuning: self.tuning)
            inPlace.append(op.canRunInPlace)
            groups.append({ if case .norm(let n) = op { return n.groups } else { return nil } }())
            bytes.append(op.deviceBytes)
            if residentWeights { lowered.append(op) }
        }
        (runsInPlace, normGroups, nodeWeightBytes) = (inPlace, groups, bytes)
        self.lowered = lowered
        weightBytes = bytes.reduce(0, +)
    }

    /// Convenience: stage `stage` (1-based) of a model file.
    public convenience init(model: ModelFile, stage: Int = 1, context: ComputeContext, tuning: DeviceTuning? = nil,
                            residentWeights: Bool = true) throws {
        try self.init(graph: try model.stageGraph(stage), weights: model.weights, context: context, tuning: tuning,
                      residentWeights: residentWeights)
    }

    /// Whether all weights are on the device now.
    public var weightsResident: Bool { !lowered.isEmpty || order.isEmpty }

    /// Frees the device copies of the weights; the next whole-tensor run uploads them again.
    public func releaseDeviceWeights() { runLock.locked { dropDeviceWeights() } }

    /// `releaseDeviceWeights` for code already inside a run.
    func dropDeviceWeights() { lowered = [] }

    /// Uploads all weights if a streamed run released them.
    func ensureDeviceWeights() throws {
        guard lowered.isEmpty else { return }
        lowered = try order.map { try Self.lower($0, weights: hostWeights, context: context, tuning: tuning) }
    }

    /// The device form of one node, its weights uploaded (for streamed runs, node by node).
    func lowerNode(_ index: Int) throws -> LoweredOp {
        if !lowered.isEmpty { return lowered[index] }
        return try Self.lower(order[index], weights: hostWeights, context: context, tuning: tuning)
    }

    private static func constant(_ name: String?, in weights: [String: Tensor], node: Node) throws -> Tensor {
        guard let name, let t = weights[name] else {
            throw CascadeSegError.invalidGraph("node '\(node.name)' (\(node.op.rawValue)) needs a weight tensor as input, got '\(name ?? "")'")
        }
        return t
    }

    func convProgram(blockSize: Int, kernelWidth: Int, strideX: Int, vectors: Int? = nil) throws -> CompiledProgram {
        try Self.convProgram(blockSize: blockSize, kernelWidth: kernelWidth, strideX: strideX, vectors: vectors, context: context, tuning: tuning)
    }

    static func convProgram(blockSize: Int, kernelWidth: Int, strideX: Int, vectors: Int? = nil,
                            context: ComputeContext, tuning: DeviceTuning) throws -> CompiledProgram {
        try context.program("conv3d.cl", defines: ["KB": "\(blockSize)", "XV": "\(tuning.convXV)", "XN": "\(vectors ?? tuning.convXN)",
                                                   "KX": "\(kernelWidth)", "SX": "\(strideX)",
                                                   "TX": "\(tuning.convTileBlocks)", "CC": "\(tuning.convChannelChunk)"])
    }

    private static func lower(_ node: Node, weights: [String: Tensor], context: ComputeContext, tuning: DeviceTuning) throws -> LoweredOp {
        func upload(_ values: [Float], _ label: String) throws -> DeviceBuffer { try context.upload(values, label: label) }
        func convProgram(blockSize: Int, kernelWidth: Int, strideX: Int, vectors: Int? = nil) throws -> CompiledProgram {
            try Self.convProgram(blockSize: blockSize, kernelWidth: kernelWidth, strideX: strideX, vectors: vectors, context: context, tuning: tuning)
        }
        switch node.op {
        case .conv, .convTranspose:
            let w = try constant(node.input(1), in: weights, node: node)
            let b = try node.input(2).map { try constant($0, in: weights, node: node) }
            guard w.shape.count == 5, w.shape.allSatisfy({ $0 >= 1 }) else {
                throw CascadeSegError.invalidGraph("node '\(node.name)' (\(node.op.rawValue)): weight must be 5-D with positive sizes, is \(w.shape)")
            }
            let inChannels = node.op == .conv ? w.shape[1] * (try node.int("group", default: 1)) : w.shape[0]
            let params = try ConvParameters(node: node, inputChannels: inChannels, weightShape: w.shape, biasShape: b?.shape)
            let kind: LoweredOp.ConvKernel
            var kb = tuning.convKB
            if params.transposed {
                guard params.group == 1 else { throw CascadeSegError.invalidGraph("node '\(node.name)': grouped ConvTranspose is not supported") }
                kind = params.kernel == [2, 2, 2] && params.strides == [2, 2, 2] && params.dilations == [1, 1, 1]
                    && params.padsBegin == [0, 0, 0] && params.padsEnd == [0, 0, 0] && params.outputPadding == [0, 0, 0]
                    ? .transposeK2S2 : .transposeGeneral
                // The k2s2 kernel keeps two accumulator sets (one per x tap) of one vector each:
                // KB * XN / 2 channels per work-item stays within the blocked conv's register budget.
                if kind == .transposeK2S2 { kb = max(1, tuning.convKB * tuning.convXN / 2) }
            } else if params.group == 1 && params.dilations == [1, 1, 1] && params.kernel[2] <= 7 && params.strides[2] <= 2 {
                kind = .blocked
            } else {
                kind = .general
                if params.group > 1 { kb = 1 }
            }
            let layout = params.transposed ? WeightLayout.blockedConvTranspose(w, blockSize: kb) : WeightLayout.blockedConv(w, blockSize: kb)
            let program = kind == .blocked
                ? try convProgram(blockSize: kb, kernelWidth: params.kernel[2], strideX: params.strides[2])
                : try convProgram(blockSize: kb, kernelWidth: 3, strideX: 1, vectors: kind == .transposeK2S2 ? 1 : nil)
            return .conv(.init(params: params, kernel: kind, blockSize: kb, program: program,
                               weights: try upload(layout, "weights of \(node.name)"),
                               bias: try upload(WeightLayout.paddedBias(b, channels: params.outChannels, blockSize: kb), "bias of \(node.name)")))
        case .maxPool, .averagePool:
            return .pool(try PoolParameters(node: node))
        case .instanceNormalization, .groupNormalization:
            let scale = try constant(node.input(1), in: weights, node: node)
            let bias = try constant(node.input(2), in: weights, node: node)
            guard scale.count == bias.count else { throw CascadeSegError.invalidGraph("node '\(node.name)': scale and bias differ in size") }
            let groups = node.op == .instanceNormalization ? scale.count : try node.int("num_groups")
            guard groups >= 1, scale.count % groups == 0 else {
                throw CascadeSegError.invalidGraph("node '\(node.name)': num_groups \(groups) must divide \(scale.count) channels")
            }
            return .norm(.init(groups: groups, epsilon: Float(try node.float("epsilon", default: 1e-5)),
                               activation: try FusedActivation(node: node),
                               scale: try upload(scale.data, "scale of \(node.name)"), bias: try upload(bias.data, "bias of \(node.name)")))
        case .batchNormalization:
            let gamma = try constant(node.input(1), in: weights, node: node), beta = try constant(node.input(2), in: weights, node: node)
            let mean = try constant(node.input(3), in: weights, node: node), variance = try constant(node.input(4), in: weights, node: node)
            guard gamma.count == beta.count, mean.count == gamma.count, variance.count == gamma.count else {
                throw CascadeSegError.invalidGraph("node '\(node.name)': BatchNormalization parameters differ in size")
            }
            let epsilon = try node.float("epsilon", default: 1e-5)
            var scale = [Float](), shift = [Float]()
            for c in 0..<gamma.count {
                let s = Double(gamma.data[c]) / (Double(variance.data[c]) + epsilon).squareRoot()
                scale.append(Float(s))
                shift.append(Float(Double(beta.data[c]) - Double(mean.data[c]) * s))
            }
            return .channelAffine(scale: try upload(scale, "scale of \(node.name)"), shift: try upload(shift, "shift of \(node.name)"))
        case .relu: return .unary(.relu)
        case .leakyRelu: return .unary(.leakyRelu(alpha: Float(try node.float("alpha", default: 0.01))))
        case .sigmoid: return .unary(.sigmoid)
        case .tanh: return .unary(.tanh)
        case .identity: return .identity
        case .prelu:
            let slope = try constant(node.input(1), in: weights, node: node)
            return .prelu(slope: try upload(slope.data, "slope of \(node.name)"), perChannel: slope.count > 1)
        case .add, .mul:
            guard node.inputs.count == 2, let a = node.input(0), let b = node.input(1) else {
                throw CascadeSegError.invalidGraph("node '\(node.name)' (\(node.op.rawValue)) needs two inputs")
            }
            let activation = try FusedActivation(node: node)
            if weights[a] != nil && weights[b] != nil {
                throw CascadeSegError.invalidGraph("node '\(node.name)': both operands are constants (fold them before conversion)")
            }
            if let c = weights[b] { return .binary(isMul: node.op == .mul, constant: try upload(c.data, "operand of \(node.name)"), swapped: false, activation: activation) }
            if let c = weights[a] { return .binary(isMul: node.op == .mul, constant: try upload(c.data, "operand of \(node.name)"), swapped: true, activation: activation) }
            return .binary(isMul: node.op == .mul, constant: nil, swapped: false, activation: activation)
        case .concat:
            return .concat
        case .resize:
            return .resize(try ResizeParameters(node: node))
        case .softmax:
            return .softmax
        case .argMax:
            return .argMax
        case .pad:
            return .pad(try PadParameters(node: node))
        case .slice:
            return .slice(try SliceParameters(node: node))
        }
    }
}
