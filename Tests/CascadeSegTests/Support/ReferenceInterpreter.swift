import Foundation
@testable import CascadeSeg

/// A dense tensor of Doubles, row-major, used only by the reference interpreter.
struct RefTensor: Equatable {
    var shape: [Int]
    var data: [Double]

    init(shape: [Int], data: [Double]) {
        precondition(shape.reduce(1, *) == data.count, "reference tensor data does not match its shape \(shape)")
        self.shape = shape
        self.data = data
    }

    init(_ t: Tensor) { self.init(shape: t.shape, data: t.data.map(Double.init)) }

    init(zeros shape: [Int]) { self.init(shape: shape, data: [Double](repeating: 0, count: shape.reduce(1, *))) }

    var count: Int { data.count }
    var floatTensor: Tensor { Tensor(shape: shape, data: data.map { Float($0) }) }
}

/// A naive, obviously-correct interpreter of a `Graph` on the CPU, computing in Double. It is
/// the oracle of the op tests: every op is written out directly from its ONNX definition (plus
/// the engine's documented extensions, docs/FORMAT.md), with no blocking, no vectorization and
/// none of the engine's kernels or graph rewrites. It runs the graph as written (BatchNorm is
/// not folded, activations are not fused), so comparing against it also checks the optimizer.
///
/// Attribute parsing and validation reuse the engine's parameter structs (ConvParameters, ...)
/// so that both read an attribute the same way; shapes are computed here independently and
/// checked against ShapeInference.
enum ReferenceInterpreter {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs `graph` on `input` (1 x C x D x H x W, or C x D x H x W) and returns every graph output.
    static func run(graph: Graph, weights: [String: Tensor], input: Tensor) throws -> [String: RefTensor] {
        let order = try graph.validatedOrder(constants: Set(weights.keys))
        let inputShape = input.shape.count == 4 ? [1] + input.shape : input.shape
        let shapes = try ShapeInference.infer(graph: graph, order: order, inputShape: inputShape,
                                              constants: weights.mapValues(\.shape))
        var values: [String: RefTensor] = weights.mapValues(RefTensor.init)
        values[graph.input.name] = RefTensor(shape: inputShape, data: input.data.map(Double.init))
        for node in order {
            func value(_ i: Int) throws -> RefTensor {
                guard let name = node.input(i), let v = values[name] else {
                    throw Failure(description: "node '\(node.name)': input \(i) is missing")
                }
                return v
            }
            let out = try evaluate(node, value: value)
            guard out.shape == shapes[node.outputs[0]] else {
                throw Failure(description: "node '\(node.name)': reference shape \(out.shape) differs from ShapeInference's \(shapes[node.outputs[0]] ?? [])")
            }
            values[node.outputs[0]] = out
        }
        var outputs: [String: RefTensor] = [:]
        for o in graph.outputs { outputs[o.name] = values[o.name]! }
        return outputs
    }

    // MARK: - Per op

