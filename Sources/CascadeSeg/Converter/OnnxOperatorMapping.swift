/// ONNX operator -> engine operator, one case per ONNX operator. Inputs that ONNX passes as
/// tensors but the engine takes as attributes (Resize scales/sizes, Pad pads, Slice bounds)
/// must be known at conversion time. Every failure here becomes a problem of the node, reported
/// with all others when the node turns out to be needed.
extension OnnxImporter {
    func map(_ n: OnnxNodeProto) throws {
        do {
            try mapOperator(n)
        } catch CascadeSegError.invalidGraph(let message) {
            problem(n, message)
        }
    }

    func fail(_ message: String) -> CascadeSegError { .invalidGraph(message) }

    // MARK: Operands

    /// Runtime input `i` (an activation), materializing pattern states.
    func runtimeInput(_ n: OnnxNodeProto, _ i: Int) throws -> String {
        guard let name = n.input(i) else { throw fail("input \(i) is missing") }
        if isKnown(name) { throw fail("input \(i) ('\(name)') is a constant; the engine expects a tensor computed from the image here") }
        materialize(name)
        guard states[name] != nil else { throw fail("input \(i) ('\(name)') is not defined") }
        return name
    }

    /// Constant input `i`.
    func constantInput(_ n: OnnxNodeProto, _ i: Int, _ what: String) throws -> OnnxConstant {
        guard let name = n.input(i) else { throw fail("\(what) (input \(i)) is missing") }
        guard let c = try constant(name) else {
            throw fail("\(what) ('\(name)') is computed at run time; the engine needs it known at conversion time")
        }
        return c
    }

    func optionalConstant(_ n: OnnxNodeProto, _ i: Int, _ what: String) throws -> OnnxConstant? {
        guard n.input(i) != nil else { return nil }
        return try constantInput(n, i, what)
    }

    func knownInts(_ c: OnnxConstant, _ what: String) throws -> [Int64] {
        if let v = c.ints { return v }
        if let dims = c.symbolicDims {
            throw fail("\(what) [\(dims.map(\.description).joined(separator: ", "))] depend on runtime sizes")
        }
        throw fail("\(what) must be integers")
    }

    /// A weight input: constant `i` stored in the weight table.
    func weightInput(_ n: OnnxNodeProto, _ i: Int, _ role: String) throws -> (name: String, shape: [Int]) {
        let c = try constantInput(n, i, role)
        return (try weight(c, value: n.input(i), node: n.name, role: role), c.shape)
    }

    // MARK: Attributes

