import Foundation

/// Evaluates ONNX operators on values known at conversion time: Constant nodes, arithmetic on
/// weights, and the shape subgraphs exporters emit around Resize, Pad and Reshape
/// (Shape -> Gather -> Unsqueeze -> Concat -> Cast, ConstantOfShape -> Concat -> Reshape ->
/// Slice -> Transpose ...). Shape vectors may hold symbols (an axis of a runtime tensor); they
/// pass through the indexing ops (Gather, Slice, Concat, Unsqueeze, Squeeze, Reshape, Cast to
/// an integer type) and stop at arithmetic.
enum OnnxConstantFolder {
    /// Operators this folder evaluates when all their inputs are known.
    static let foldable: Set<String> = [
        "Constant", "ConstantOfShape", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice",
        "Reshape", "Transpose", "Cast", "Identity", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg",
        "Reciprocal", "Floor", "Ceil", "Abs", "Equal", "Where", "Expand", "Range", "Min", "Max",
    ]

    static func fail(_ node: OnnxNodeProto, _ message: String) -> CascadeSegError {
        .invalidGraph("node '\(node.name)' (\(node.opType)): \(message)")
    }

    static func ints(_ c: OnnxConstant?, _ node: OnnxNodeProto, _ what: String) throws -> [Int64] {
        guard let c else { throw fail(node, "\(what) is missing") }
        guard let v = c.ints else { throw fail(node, "\(what) must be integers known at conversion time") }
        return v
    }

    static func attributeInts(_ node: OnnxNodeProto, _ name: String) -> [Int64]? {
        node.attribute(name).map { $0.ints }
    }

    static func attributeInt(_ node: OnnxNodeProto, _ name: String, default value: Int64) -> Int64 {
        node.attribute(name)?.i ?? value
    }

    static func axis(_ a: Int64, rank: Int, _ node: OnnxNodeProto) throws -> Int {
        guard a >= -Int64(rank), a < Int64(max(rank, 1)) else { throw fail(node, "axis \(a) is out of range for rank \(rank)") }
        return Int(a < 0 ? a + Int64(rank) : a)
    }

    static func checkSize(_ shape: [Int], _ node: OnnxNodeProto) throws -> Int {
        guard let n = checkedElementCount(shape, limit: OnnxConstant.maxFoldedElements) else {
            throw fail(node, "constant of shape \(shape) is negative or larger than 2^26 elements")
        }
        return n
    }

    /// A TensorProto as a constant (floats for floating types, integers otherwise).
    static func constant(_ t: OnnxTensorProto, baseDirectory: String?) throws -> OnnxConstant {
        let shape = try t.shape()
        switch t.type {
        case .float?, .float16?, .double?, .bfloat16?:
            return OnnxConstant(floats: try t.floatValues(baseDirectory: baseDirectory), shape: shape)
        case nil, .string?:
            throw CascadeSegError.invalidModel("ONNX tensor '\(t.name)': data type \(t.dataType) is not supported")
        default:
            return OnnxConstant(ints: try t.int64Values(baseDirectory: baseDirectory), shape: shape)
        }
    }