    static func evaluate(_ node: Node, value: (Int) throws -> RefTensor) throws -> RefTensor {
        switch node.op {
        case .conv, .convTranspose:
            let x = try value(0), w = try value(1)
            let b = node.input(2) != nil ? try value(2) : nil
            let p = try ConvParameters(node: node, inputChannels: x.shape[1], weightShape: w.shape, biasShape: b?.shape)
            let y = node.op == .conv ? conv(x, w, b, p) : convTranspose(x, w, b, p)
            return map(y, try activation(node))
        case .maxPool, .averagePool:
            return pool(try value(0), try PoolParameters(node: node))
        case .instanceNormalization:
            let x = try value(0)
            return try groupNorm(x, groups: x.shape[1], scale: try value(1), bias: try value(2), node: node)
        case .groupNormalization:
            return try groupNorm(try value(0), groups: try node.int("num_groups"), scale: try value(1), bias: try value(2), node: node)
        case .batchNormalization:
            let x = try value(0)
            let gamma = try value(1), beta = try value(2), mean = try value(3), variance = try value(4)
            let epsilon = try node.float("epsilon", default: 1e-5)
            let spatial = x.count / x.shape[1]
            var y = x
            for i in 0..<x.count {
                let c = i / spatial
                y.data[i] = (x.data[i] - mean.data[c]) / (variance.data[c] + epsilon).squareRoot() * gamma.data[c] + beta.data[c]
            }
            return y
        case .relu: return map(try value(0)) { max($0, 0) }
        case .leakyRelu:
            let alpha = try node.float("alpha", default: 0.01)
            return map(try value(0)) { $0 >= 0 ? $0 : $0 * alpha }
        case .sigmoid: return map(try value(0), sigmoid)
        case .tanh: return map(try value(0)) { Foundation.tanh($0) }
        case .identity: return try value(0)
        case .prelu:
            let x = try value(0), slope = try value(1)
            guard let shape = broadcastShape(x.shape, slope.shape), shape == x.shape else {
                throw Failure(description: "node '\(node.name)': slope \(slope.shape) does not broadcast to \(x.shape)")
            }
            let s = broadcastOffsets(slope.shape, to: shape)
            var y = x
            for i in 0..<x.count where x.data[i] < 0 { y.data[i] = x.data[i] * slope.data[s[i]] }
            return y
        case .add, .mul:
            let a = try value(0), b = try value(1)
            guard let shape = broadcastShape(a.shape, b.shape) else {
                throw Failure(description: "node '\(node.name)': \(a.shape) and \(b.shape) do not broadcast")
            }
            let oa = broadcastOffsets(a.shape, to: shape), ob = broadcastOffsets(b.shape, to: shape)
            let act = try activation(node)
            let isMul = node.op == .mul
            var y = RefTensor(zeros: shape)
            for i in 0..<y.count {
                let u = a.data[oa[i]], v = b.data[ob[i]]
                y.data[i] = act(isMul ? u * v : u + v)
            }
            return y
        case .concat:
            let axis = try node.int("axis", default: 1)
            guard axis == 1 || axis == -4 else { throw Failure(description: "concat axis \(axis)") }
            var parts: [RefTensor] = []
            for i in 0..<node.inputs.count { parts.append(try value(i)) }
            // Batch 1, NCDHW: concatenating channels is concatenating the flat data.
            return RefTensor(shape: [1, parts.map { $0.shape[1] }.reduce(0, +)] + Array(parts[0].shape[2...]),
                             data: parts.flatMap(\.data))
        case .resize:
            let x = try value(0)
            let params = try ResizeParameters(node: node)
            let like = node.input(1) != nil ? try value(1) : nil
            return try resize(x, params, node: node, like: like)
        case .softmax:
            return softmax(try value(0))
        case .argMax:
            return argMax(try value(0))
        case .pad:
            return pad(try value(0), try PadParameters(node: node))
        case .slice:
            return try slice(try value(0), node: node)
        }
    }

    // MARK: - Activations

    static func sigmoid(_ v: Double) -> Double { 1 / (1 + Foundation.exp(-v)) }

    /// The fused `activation` / `activation_alpha` attribute pair (docs/FORMAT.md).
    static func activation(_ node: Node) throws -> (Double) -> Double {
        switch try node.string("activation", default: "none") {
        case "none": return { $0 }
        case "relu": return { max($0, 0) }
        case "leaky_relu":
            let alpha = try node.float("activation_alpha", default: 0.01)
            return { $0 >= 0 ? $0 : $0 * alpha }
        case "sigmoid": return sigmoid
        case "tanh": return { Foundation.tanh($0) }
        case let other: throw Failure(description: "node '\(node.name)': unknown activation '\(other)'")
        }
    }

    static func map(_ x: RefTensor, _ f: (Double) -> Double) -> RefTensor {
        RefTensor(shape: x.shape, data: x.data.map(f))
    }

    // MARK: - Convolution