    func attrInts(_ n: OnnxNodeProto, _ name: String) -> [Int]? { n.attribute(name).map { $0.ints.map { Int(clamping: $0) } } }
    func attrInt(_ n: OnnxNodeProto, _ name: String, _ value: Int) -> Int { n.attribute(name)?.i.map { Int(clamping: $0) } ?? value }
    func attrString(_ n: OnnxNodeProto, _ name: String, _ value: String) -> String { n.attribute(name)?.stringValue ?? value }
    /// A float attribute, written as the shortest decimal that rounds to the same float32.
    func attrFloat(_ n: OnnxNodeProto, _ name: String, _ value: Double) -> Double { n.attribute(name)?.f.map(Self.decimal) ?? value }
    static func decimal(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

    func axis(_ a: Int, rank: Int = 5) throws -> Int {
        guard a >= -rank, a < rank else { throw fail("axis \(a) is out of range for rank \(rank)") }
        return a < 0 ? a + rank : a
    }

    /// Turns Identity-like nodes into renames: readers of `output` read `input` instead.
    func makeAlias(_ output: String, of input: String) {
        alias[output] = input
        consumers[input, default: 0] += consumers[output, default: 0] - 1
    }

    /// Explicit pads for `auto_pad` (NOTSET and VALID always; SAME_* only at stride 1, where
    /// they do not depend on the input size).
    func explicitPads(_ n: OnnxNodeProto, kernel: [Int], strides: [Int], dilations: [Int]) throws -> [Int]? {
        let auto = attrString(n, "auto_pad", "NOTSET")
        switch auto {
        case "NOTSET": return attrInts(n, "pads")
        case "VALID": return [0, 0, 0, 0, 0, 0]
        case "SAME_UPPER", "SAME_LOWER":
            guard strides.allSatisfy({ $0 == 1 }) else {
                throw fail("auto_pad \(auto) with strides \(strides) depends on the input size; export with explicit pads")
            }
            let total = zip(kernel, dilations).map { ($0 - 1) * $1 }
            let small = total.map { $0 / 2 }, large = total.map { $0 - $0 / 2 }
            return auto == "SAME_UPPER" ? small + large : large + small
        default: throw fail("unknown auto_pad '\(auto)'")
        }
    }

    // MARK: Operators

    func mapOperator(_ n: OnnxNodeProto) throws {
        let op = n.opType
        guard let out = n.outputs.first, !out.isEmpty else { throw fail("has no output") }
        switch op {
        case "Conv", "ConvTranspose":
            let x = try runtimeInput(n, 0)
            let w = try weightInput(n, 1, "weight")
            guard w.shape.count == 5 else { throw fail("only 3-D convolutions are supported; the weight is \(w.shape)") }
            let kernel = Array(w.shape[2...])
            let strides = attrInts(n, "strides") ?? [1, 1, 1], dilations = attrInts(n, "dilations") ?? [1, 1, 1]
            guard strides.count == 3, dilations.count == 3 else { throw fail("strides and dilations must have three values") }
            if op == "ConvTranspose", n.attribute("output_shape") != nil {
                throw fail("output_shape is not supported; export with explicit pads and output_padding")
            }
            if op == "ConvTranspose", attrString(n, "auto_pad", "NOTSET") != "NOTSET" {
                throw fail("auto_pad is not supported for ConvTranspose; export with explicit pads")
            }
            let group = attrInt(n, "group", 1)
            guard group >= 1, group <= 1 << 16 else { throw fail("group \(group) is out of range") }
            var attrs: [String: AttributeValue] = ["strides": .ints(strides), "dilations": .ints(dilations)]
            if let pads = try explicitPads(n, kernel: kernel, strides: strides, dilations: dilations) { attrs["pads"] = .ints(pads) }
            if group != 1 { attrs["group"] = .int(group) }
            if let k = attrInts(n, "kernel_shape") { attrs["kernel_shape"] = .ints(k) }
            if op == "ConvTranspose", let p = attrInts(n, "output_padding") { attrs["output_padding"] = .ints(p) }
            var inputs = [x, w.name]
            if n.input(2) != nil { inputs.append(try weightInput(n, 2, "bias").name) }
            let a = activation(x)!
            let channels = op == "Conv" ? w.shape[0] : w.shape[1] * group
            let stride = (0..<3).map { op == "Conv" ? a.stride[$0] * Double(strides[$0]) : a.stride[$0] / Double(strides[$0]) }
            emit(Node(name: n.name, op: op == "Conv" ? .conv : .convTranspose, inputs: inputs, outputs: [out], attributes: attrs),
                 Activation(channels: channels, stride: stride))

        case "MaxPool", "AveragePool":
            let x = try runtimeInput(n, 0)
            guard let kernel = attrInts(n, "kernel_shape"), kernel.count == 3 else { throw fail("kernel_shape must have three values (3-D pooling)") }
            let strides = attrInts(n, "strides") ?? [1, 1, 1], dilations = attrInts(n, "dilations") ?? [1, 1, 1]
            guard strides.count == 3, dilations.count == 3 else { throw fail("strides and dilations must have three values") }
            var attrs: [String: AttributeValue] = ["kernel_shape": .ints(kernel), "strides": .ints(strides)]
            if let pads = try explicitPads(n, kernel: kernel, strides: strides, dilations: dilations) { attrs["pads"] = .ints(pads) }
            if attrInt(n, "ceil_mode", 0) != 0 { attrs["ceil_mode"] = .int(1) }
            if op == "MaxPool" {
                attrs["dilations"] = .ints(dilations)
                if n.outputs.count > 1, !n.outputs[1].isEmpty, consumers[n.outputs[1], default: 0] > 0 {
                    var indices = n
                    indices.outputs = [n.outputs[1]]
                    record(indices, .problem(op: op, node: n.name, message: "the Indices output of MaxPool is not supported"))
                }
            } else {
                guard dilations.allSatisfy({ $0 == 1 }) else { throw fail("dilated AveragePool is not supported") }
                attrs["count_include_pad"] = .int(attrInt(n, "count_include_pad", 0))
            }
            let a = activation(x)!
            emit(Node(name: n.name, op: op == "MaxPool" ? .maxPool : .averagePool, inputs: [x], outputs: [out], attributes: attrs),
                 Activation(channels: a.channels, stride: (0..<3).map { a.stride[$0] * Double(strides[$0]) }))

        case "InstanceNormalization":
            if case .groupReshaped(let source, let groups, let origin)? = n.input(0).flatMap({ states[$0] }) {
                return try continueGroupNorm(n, source: source, groups: groups, origin: origin)
            }
            let x = try runtimeInput(n, 0)
            let scale = try weightInput(n, 1, "scale"), bias = try weightInput(n, 2, "bias")
            emit(Node(name: n.name, op: .instanceNormalization, inputs: [x, scale.name, bias.name], outputs: [out],
                      attributes: ["epsilon": .float(attrFloat(n, "epsilon", 1e-5))]), activation(x)!)

        case "GroupNormalization":
            let x = try runtimeInput(n, 0)
            let groups = attrInt(n, "num_groups", 0)
            guard let channels = activation(x)?.channels, groups >= 1, channels % groups == 0 else {
                throw fail("num_groups \(groups) must divide the (known) channel count")
            }
            var scale = try constantInput(n, 1, "scale"), bias = try constantInput(n, 2, "bias")
            // Opset 18 defined scale and bias per group, opset 21 per channel (as the engine).
            if opset < 21, scale.count == groups, bias.count == groups, groups != channels,
               let s = scale.floats, let b = bias.floats {
                scale = OnnxConstant(floats: (0..<channels).map { s[$0 / (channels / groups)] }, shape: [channels])
                bias = OnnxConstant(floats: (0..<channels).map { b[$0 / (channels / groups)] }, shape: [channels])
            }
            let s = try weight(scale, value: scale.count == channels && opset >= 21 ? n.input(1) : nil, node: n.name, role: "scale")
            let b = try weight(bias, value: bias.count == channels && opset >= 21 ? n.input(2) : nil, node: n.name, role: "bias")
            emit(Node(name: n.name, op: .groupNormalization, inputs: [x, s, b], outputs: [out],
                      attributes: ["num_groups": .int(groups), "epsilon": .float(attrFloat(n, "epsilon", 1e-5))]), activation(x)!)

        case "BatchNormalization":
            let x = try runtimeInput(n, 0)
            guard attrInt(n, "training_mode", 0) == 0 else { throw fail("training_mode BatchNormalization is not supported (export the model in eval mode)") }
            for extra in n.outputs.dropFirst() where !extra.isEmpty && consumers[extra, default: 0] > 0 {
                throw fail("the running-statistics outputs of BatchNormalization are not supported (export in eval mode)")
            }
            let inputs = try [x] + ["scale", "bias", "mean", "var"].enumerated().map { try weightInput(n, $0.offset + 1, $0.element).name }
            emit(Node(name: n.name, op: .batchNormalization, inputs: inputs, outputs: [out],
                      attributes: ["epsilon": .float(attrFloat(n, "epsilon", 1e-5))]), activation(x)!)

        case "Relu", "Sigmoid", "Tanh":
            let x = try runtimeInput(n, 0)
            emit(Node(name: n.name, op: OpType(rawValue: op)!, inputs: [x], outputs: [out]), activation(x)!)

        case "LeakyRelu":
            let x = try runtimeInput(n, 0)
            emit(Node(name: n.name, op: .leakyRelu, inputs: [x], outputs: [out], attributes: ["alpha": .float(attrFloat(n, "alpha", 0.01))]),
                 activation(x)!)

        case "PRelu":
            let x = try runtimeInput(n, 0)
            let slope = try weightInput(n, 1, "slope")
            emit(Node(name: n.name, op: .prelu, inputs: [x, slope.name], outputs: [out]), activation(x)!)

        case "Add", "Mul", "Sub", "Div":
            try mapArithmetic(n, out: out)

        case "Concat":
            guard let axisAttr = n.attribute("axis")?.i else { throw fail("missing axis") }
            guard try axis(Int(clamping: axisAttr)) == 1 else { throw fail("only concatenation along channels (axis 1) is supported, axis is \(axisAttr)") }
            let inputs = try (0..<n.inputs.count).filter { n.input($0) != nil }.map { try runtimeInput(n, $0) }
            let acts = inputs.map { activation($0)! }
            let channels = acts.allSatisfy({ $0.channels != nil }) ? acts.reduce(0) { $0 + $1.channels! } : nil
            let stride = (0..<3).map { i in acts.map { $0.stride[i] }.max() ?? 1 }
            emit(Node(name: n.name, op: .concat, inputs: inputs, outputs: [out], attributes: ["axis": .int(1)]),
                 Activation(channels: channels, stride: stride))

        case "Resize":
            try mapResize(n, out: out)

        case "Softmax":
            if let input = n.input(0), case .channelsLast(let source, let perm, let origin)? = states[input],
               try axis(attrInt(n, "axis", opset >= 13 ? -1 : 1)) == 4, consumers[out, default: 0] == 1 {
                // Softmax over the last axis (before opset 13: over the flattened trailing axes
                // from 4 on, which is the same) of the channels-last view.
                states[out] = .channelsLastSoftmax(source: source, perm: perm, origins: [origin, n])
                return
            }
            let x = try runtimeInput(n, 0)
            guard opset >= 13 else { throw fail("Softmax before opset 13 normalizes over all trailing axes flattened; export with opset 13 or later") }
            guard try axis(attrInt(n, "axis", -1)) == 1 else { throw fail("only Softmax over channels (axis 1) is supported") }
            emit(Node(name: n.name, op: .softmax, inputs: [x], outputs: [out], attributes: ["axis": .int(1)]), activation(x)!)

        case "ArgMax":
            let x = try runtimeInput(n, 0)
            guard try axis(attrInt(n, "axis", 0)) == 1 else { throw fail("only ArgMax over channels (axis 1) is supported") }
            guard attrInt(n, "select_last_index", 0) == 0 else { throw fail("select_last_index is not supported (the engine picks the first maximum)") }
            let keep = attrInt(n, "keepdims", 1) != 0
            if !keep { notes.append("ArgMax '\(n.name)' keeps its channel axis (1 x 1 x D x H x W instead of 1 x D x H x W; same data)") }
            var a = activation(x)!
            a.channels = 1
            a.isIndex = true
            a.channelAxisDropped = !keep
            emit(Node(name: n.name, op: .argMax, inputs: [x], outputs: [out], attributes: ["axis": .int(1), "keepdims": .int(1)]), a)

        case "Unsqueeze" where n.input(0).flatMap({ activation($0) })?.channelAxisDropped == true:
            // ArgMax(keepdims=0) followed by Unsqueeze(axis 1): the engine's ArgMax kept the axis.
            let x = try runtimeInput(n, 0)
            let axes = opset >= 13 ? try knownInts(try constantInput(n, 1, "axes"), "axes") : (n.attribute("axes")?.ints ?? [])
            guard axes == [1] || axes == [-4] else { throw fail("only Unsqueeze of the channel axis after ArgMax is supported") }
            var a = activation(x)!
            a.channelAxisDropped = false
            states[x] = .activation(a)
            makeAlias(out, of: x)

        case "Pad":
            try mapPad(n, out: out)

        case "Transpose":
            let perm = attrInts(n, "perm") ?? [4, 3, 2, 1, 0]
            if let input = n.input(0), case .channelsLastSoftmax(let source, let first, let origins)? = states[input],
               perm.count == 5, perm.allSatisfy({ (0..<5).contains($0) }), (0..<5).allSatisfy({ first[perm[$0]] == $0 }) {
                notes.append("Transpose -> Softmax -> Transpose at '\(origins[0].name)' became one Softmax over channels")
                emit(Node(name: origins[1].name, op: .softmax, inputs: [source], outputs: [out], attributes: ["axis": .int(1)]),
                     activation(source)!)
                return
            }
            let x = try runtimeInput(n, 0)
            if perm.count == 5, perm[0] == 0, perm[4] == 1, Set(perm) == Set(0..<5), consumers[out, default: 0] == 1 {
                states[out] = .channelsLast(source: x, perm: perm, origin: n)
            } else {
                record(n, .unsupportedOp(op: op, node: n.name))
            }

        case "Slice":
            try mapSlice(n, out: out)

        case "Identity", "Dropout":
            let x = try runtimeInput(n, 0)
            if op == "Dropout", n.outputs.count > 1, !n.outputs[1].isEmpty, consumers[n.outputs[1], default: 0] > 0 {
                throw fail("the mask output of Dropout is not supported")
            }
            makeAlias(out, of: x)

        case "Cast":
            let x = try runtimeInput(n, 0)
            let to = Int32(truncatingIfNeeded: n.attribute("to")?.i ?? 0)
            let integer: Set<OnnxTensorProto.DataType> = [.int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .uint64]
            switch OnnxTensorProto.DataType(rawValue: to) {
            case .float?, .double?:
                makeAlias(out, of: x)
            case let t? where integer.contains(t) && activation(x)!.isIndex:
                makeAlias(out, of: x)  // label indices are integral floats in the engine
            default:
                throw fail("Cast of computed values to type \(to) is not supported (only to float, or of ArgMax indices to integers)")
            }

        case "Reshape":
            if let input = n.input(0), case .groupNormed(let source, let groups, let epsilon, let scale, let bias, let origins)? = states[input],
               try finishGroupNorm(n, source: source, groups: groups, epsilon: epsilon, scale: scale, bias: bias, origins: origins) {
                return
            }
            let x = try runtimeInput(n, 0)
            let target = try constantInput(n, 1, "shape")
            if reshapeKeepsShape(of: x, target: target, allowZero: attrInt(n, "allowzero", 0) != 0) {
                makeAlias(out, of: x)
            } else if try startGroupNorm(n, x: x, target: target) {
                return
            } else {
                record(n, .unsupportedOp(op: op, node: n.name))
            }

        default:
            record(n, .unsupportedOp(op: op, node: n.name))
        }
    }

    /// Whether `Reshape(x, target)` leaves x's shape as it is: Shape(x) fed back, 0 (copy) or
    /// one -1 (inferred) entries, batch 1 and the known channel count.
    func reshapeKeepsShape(of x: String, target: OnnxConstant, allowZero: Bool) -> Bool {
        guard let dims = target.symbolicDims, dims.count == 5, let a = activation(x) else { return false }
        var inferred = 0
        for (i, d) in dims.enumerated() {
            switch d {
            case .dim(let v, let axis) where v == x && axis == i: continue
            case .known(0) where !allowZero: continue
            case .known(-1): inferred += 1
            case .known(1) where i == 0: continue
            case .known(let c) where i == 1 && a.channels == Int(c): continue
            default: return false
            }
        }
        return inferred <= 1
    }

    func mapArithmetic(_ n: OnnxNodeProto, out: String) throws {
        let op = n.opType
        guard n.inputs.count == 2, let a = n.input(0), let b = n.input(1) else { throw fail("expects two inputs") }
        let aConst = isKnown(a), bConst = isKnown(b)
        if aConst && bConst { throw fail("arithmetic on values that depend on runtime sizes is not supported") }
        if !aConst && !bConst {
            guard op == "Add" || op == "Mul" else { throw fail("\(op) of two computed tensors is not supported (only Add and Mul)") }
            let x = try runtimeInput(n, 0), y = try runtimeInput(n, 1)
            let ax = activation(x)!, ay = activation(y)!
            emit(Node(name: n.name, op: op == "Add" ? .add : .mul, inputs: [x, y], outputs: [out]),
                 Activation(channels: ax.channels ?? ay.channels, stride: (0..<3).map { max(ax.stride[$0], ay.stride[$0]) }))
            return
        }
        let constIndex = aConst ? 0 : 1
        let x = try runtimeInput(n, 1 - constIndex)
        let c = try constantInput(n, constIndex, "operand")
        guard let values = c.floats else { throw fail("the constant operand depends on runtime sizes") }
        if (op == "Add" || op == "Mul"), try foldIntoNorm(n, x: x, operand: c, isMul: op == "Mul") { return }
        let engineOp: OpType
        let operand: String
        switch op {
        case "Add", "Mul":
            engineOp = op == "Add" ? .add : .mul
            operand = try weight(c, value: n.input(constIndex), node: n.name, role: "operand")
        case "Sub":
            guard constIndex == 1 else { throw fail("constant minus computed tensor is not supported") }
            engineOp = .add
            operand = try weight(OnnxConstant(floats: values.map { -$0 }, shape: c.shape), value: nil, node: n.name, role: "negated_operand")
        default:
            guard constIndex == 1 else { throw fail("constant divided by a computed tensor is not supported") }
            engineOp = .mul
            operand = try weight(OnnxConstant(floats: values.map { 1 / $0 }, shape: c.shape), value: nil, node: n.name, role: "reciprocal_operand")
        }
        let inputs = constIndex == 0 && (op == "Add" || op == "Mul") ? [operand, x] : [x, operand]
        emit(Node(name: n.name, op: engineOp, inputs: inputs, outputs: [out]), activation(x)!)
    }

    func mapResize(_ n: OnnxNodeProto, out: String) throws {
        let x = try runtimeInput(n, 0)
        let a = activation(x)!
        let mode = attrString(n, "mode", "nearest")
        guard mode == "nearest" || mode == "linear" else { throw fail("mode '\(mode)' is not supported (nearest, linear)") }
        let transform = attrString(n, "coordinate_transformation_mode", "half_pixel")
        guard ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"].contains(transform) else {
            throw fail("coordinate_transformation_mode '\(transform)' is not supported")
        }
        guard attrInt(n, "antialias", 0) == 0 else { throw fail("antialias is not supported") }
        guard attrInt(n, "exclude_outside", 0) == 0 else { throw fail("exclude_outside is not supported") }
        var attrs: [String: AttributeValue] = ["mode": .string(mode), "coordinate_transformation_mode": .string(transform)]
        if mode == "nearest" {
            let rounding = attrString(n, "nearest_mode", "round_prefer_floor")
            guard ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(rounding) else { throw fail("nearest_mode '\(rounding)' is not supported") }
            attrs["nearest_mode"] = .string(rounding)
        }
        let axes = try (attrInts(n, "axes") ?? [0, 1, 2, 3, 4]).map { try axis($0) }
        let scales = try optionalConstant(n, 2, "scales")
        var inputs = [x]
        var stride = a.stride
        if let scales, scales.count > 0 {
            guard let v = scales.doubles, v.count == axes.count else { throw fail("scales must have one value per axis") }
            var full = [Double](repeating: 1, count: 5)
            for (i, ax) in axes.enumerated() { full[ax] = v[i] }
            guard full[0] == 1, full[1] == 1 else { throw fail("only the spatial axes may be scaled, scales are \(full)") }
            attrs["scales"] = .numbers(Array(full[2...]))
            stride = (0..<3).map { a.stride[$0] / full[2 + $0] }
        } else if let sizes = try optionalConstant(n, 3, "sizes") {
            if attrString(n, "keep_aspect_ratio_policy", "stretch") != "stretch" { throw fail("keep_aspect_ratio_policy is not supported") }
            guard let v = sizes.symbolicDims, v.count == axes.count else { throw fail("sizes must have one value per axis") }
            var full: [OnnxConstant.SymbolicDim] = (0..<5).map { .dim(value: x, axis: $0) }
            for (i, ax) in axes.enumerated() { full[ax] = v[i] }
            func sameChannels(_ d: OnnxConstant.SymbolicDim) -> Bool {
                switch d {
                case .known(let c): return a.channels == Int(c)
                case .dim(let v, let axis): return axis == 1 && (v == x || (a.channels != nil && activation(v)?.channels == a.channels))
                }
            }
            switch full[0] { case .known(1): break; case .dim(_, 0): break; default: throw fail("Resize may not change the batch size") }
            guard sameChannels(full[1]) else { throw fail("Resize may not change the channel count") }
            let spatial = Array(full[2...])
            if let known = OnnxConstant(shape: [3], storage: .symbolic(spatial)).ints {
                guard known.allSatisfy({ $0 >= 1 && $0 <= 1 << 16 }) else { throw fail("output sizes \(known) are out of range") }
                attrs["sizes"] = .ints(known.map { Int($0) })
                stride = [1, 1, 1]
            } else if case .dim(let like, 2) = spatial[0], spatial == [.dim(value: like, axis: 2), .dim(value: like, axis: 3), .dim(value: like, axis: 4)] {
                if like != x {
                    let r = try runtimeInput(OnnxNodeProto.reference(like, of: n), 0)
                    inputs.append(r)
                    stride = activation(r)!.stride
                } else {
                    makeAlias(out, of: x)  // resizing to its own size
                    return
                }
            } else {
                throw fail("the output size [\(spatial.map(\.description).joined(separator: ", "))] mixes sizes of different tensors or computes on them")
            }
        } else {
            throw fail("Resize needs constant scales or sizes")
        }
        emit(Node(name: n.name, op: .resize, inputs: inputs, outputs: [out], attributes: attrs),
             Activation(channels: a.channels, stride: stride))
    }