    /// The outputs of `node`, or nil when it cannot be evaluated here. `inputs` holds one entry
    /// per input name (nil for omitted or non-constant inputs); callers only pass nodes whose
    /// non-empty inputs are all known.
    static func evaluate(_ node: OnnxNodeProto, inputs: [OnnxConstant?], opset: Int64,
                         baseDirectory: String?) throws -> [OnnxConstant]? {
        func input(_ i: Int) -> OnnxConstant? { i < inputs.count ? inputs[i] : nil }
        func required(_ i: Int) throws -> OnnxConstant {
            guard let c = input(i) else { throw fail(node, "input \(i) is missing") }
            return c
        }
        switch node.opType {
        case "Constant":
            guard let a = node.attributes.first else { throw fail(node, "has no value attribute") }
            switch a.name {
            case "value":
                guard let t = a.t else { throw fail(node, "value is not a tensor") }
                return [try constant(t, baseDirectory: baseDirectory)]
            case "value_float": return [OnnxConstant(floats: [a.f ?? 0], shape: [])]
            case "value_floats": return [OnnxConstant(floats: a.floats, shape: [a.floats.count])]
            case "value_int": return [OnnxConstant(ints: [a.i ?? 0], shape: [])]
            case "value_ints": return [OnnxConstant(ints: a.ints, shape: [a.ints.count])]
            default: throw fail(node, "constant '\(a.name)' values are not supported")
            }

        case "ConstantOfShape":
            let shape = try ints(input(0), node, "shape").map { Int(clamping: $0) }
            let n = try checkSize(shape, node)
            var fill = OnnxConstant(floats: [0], shape: [1])
            if let t = node.attribute("value")?.t { fill = try constant(t, baseDirectory: baseDirectory) }
            guard fill.count == 1 else { throw fail(node, "value must have one element") }
            return [fill.gather([Int](repeating: 0, count: n), shape: shape)]

        case "Shape":
            let x = try required(0)
            var dims = x.shape.map { Int64($0) }
            let rank = dims.count
            var start = attributeInt(node, "start", default: 0), end = attributeInt(node, "end", default: Int64(rank))
            if start < 0 { start += Int64(rank) }
            if end < 0 { end += Int64(rank) }
            start = min(max(start, 0), Int64(rank)); end = min(max(end, start), Int64(rank))
            dims = Array(dims[Int(start)..<Int(end)])
            return [OnnxConstant(ints: dims, shape: [dims.count])]

        case "Size":
            return [OnnxConstant(ints: [Int64(try required(0).count)], shape: [])]

        case "Identity":
            return [try required(0)]

        case "Gather":
            let data = try required(0)
            let indices = try required(1)
            let rank = data.shape.count
            guard rank >= 1 else { throw fail(node, "cannot gather from a scalar") }
            let ax = try axis(attributeInt(node, "axis", default: 0), rank: rank, node)
            let dim = data.shape[ax]
            let idx = try ints(indices, node, "indices").map { i -> Int in
                let j = i < 0 ? i + Int64(dim) : i
                guard j >= 0, j < Int64(dim) else { throw fail(node, "index \(i) is out of range for size \(dim)") }
                return Int(j)
            }
            let outer = data.shape[..<ax].reduce(1, *), inner = data.shape[(ax + 1)...].reduce(1, *)
            let shape = Array(data.shape[..<ax]) + indices.shape + Array(data.shape[(ax + 1)...])
            _ = try checkSize(shape, node)
            var flat: [Int] = []
            flat.reserveCapacity(outer * idx.count * inner)
            for o in 0..<outer { for i in idx { for k in 0..<inner { flat.append((o * dim + i) * inner + k) } } }
            return [data.gather(flat, shape: shape)]

        case "Unsqueeze":
            let data = try required(0)
            let axesRaw = opset >= 13 ? try ints(input(1), node, "axes") : (attributeInts(node, "axes") ?? [])
            let outRank = data.shape.count + axesRaw.count
            let axes = try Set(axesRaw.map { try axis($0, rank: outRank, node) })
            guard axes.count == axesRaw.count else { throw fail(node, "repeated axes") }
            var shape: [Int] = []
            var it = data.shape.makeIterator()
            for i in 0..<outRank { shape.append(axes.contains(i) ? 1 : it.next()!) }
            return [data.reshaped(shape)]

        case "Squeeze":
            let data = try required(0)
            let axesRaw: [Int64]? = opset >= 13 ? try input(1).map { try ints($0, node, "axes") } : attributeInts(node, "axes")
            let rank = data.shape.count
            let axes = try Set((axesRaw ?? (0..<rank).filter { data.shape[$0] == 1 }.map { Int64($0) }).map { try axis($0, rank: rank, node) })
            for a in axes where data.shape[a] != 1 { throw fail(node, "cannot squeeze axis \(a) of size \(data.shape[a])") }
            return [data.reshaped(data.shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element))]

        case "Concat":
            let parts = try (0..<inputs.count).compactMap { i -> OnnxConstant? in node.input(i) == nil ? nil : try required(i) }
            guard let first = parts.first else { throw fail(node, "has no inputs") }
            let rank = first.shape.count
            guard rank >= 1 else { throw fail(node, "cannot concatenate scalars") }
            let ax = try axis(attributeInt(node, "axis", default: 0), rank: rank, node)
            for p in parts where p.shape.count != rank || (0..<rank).contains(where: { $0 != ax && p.shape[$0] != first.shape[$0] }) {
                throw fail(node, "inputs of shapes \(first.shape) and \(p.shape) cannot be concatenated on axis \(ax)")
            }
            var shape = first.shape
            shape[ax] = parts.reduce(0) { $0 + $1.shape[ax] }
            _ = try checkSize(shape, node)
            let outer = first.shape[..<ax].reduce(1, *), inner = first.shape[(ax + 1)...].reduce(1, *)
            var flat: [(part: Int, index: Int)] = []
            for o in 0..<outer {
                for (pi, p) in parts.enumerated() {
                    let run = p.shape[ax] * inner
                    for j in 0..<run { flat.append((pi, o * run + j)) }
                }
            }
            return [OnnxConstant.concatenated(parts, indices: flat, shape: shape)]

        case "Slice":
            let data = try required(0)
            let rank = data.shape.count
            var starts: [Int64], ends: [Int64], axes: [Int64]?, steps: [Int64]?
            if opset >= 10 {
                starts = try ints(input(1), node, "starts")
                ends = try ints(input(2), node, "ends")
                axes = try input(3).map { try ints($0, node, "axes") }
                steps = try input(4).map { try ints($0, node, "steps") }
            } else {
                starts = attributeInts(node, "starts") ?? []
                ends = attributeInts(node, "ends") ?? []
                axes = attributeInts(node, "axes")
                steps = nil
            }
            let axesList = try (axes ?? (0..<Int64(starts.count)).map { $0 }).map { try axis($0, rank: rank, node) }
            let stepList = steps ?? [Int64](repeating: 1, count: starts.count)
            guard ends.count == starts.count, axesList.count == starts.count, stepList.count == starts.count else {
                throw fail(node, "starts, ends, axes and steps differ in length")
            }
            var begin = [Int](repeating: 0, count: rank), step = [Int](repeating: 1, count: rank), shape = data.shape
            for (i, a) in axesList.enumerated() {
                let dim = Int64(data.shape[a]), s = stepList[i]
                guard s != 0, s != .min else { throw fail(node, "invalid step \(s)") }
                var b = starts[i], e = ends[i]
                if b < 0 { b = b &+ dim }
                if e < 0 { e = e &+ dim }
                if s > 0 {
                    b = min(max(b, 0), dim); e = min(max(e, 0), dim)
                    shape[a] = e > b ? Int((e - b - 1) / s + 1) : 0
                } else {
                    b = min(max(b, 0), dim - 1); e = min(max(e, -1), dim - 1)
                    shape[a] = b > e ? Int((b - e - 1) / (-s) + 1) : 0
                }
                begin[a] = Int(b); step[a] = Int(s)
            }
            let n = try checkSize(shape, node)
            let strides = OnnxConstant.strides(data.shape)
            var flat = [Int](repeating: 0, count: n)
            var index = [Int](repeating: 0, count: rank)
            for k in 0..<n {
                var offset = 0
                for d in 0..<rank { offset += (begin[d] + index[d] * step[d]) * strides[d] }
                flat[k] = offset
                var d = rank - 1
                while d >= 0 { index[d] += 1; if index[d] < shape[d] { break }; index[d] = 0; d -= 1 }
            }
            return [data.gather(flat, shape: shape)]

        case "Reshape":
            let data = try required(0)
            let target = try ints(input(1), node, "shape")
            let allowZero = attributeInt(node, "allowzero", default: 0) != 0
            return [data.reshaped(try reshapeTarget(target, from: data.shape, allowZero: allowZero, node))]

        case "Transpose":
            let data = try required(0)
            let rank = data.shape.count
            let perm = try (attributeInts(node, "perm") ?? (0..<Int64(rank)).reversed()).map { try axis($0, rank: rank, node) }
            guard Set(perm).count == rank, perm.count == rank else { throw fail(node, "perm \(perm) is not a permutation") }
            let shape = perm.map { data.shape[$0] }
            let inStrides = OnnxConstant.strides(data.shape)
            let n = data.count
            var flat = [Int](repeating: 0, count: n)
            var index = [Int](repeating: 0, count: rank)
            for k in 0..<n {
                var offset = 0
                for d in 0..<rank { offset += index[d] * inStrides[perm[d]] }
                flat[k] = offset
                var d = rank - 1
                while d >= 0 { index[d] += 1; if index[d] < shape[d] { break }; index[d] = 0; d -= 1 }
            }
            return [data.gather(flat, shape: shape)]

        case "Cast":
            let data = try required(0)
            guard let to = node.attribute("to")?.i, let type = OnnxTensorProto.DataType(rawValue: Int32(truncatingIfNeeded: to)) else {
                throw fail(node, "missing or unknown 'to' type")
            }
            switch type {
            case .float, .double, .float16, .bfloat16:
                guard var values = data.floats else { return nil }  // a symbolic shape cast to float
                if type == .float16 { values = values.map { Float16Conversion.toFloat(Float16Conversion.fromFloat($0)) } }
                return [OnnxConstant(floats: values, shape: data.shape)]
            case .string:
                return nil
            case .bool:
                guard let d = data.doubles else { return nil }
                return [OnnxConstant(ints: d.map { $0 != 0 ? 1 : 0 }, shape: data.shape)]
            default:
                if case .floats(let v) = data.storage {
                    return [OnnxConstant(ints: v.map { $0.isFinite ? Int64(clamping: Int(exactly: $0.rounded(.towardZero)) ?? 0) : 0 }, shape: data.shape)]
                }
                return [data]
            }

        case "Add", "Sub", "Mul", "Div", "Pow", "Equal", "Min", "Max":
            let parts = try (0..<inputs.count).map { try required($0) }
            guard parts.count >= 2, node.opType == "Min" || node.opType == "Max" || parts.count == 2 else {
                throw fail(node, "expects two inputs")
            }
            var acc = parts[0]
            for p in parts.dropFirst() {
                guard let r = try binary(node, acc, p) else { return nil }
                acc = r
            }
            return [acc]

        case "Sqrt", "Neg", "Reciprocal", "Floor", "Ceil", "Abs":
            let x = try required(0)
            if case .ints(let v) = x.storage, ["Neg", "Abs", "Floor", "Ceil"].contains(node.opType) {
                let r: [Int64] = node.opType == "Neg" ? v.map { 0 &- $0 } : node.opType == "Abs" ? v.map { $0 == .min ? .max : abs($0) } : v
                return [OnnxConstant(ints: r, shape: x.shape)]
            }
            guard let v = x.doubles else { return nil }
            let f: (Double) -> Double
            switch node.opType {
            case "Sqrt": f = { $0.squareRoot() }
            case "Neg": f = { -$0 }
            case "Reciprocal": f = { 1 / $0 }
            case "Floor": f = { $0.rounded(.down) }
            case "Ceil": f = { $0.rounded(.up) }
            default: f = { abs($0) }
            }
            return [OnnxConstant(floats: v.map { Float(f($0)) }, shape: x.shape)]

        case "Where":
            let c = try required(0), x = try required(1), y = try required(2)
            guard let cv = c.doubles, let xy = broadcastShape(broadcastShape(c.shape, x.shape), y.shape) else {
                if c.doubles == nil { return nil }
                throw fail(node, "shapes \(c.shape), \(x.shape), \(y.shape) do not broadcast")
            }
            _ = try checkSize(xy, node)
            let ci = broadcastIndices(from: c.shape, to: xy), xi = broadcastIndices(from: x.shape, to: xy), yi = broadcastIndices(from: y.shape, to: xy)
            // Symbols may be picked (shape arithmetic), unless they would mix with floats.
            if (x.isFloat || y.isFloat) && (x.doubles == nil || y.doubles == nil) { return nil }
            let picks = (0..<ci.count).map { cv[ci[$0]] != 0 ? (part: 0, index: xi[$0]) : (part: 1, index: yi[$0]) }
            return [OnnxConstant.concatenated([x, y], indices: picks, shape: xy)]

        case "Expand":
            let x = try required(0)
            let target = try ints(input(1), node, "shape").map { Int(clamping: $0) }
            guard let shape = broadcastShape(x.shape, target) else { throw fail(node, "cannot expand \(x.shape) to \(target)") }
            _ = try checkSize(shape, node)
            return [x.gather(broadcastIndices(from: x.shape, to: shape), shape: shape)]

        case "Range":
            guard let start = try required(0).doubles?.first, let limit = try required(1).doubles?.first,
                  let delta = try required(2).doubles?.first, delta != 0 else { return nil }
            let steps = ((limit - start) / delta).rounded(.up)
            guard steps.isFinite, steps <= Double(OnnxConstant.maxFoldedElements) else { throw fail(node, "range is too long") }
            let n = max(Int(steps), 0)
            let values = (0..<n).map { start + Double($0) * delta }
            if try required(0).isFloat { return [OnnxConstant(floats: values.map { Float($0) }, shape: [n])] }
            guard values.allSatisfy({ abs($0) < 9e18 }) else { throw fail(node, "range values overflow int64") }
            return [OnnxConstant(ints: values.map { Int64($0) }, shape: [n])]

        default:
            return nil
        }
    }

    /// Resolves a Reshape target (0 copies the input dimension unless allowzero, -1 is inferred).
    static func reshapeTarget(_ target: [Int64], from shape: [Int], allowZero: Bool, _ node: OnnxNodeProto) throws -> [Int] {
        let total = shape.reduce(1, *)
        var out: [Int] = []
        var inferred: Int? = nil
        for (i, t) in target.enumerated() {
            if t == -1 {
                guard inferred == nil else { throw fail(node, "more than one -1 in shape \(target)") }
                inferred = i
                out.append(1)
            } else if t == 0 && !allowZero {
                guard i < shape.count else { throw fail(node, "shape \(target) copies axis \(i), which the input \(shape) lacks") }
                out.append(shape[i])
            } else {
                guard t >= 0, t <= Int64(OnnxConstant.maxFoldedElements) else { throw fail(node, "invalid dimension \(t) in shape \(target)") }
                out.append(Int(t))
            }
        }
        if let i = inferred {
            let rest = out.reduce(1, *)
            guard rest > 0, total % rest == 0 else { throw fail(node, "cannot reshape \(shape) to \(target)") }
            out[i] = total / rest
        }
        guard checkedElementCount(out) == total else { throw fail(node, "cannot reshape \(shape) to \(target)") }
        return out
    }

    /// numpy broadcasting of two shapes.
    static func broadcastShape(_ a: [Int]?, _ b: [Int]) -> [Int]? {
        guard let a else { return nil }
        let rank = max(a.count, b.count)
        let pa = [Int](repeating: 1, count: rank - a.count) + a, pb = [Int](repeating: 1, count: rank - b.count) + b
        var out: [Int] = []
        for (x, y) in zip(pa, pb) {
            if x == y || y == 1 { out.append(x) } else if x == 1 { out.append(y) } else { return nil }
        }
        return out
    }

    /// For each element of `shape` (C order), the index of the element of a `from`-shaped
    /// tensor that broadcasts to it.
    static func broadcastIndices(from: [Int], to shape: [Int]) -> [Int] {
        let rank = shape.count
        let padded = [Int](repeating: 1, count: rank - from.count) + from
        let strides = OnnxConstant.strides(padded)
        let n = shape.reduce(1, *)
        var out = [Int](repeating: 0, count: n)
        var index = [Int](repeating: 0, count: rank)
        for k in 0..<n {
            var offset = 0
            for d in 0..<rank where padded[d] != 1 { offset += index[d] * strides[d] }
            out[k] = offset
            var d = rank - 1
            while d >= 0 { index[d] += 1; if index[d] < shape[d] { break }; index[d] = 0; d -= 1 }
        }
        return out
    }

    static func binary(_ node: OnnxNodeProto, _ a: OnnxConstant, _ b: OnnxConstant) throws -> OnnxConstant? {
        guard let av = a.doubles, let bv = b.doubles else { return nil }
        guard let shape = broadcastShape(a.shape, b.shape) else {
            throw fail(node, "shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        _ = try checkSize(shape, node)
        let ai = broadcastIndices(from: a.shape, to: shape), bi = broadcastIndices(from: b.shape, to: shape)
        let op = node.opType
        if op == "Equal" {
            return OnnxConstant(ints: (0..<ai.count).map { av[ai[$0]] == bv[bi[$0]] ? 1 : 0 }, shape: shape)
        }
        if let ia = a.ints, let ib = b.ints {
            var out = [Int64](repeating: 0, count: ai.count)
            for k in 0..<out.count {
                let x = ia[ai[k]], y = ib[bi[k]]
                switch op {
                case "Add": out[k] = x &+ y
                case "Sub": out[k] = x &- y
                case "Mul": out[k] = x &* y
                case "Div":
                    guard y != 0 else { throw fail(node, "integer division by zero") }
                    out[k] = x == .min && y == -1 ? .max : x / y
                case "Min": out[k] = min(x, y)
                case "Max": out[k] = max(x, y)
                default:
                    guard y >= 0, y < 64 else { return nil }
                    var p: Int64 = 1
                    for _ in 0..<y { p = p &* x }
                    out[k] = p
                }
            }
            return OnnxConstant(ints: out, shape: shape)
        }
        var out = [Float](repeating: 0, count: ai.count)
        for k in 0..<out.count {
            let x = av[ai[k]], y = bv[bi[k]]
            let r: Double
            switch op {
            case "Add": r = x + y
            case "Sub": r = x - y
            case "Mul": r = x * y
            case "Div": r = x / y
            case "Min": r = min(x, y)
            case "Max": r = max(x, y)
            default: r = Foundation.pow(x, y)
            }
            // Float32 arithmetic, as the ONNX runtime would do it on float tensors.
            out[k] = a.isFloat && b.isFloat ? Self.float32(op, Float(x), Float(y)) ?? Float(r) : Float(r)
        }
        return OnnxConstant(floats: out, shape: shape)
    }

    static func float32(_ op: String, _ x: Float, _ y: Float) -> Float? {
        switch op {
        case "Add": return x + y
        case "Sub": return x - y
        case "Mul": return x * y
        case "Div": return x / y
        default: return nil
        }
    }
}