    /// ONNX Conv: y[k, o] = b[k] + sum over c in k's group, taps t of x[c, o * s + t * d - pad_begin] * w[k, c', t].
    static func conv(_ x: RefTensor, _ w: RefTensor, _ b: RefTensor?, _ p: ConvParameters) -> RefTensor {
        let (C, D, H, W) = (x.shape[1], x.shape[2], x.shape[3], x.shape[4])
        let K = p.outChannels, G = p.group, Cg = C / G, Kg = K / G
        let (KD, KH, KW) = (p.kernel[0], p.kernel[1], p.kernel[2])
        var outSize: [Int] = []
        for i in 0..<3 {
            let input = x.shape[2 + i] + p.padsBegin[i] + p.padsEnd[i]
            outSize.append((input - (p.dilations[i] * (p.kernel[i] - 1) + 1)) / p.strides[i] + 1)
        }
        let (OD, OH, OW) = (outSize[0], outSize[1], outSize[2])
        var y = RefTensor(zeros: [1, K, OD, OH, OW])
        for k in 0..<K {
            let g = k / Kg
            for oz in 0..<OD { for oy in 0..<OH { for ox in 0..<OW {
                var s = b?.data[k] ?? 0
                for cc in 0..<Cg {
                    let c = g * Cg + cc
                    for kz in 0..<KD {
                        let iz = oz * p.strides[0] + kz * p.dilations[0] - p.padsBegin[0]
                        if iz < 0 || iz >= D { continue }
                        for ky in 0..<KH {
                            let iy = oy * p.strides[1] + ky * p.dilations[1] - p.padsBegin[1]
                            if iy < 0 || iy >= H { continue }
                            for kx in 0..<KW {
                                let ix = ox * p.strides[2] + kx * p.dilations[2] - p.padsBegin[2]
                                if ix < 0 || ix >= W { continue }
                                s += x.data[((c * D + iz) * H + iy) * W + ix] * w.data[(((k * Cg + cc) * KD + kz) * KH + ky) * KW + kx]
                            }
                        }
                    }
                }
                y.data[((k * OD + oz) * OH + oy) * OW + ox] = s
            }}}
        }
        return y
    }

    /// ONNX ConvTranspose, written as the scatter it is defined by: every input voxel i adds
    /// x[c, i] * w[c, k', t] to the output voxel i * s + t * d - pad_begin (dropped when outside).
    static func convTranspose(_ x: RefTensor, _ w: RefTensor, _ b: RefTensor?, _ p: ConvParameters) -> RefTensor {
        let (C, D, H, W) = (x.shape[1], x.shape[2], x.shape[3], x.shape[4])
        let K = p.outChannels, G = p.group, Cg = C / G, Kg = K / G
        let (KD, KH, KW) = (p.kernel[0], p.kernel[1], p.kernel[2])
        var outSize: [Int] = []
        for i in 0..<3 {
            outSize.append((x.shape[2 + i] - 1) * p.strides[i] + p.dilations[i] * (p.kernel[i] - 1) + 1
                           + p.outputPadding[i] - p.padsBegin[i] - p.padsEnd[i])
        }
        let (OD, OH, OW) = (outSize[0], outSize[1], outSize[2])
        var y = RefTensor(zeros: [1, K, OD, OH, OW])
        let outSpatial = OD * OH * OW
        for k in 0..<K { for i in 0..<outSpatial { y.data[k * outSpatial + i] = b?.data[k] ?? 0 } }
        for c in 0..<C {
            let g = c / Cg
            for iz in 0..<D { for iy in 0..<H { for ix in 0..<W {
                let v = x.data[((c * D + iz) * H + iy) * W + ix]
                for j in 0..<Kg {
                    let k = g * Kg + j
                    for kz in 0..<KD {
                        let oz = iz * p.strides[0] + kz * p.dilations[0] - p.padsBegin[0]
                        if oz < 0 || oz >= OD { continue }
                        for ky in 0..<KH {
                            let oy = iy * p.strides[1] + ky * p.dilations[1] - p.padsBegin[1]
                            if oy < 0 || oy >= OH { continue }
                            for kx in 0..<KW {
                                let ox = ix * p.strides[2] + kx * p.dilations[2] - p.padsBegin[2]
                                if ox < 0 || ox >= OW { continue }
                                y.data[((k * OD + oz) * OH + oy) * OW + ox] += v * w.data[(((c * Kg + j) * KD + kz) * KH + ky) * KW + kx]
                            }
                        }
                    }
                }
            }}}
        }
        return y
    }