    func mapPad(_ n: OnnxNodeProto, out: String) throws {
        let x = try runtimeInput(n, 0)
        let mode = attrString(n, "mode", "constant")
        guard ["constant", "reflect", "edge"].contains(mode) else { throw fail("mode '\(mode)' is not supported (constant, reflect, edge)") }
        let pads = try knownInts(try constantInput(n, 1, "pads"), "pads").map { Int(clamping: $0) }
        var value = 0.0
        if let v = try optionalConstant(n, 2, "constant_value") {
            guard let d = v.doubles, d.count == 1 else { throw fail("constant_value must be one number") }
            value = d[0]
        }
        var full = [Int](repeating: 0, count: 10)
        if let axesConst = try optionalConstant(n, 3, "axes") {
            let axes = try knownInts(axesConst, "axes").map { try axis(Int(clamping: $0)) }
            guard pads.count == 2 * axes.count else { throw fail("pads must have two values per axis") }
            for (i, ax) in axes.enumerated() { full[ax] = pads[i]; full[5 + ax] = pads[axes.count + i] }
        } else {
            guard pads.count == 10 else { throw fail("pads must have 10 values (begin and end of N, C, D, H, W), has \(pads.count)") }
            full = pads
        }
        guard full[0] == 0, full[1] == 0, full[5] == 0, full[6] == 0 else { throw fail("only the spatial axes may be padded, pads are \(full)") }
        guard full.allSatisfy({ $0 >= 0 }) else { throw fail("negative pads (cropping) are not supported, pads are \(full)") }
        if full.allSatisfy({ $0 == 0 }) {
            // A Pad that pads nothing (MONAI's UpCat when the traced sizes matched): a rename.
            notes.append("Pad '\(n.name)' pads nothing and was dropped")
            return makeAlias(out, of: x)
        }
        var attrs: [String: AttributeValue] = ["pads": .ints(Array(full[2..<5]) + Array(full[7..<10])), "mode": .string(mode)]
        if mode == "constant", value != 0 { attrs["value"] = .float(Self.decimal(Float(value))) }
        emit(Node(name: n.name, op: .pad, inputs: [x], outputs: [out], attributes: attrs), activation(x)!)
    }

