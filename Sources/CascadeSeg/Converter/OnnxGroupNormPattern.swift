import Foundation

/// PyTorch's (and so MONAI's) GroupNorm export before opset 18:
///
///     r = Reshape(x, [0 | N, G, -1])
///     n = InstanceNormalization(r, ones[G], zeros[G], epsilon)
///     y = Reshape(n, Shape(x))
///     y = Mul(y, gamma[C,1,1,1]); y = Add(y, beta[C,1,1,1])
///
/// becomes one GroupNormalization(x, gamma, beta) node (scale and bias per channel, as the
/// engine defines it). The walk carries the intermediate values as pattern states; anything
/// else reading them turns the pattern back into placeholders (see `materialize`).
extension OnnxImporter {
    /// `Reshape(x, [N, G, -1])`: the start of the pattern.
    func startGroupNorm(_ n: OnnxNodeProto, x: String, target: OnnxConstant) throws -> Bool {
        guard let out = n.outputs.first, let c = activation(x)?.channels, let dims = target.symbolicDims, dims.count == 3,
              consumers[out, default: 0] == 1 else { return false }
        switch dims[0] {
        case .known(0), .known(1): break
        case .dim(let v, 0) where v == x: break
        default: return false
        }
        guard case .known(let g) = dims[1], g >= 1, g <= Int64(c), c % Int(g) == 0, case .known(-1) = dims[2] else { return false }
        states[out] = .groupReshaped(source: x, groups: Int(g), origin: n)
        return true
    }

    /// `InstanceNormalization` of the grouped view: per-group statistics.
    func continueGroupNorm(_ n: OnnxNodeProto, source: String, groups: Int, origin: OnnxNodeProto) throws {
        let input = n.input(0)!
        guard let out = n.outputs.first, let channels = activation(source)?.channels,
              let s = try n.input(1).flatMap({ try constant($0) })?.floats, let b = try n.input(2).flatMap({ try constant($0) })?.floats,
              s.count == groups, b.count == groups, consumers[out, default: 0] == 1 else {
            materialize(input)
            throw fail("InstanceNormalization of a reshaped tensor needs constant scale and bias with one value per group")
        }
        // The grouped view's per-group affine, spread over the channels of each group.
        let perGroup = channels / groups
        states[out] = .groupNormed(source: source, groups: groups, epsilon: attrFloat(n, "epsilon", 1e-5),
                                   scale: (0..<channels).map { s[$0 / perGroup] }, bias: (0..<channels).map { b[$0 / perGroup] },
                                   origins: [origin, n])
    }

    /// `Reshape(n, Shape(x))`: the pattern is complete; emit the GroupNormalization node.
    func finishGroupNorm(_ n: OnnxNodeProto, source: String, groups: Int, epsilon: Double, scale: [Float], bias: [Float],
                         origins: [OnnxNodeProto]) throws -> Bool {
        guard let out = n.outputs.first, let target = try n.input(1).flatMap({ try constant($0) }),
              let dims = target.symbolicDims, dims.count == 5, let a = activation(source) else { return false }
        for (i, d) in dims.enumerated() {
            switch d {
            case .dim(let v, let axis) where v == source && axis == i: continue
            case .known(1) where i == 0: continue
            case .known(let c) where i == 1 && a.channels == Int(c): continue
            default: return false
            }
        }
        let base = origins.last?.name ?? n.name
        let name = base.contains("InstanceNormalization")
            ? uniqueNodeName(base.replacingOccurrences(of: "InstanceNormalization", with: "GroupNormalization")) : base
        let s = try weight(OnnxConstant(floats: scale, shape: [scale.count]), value: nil, node: name, role: "scale")
        let b = try weight(OnnxConstant(floats: bias, shape: [bias.count]), value: nil, node: name, role: "bias")
        emit(Node(name: name, op: .groupNormalization, inputs: [source, s, b], outputs: [out],
                  attributes: ["num_groups": .int(groups), "epsilon": .float(epsilon)]), a)
        affineNorms[out] = (pending.count - 1, s, b)
        notes.append("GroupNorm export pattern at '\(origins.first?.name ?? name)' became one GroupNormalization node")
        return true
    }

    /// `Mul` / `Add` of a per-channel constant right after a pattern's GroupNormalization:
    /// folded into its scale and bias (y = (x̂ s + b) g = x̂ (s g) + b g; y + h = x̂ s + (b + h)).
    func foldIntoNorm(_ n: OnnxNodeProto, x: String, operand: OnnxConstant, isMul: Bool) throws -> Bool {
        guard let entry = affineNorms[x], consumers[x, default: 0] == 1, let out = n.outputs.first,
              var scale = weights[entry.scale], var bias = weights[entry.bias], let values = operand.floats else { return false }
        let channels = scale.count
        let padded = [Int](repeating: 1, count: max(0, 5 - operand.shape.count)) + operand.shape
        let perChannel: [Float]
        if padded.count == 5, padded.allSatisfy({ $0 == 1 }) {
            perChannel = [Float](repeating: values[0], count: channels)
        } else if padded.count == 5, padded[1] == channels, padded.enumerated().allSatisfy({ $0.offset == 1 || $0.element == 1 }) {
            perChannel = values
        } else {
            return false
        }
        for c in 0..<channels {
            if isMul {
                scale.data[c] *= perChannel[c]
                bias.data[c] *= perChannel[c]
            } else {
                bias.data[c] += perChannel[c]
            }
        }
        weights[entry.scale] = scale
        weights[entry.bias] = bias
        pending[entry.index].node.outputs = [out]
        producer[out] = entry.index
        producer[x] = nil
        states[out] = states[x]
        affineNorms[x] = nil
        affineNorms[out] = entry
        return true
    }
}