    // MARK: - Pooling

    /// ONNX MaxPool / AveragePool. With ceil_mode the last window may run past the padded
    /// input; positions there are ignored. count_include_pad counts the positions of the window
    /// inside the padded extent [-pad_begin, size + pad_end) (as PyTorch and ONNX Runtime).
    static func pool(_ x: RefTensor, _ p: PoolParameters) -> RefTensor {
        let (C, D, H, W) = (x.shape[1], x.shape[2], x.shape[3], x.shape[4])
        var outSize: [Int] = []
        for i in 0..<3 {
            let n = x.shape[2 + i], span = p.dilations[i] * (p.kernel[i] - 1) + 1
            let room = Double(n + p.padsBegin[i] + p.padsEnd[i] - span) / Double(p.strides[i])
            var size = Int(p.ceilMode ? room.rounded(.up) : room.rounded(.down)) + 1
            // The last window must start inside the input or the left padding.
            if p.ceilMode, (size - 1) * p.strides[i] >= n + p.padsBegin[i] { size -= 1 }
            outSize.append(size)
        }
        let (OD, OH, OW) = (outSize[0], outSize[1], outSize[2])
        var y = RefTensor(zeros: [1, C, OD, OH, OW])
        func taps(_ o: Int, axis: Int) -> [(index: Int, inside: Bool, padded: Bool)] {
            let n = x.shape[2 + axis]
            return (0..<p.kernel[axis]).map { k in
                let i = o * p.strides[axis] + k * p.dilations[axis] - p.padsBegin[axis]
                return (i, i >= 0 && i < n, i >= -p.padsBegin[axis] && i < n + p.padsEnd[axis])
            }
        }
        for c in 0..<C {
            for oz in 0..<OD { for oy in 0..<OH { for ox in 0..<OW {
                var best = -Double.infinity, sum = 0.0, inside = 0, padded = 0
                for tz in taps(oz, axis: 0) { for ty in taps(oy, axis: 1) { for tx in taps(ox, axis: 2) {
                    if tz.padded && ty.padded && tx.padded { padded += 1 }
                    guard tz.inside && ty.inside && tx.inside else { continue }
                    let v = x.data[((c * D + tz.index) * H + ty.index) * W + tx.index]
                    best = max(best, v)
                    sum += v
                    inside += 1
                }}}
                let divisor = p.countIncludePad ? padded : inside
                y.data[((c * OD + oz) * OH + oy) * OW + ox] = p.isMax ? best : sum / Double(divisor)
            }}}
        }
        return y
    }

    // MARK: - Normalization

    /// Group normalization with per-channel scale and bias (instance normalization is groups = C):
    /// biased variance over each group's channels and voxels, then the fused activation.
    static func groupNorm(_ x: RefTensor, groups: Int, scale: RefTensor, bias: RefTensor, node: Node) throws -> RefTensor {
        let epsilon = try node.float("epsilon", default: 1e-5)
        let act = try activation(node)
        let C = x.shape[1], spatial = x.count / C, perGroup = C / groups * spatial
        var y = x
        for g in 0..<groups {
            let range = (g * perGroup)..<((g + 1) * perGroup)
            var mean = 0.0
            for i in range { mean += x.data[i] }
            mean /= Double(perGroup)
            var variance = 0.0
            for i in range { variance += (x.data[i] - mean) * (x.data[i] - mean) }
            variance /= Double(perGroup)
            let inv = 1 / (variance + epsilon).squareRoot()
            for i in range {
                let c = i / spatial
                y.data[i] = act((x.data[i] - mean) * inv * scale.data[c] + bias.data[c])
            }
        }
        return y
    }

    // MARK: - Broadcasting