    func mapSlice(_ n: OnnxNodeProto, out: String) throws {
        let x = try runtimeInput(n, 0)
        let a = activation(x)!
        let starts = try knownInts(try constantInput(n, 1, "starts"), "starts")
        let ends = try knownInts(try constantInput(n, 2, "ends"), "ends")
        let axes = try optionalConstant(n, 3, "axes").map { try knownInts($0, "axes") } ?? (0..<Int64(starts.count)).map { $0 }
        let steps = try optionalConstant(n, 4, "steps").map { try knownInts($0, "steps") } ?? [Int64](repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw fail("starts, ends, axes and steps differ in length")
        }
        let limit = Int64(Int32.max)
        func clamp(_ v: Int64) -> Int { Int(min(max(v, -limit), limit)) }
        let axisList = try axes.map { try axis(Int(clamping: $0)) }
        guard steps.allSatisfy({ $0 >= 1 }) else { throw fail("only positive steps are supported, steps are \(steps)") }
        var channels = a.channels
        var stride = a.stride
        for (i, ax) in axisList.enumerated() {
            if ax == 1, let c = channels {
                var s = starts[i] < 0 ? starts[i] + Int64(c) : starts[i], e = ends[i] < 0 ? ends[i] + Int64(c) : ends[i]
                s = min(max(s, 0), Int64(c)); e = min(max(e, 0), Int64(c))
                channels = e > s ? Int((e - s - 1) / steps[i] + 1) : 0
            }
            if ax >= 2 { stride[ax - 2] *= Double(steps[i]) }
        }
        emit(Node(name: n.name, op: .slice, inputs: [x], outputs: [out],
                  attributes: ["starts": .ints(starts.map(clamp)), "ends": .ints(ends.map(clamp)),
                               "axes": .ints(axisList), "steps": .ints(steps.map(clamp))]),
             Activation(channels: channels, stride: stride))
    }
}

extension OnnxNodeProto {
    /// A stand-in node reading `value`, used to check a value read through a shape subgraph.
    static func reference(_ value: String, of node: OnnxNodeProto) -> OnnxNodeProto {
        var n = node
        n.inputs = [value]
        return n
    }
}