    /// numpy broadcasting of two shapes.
    static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let n = max(a.count, b.count)
        let pa = Array(repeating: 1, count: n - a.count) + a, pb = Array(repeating: 1, count: n - b.count) + b
        var out: [Int] = []
        for (u, v) in zip(pa, pb) {
            if u == v || v == 1 { out.append(u) } else if u == 1 { out.append(v) } else { return nil }
        }
        return out
    }

    /// For each element of `shape` (row-major), the offset of the element of a tensor of
    /// `from` that broadcasts onto it.
    static func broadcastOffsets(_ from: [Int], to shape: [Int]) -> [Int] {
        let padded = Array(repeating: 1, count: shape.count - from.count) + from
        var strides = [Int](repeating: 0, count: shape.count)
        var s = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = padded[axis] == 1 ? 0 : s
            s *= padded[axis]
        }
        let total = shape.reduce(1, *)
        var offsets = [Int](repeating: 0, count: total)
        for i in 0..<total {
            var rest = i, offset = 0
            for axis in stride(from: shape.count - 1, through: 0, by: -1) {
                offset += (rest % shape[axis]) * strides[axis]
                rest /= shape[axis]
            }
            offsets[i] = offset
        }
        return offsets
    }

    // MARK: - Resize

    /// ONNX Resize over the spatial axes. Nearest: the source coordinate is rounded by
    /// nearest_mode, then clamped into the input. Linear: as PyTorch, the source coordinate is
    /// clamped at 0 and the upper neighbour at size - 1 (equal to ONNX's edge extrapolation).
    static func resize(_ x: RefTensor, _ params: ResizeParameters, node: Node, like: RefTensor?) throws -> RefTensor {
        let C = x.shape[1]
        let inSize = Array(x.shape[2...])
        var outSize: [Int] = []
        var scales: [Double] = []
        for axis in 0..<3 {
            switch params.target {
            case .scales(let s):
                outSize.append(Int((Double(inSize[axis]) * s[axis]).rounded(.down)))
                scales.append(s[axis])
            case .sizes(let s):
                outSize.append(s[axis])
                scales.append(Double(s[axis]) / Double(inSize[axis]))
            case .like:
                guard let like else { throw Failure(description: "node '\(node.name)': no reference input") }
                outSize.append(like.shape[2 + axis])
                scales.append(Double(like.shape[2 + axis]) / Double(inSize[axis]))
            }
        }
        func source(_ o: Int, axis: Int) -> Double {
            let n = Double(inSize[axis]), m = outSize[axis], s = scales[axis], o = Double(o)
            switch params.transform {
            case .halfPixel: return (o + 0.5) / s - 0.5
            case .pytorchHalfPixel: return m > 1 ? (o + 0.5) / s - 0.5 : 0
            case .alignCorners: return m > 1 ? o * (n - 1) / Double(m - 1) : 0
            case .asymmetric: return o / s
            }
        }
        // Per axis and output index: the two input taps and the weight of the upper one.
        var taps: [[(Int, Int, Double)]] = []
        for axis in 0..<3 {
            let n = inSize[axis]
            taps.append((0..<outSize[axis]).map { o in
                let s = source(o, axis: axis)
                switch params.mode {
                case .nearest:
                    let r: Double
                    switch params.rounding {
                    case .roundPreferFloor: r = (s - 0.5).rounded(.up)     // ties go down
                    case .roundPreferCeil: r = (s + 0.5).rounded(.down)    // ties go up
                    case .floor: r = s.rounded(.down)
                    case .ceil: r = s.rounded(.up)
                    }
                    let i = min(max(Int(r), 0), n - 1)
                    return (i, i, 0)
                case .linear:
                    let c = max(s, 0)
                    let i0 = min(Int(c.rounded(.down)), n - 1)
                    let i1 = min(i0 + 1, n - 1)
                    return (i0, i1, i1 == i0 ? 0 : c - Double(i0))
                }
            })
        }
        let (D, H, W) = (inSize[0], inSize[1], inSize[2])
        let (OD, OH, OW) = (outSize[0], outSize[1], outSize[2])
        var y = RefTensor(zeros: [1, C, OD, OH, OW])
        for c in 0..<C {
            for oz in 0..<OD { for oy in 0..<OH { for ox in 0..<OW {
                let (z0, z1, tz) = taps[0][oz], (y0, y1, ty) = taps[1][oy], (x0, x1, tx) = taps[2][ox]
                var v = 0.0
                for (zi, wz) in [(z0, 1 - tz), (z1, tz)] { for (yi, wy) in [(y0, 1 - ty), (y1, ty)] { for (xi, wx) in [(x0, 1 - tx), (x1, tx)] {
                    v += wz * wy * wx * x.data[((c * D + zi) * H + yi) * W + xi]
                }}}
                y.data[((c * OD + oz) * OH + oy) * OW + ox] = v
            }}}
        }
        return y
    }

    // MARK: - Channel reductions

    static func softmax(_ x: RefTensor) -> RefTensor {
        let C = x.shape[1], spatial = x.count / C
        var y = x
        for i in 0..<spatial {
            var m = -Double.infinity
            for c in 0..<C { m = max(m, x.data[c * spatial + i]) }
            var s = 0.0
            for c in 0..<C { s += Foundation.exp(x.data[c * spatial + i] - m) }
            for c in 0..<C { y.data[c * spatial + i] = Foundation.exp(x.data[c * spatial + i] - m) / s }
        }
        return y
    }

    /// Index of the largest channel, the first on ties.
    static func argMax(_ x: RefTensor) -> RefTensor {
        let C = x.shape[1], spatial = x.count / C
        var y = RefTensor(zeros: [1, 1] + Array(x.shape[2...]))
        for i in 0..<spatial {
            var best = 0
            for c in 1..<max(C, 1) where x.data[c * spatial + i] > x.data[best * spatial + i] { best = c }
            y.data[i] = Double(best)
        }
        return y
    }

    // MARK: - Layout

    static func pad(_ x: RefTensor, _ p: PadParameters) -> RefTensor {
        let C = x.shape[1]
        let inSize = Array(x.shape[2...])
        let outSize = (0..<3).map { inSize[$0] + p.padsBegin[$0] + p.padsEnd[$0] }
        // Per axis and output index: the input index, or nil for the constant.
        let sources: [[Int?]] = (0..<3).map { axis in
            let n = inSize[axis]
            return (0..<outSize[axis]).map { o -> Int? in
                let i = o - p.padsBegin[axis]
                if i >= 0 && i < n { return i }
                switch p.mode {
                case .constant: return nil
                case .edge: return min(max(i, 0), n - 1)
                case .reflect: return i < 0 ? -i : 2 * (n - 1) - i
                }
            }
        }
        let (D, H, W) = (inSize[0], inSize[1], inSize[2])
        var y = RefTensor(zeros: [1, C] + outSize)
        var j = 0
        for c in 0..<C { for z in sources[0] { for yy in sources[1] { for xx in sources[2] {
            if let z, let yy, let xx { y.data[j] = x.data[((c * D + z) * H + yy) * W + xx] } else { y.data[j] = Double(p.value) }
            j += 1
        }}}}
        return y
    }

    /// ONNX Slice with positive steps: negative starts and ends count from the end, both are
    /// clamped into [0, size].
    static func slice(_ x: RefTensor, node: Node) throws -> RefTensor {
        let starts = try node.ints("starts"), ends = try node.ints("ends")
        let axes = try node.ints("axes", default: Array(0..<starts.count))
        let steps = try node.ints("steps", default: Array(repeating: 1, count: starts.count))
        _ = try SliceParameters(node: node)  // validation only
        var indices: [[Int]] = x.shape.map { Array(0..<$0) }
        for (i, a) in axes.enumerated() {
            let axis = a < 0 ? a + x.shape.count : a
            let n = x.shape[axis]
            func clampIndex(_ v: Int) -> Int { min(max(v < 0 ? v + n : v, 0), n) }
            let s = clampIndex(starts[i]), e = clampIndex(ends[i])
            indices[axis] = s < e ? Array(stride(from: s, to: e, by: steps[i])) : []
        }
        let shape = indices.map(\.count)
        var y = RefTensor(zeros: shape)
        let (D, H, W) = (x.shape[2], x.shape[3], x.shape[4])
        var j = 0
        for c in indices[1] { for z in indices[2] { for yy in indices[3] { for xx in indices[4] {
            y.data[j] = x.data[((c * D + z) * H + yy) * W + xx]
            j += 1
        }}}}
        return y
    }
}
