/// Parsed, validated attributes of each op, shared by shape inference, the executor and the
/// reference interpreter so that every part reads an attribute the same way.

/// Convolution and transposed convolution (3-D, NCDHW).
public struct ConvParameters: Equatable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    public var kernel: [Int]
    public var strides: [Int]
    public var padsBegin: [Int]
    public var padsEnd: [Int]
    public var dilations: [Int]
    public var group: Int
    public var outputPadding: [Int]
    public var transposed: Bool
    public var hasBias: Bool
    public var activation: FusedActivation

    /// `weightShape` is [K, C/group, kd, kh, kw] for Conv and [C, K/group, kd, kh, kw] for ConvTranspose.
    public init(node: Node, inputChannels: Int, weightShape: [Int], biasShape: [Int]?) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (\(node.op.rawValue)): \(m)") }
        transposed = node.op == .convTranspose
        guard weightShape.count == 5 else { throw fail("weight must be 5-D, is \(weightShape)") }
        if let auto = node.attributes["auto_pad"]?.stringValue, auto != "NOTSET" {
            throw fail("auto_pad '\(auto)' is not supported; give explicit pads")
        }
        group = try node.int("group", default: 1)
        guard group >= 1 else { throw fail("group must be >= 1") }
        kernel = Array(weightShape[2...])
        if let declared = node.attributes["kernel_shape"] {
            guard case .numbers(let ks) = declared, ks.map({ Int($0) }) == kernel else {
                throw fail("kernel_shape does not match the weight shape \(weightShape)")
            }
        }
        guard kernel.allSatisfy({ $0 >= 1 && $0 <= 15 }) else { throw fail("kernel sizes must be in 1...15, are \(kernel)") }
        strides = try node.ints("strides", count: 3, default: [1, 1, 1])
        dilations = try node.ints("dilations", count: 3, default: [1, 1, 1])
        let pads = try node.ints("pads", count: 6, default: [0, 0, 0, 0, 0, 0])
        padsBegin = Array(pads[0..<3])
        padsEnd = Array(pads[3..<6])
        outputPadding = try node.ints("output_padding", count: 3, default: [0, 0, 0])
        guard strides.allSatisfy({ $0 >= 1 && $0 <= 16 }), dilations.allSatisfy({ $0 >= 1 && $0 <= 16 }) else {
            throw fail("strides and dilations must be in 1...16")
        }
        guard pads.allSatisfy({ $0 >= 0 && $0 <= 64 }) else { throw fail("pads must be in 0...64") }
        guard outputPadding.allSatisfy({ $0 >= 0 }), zip(outputPadding, strides).allSatisfy({ $0 < max($1, 1) || $0 == 0 }) else {
            throw fail("output_padding must be smaller than the stride")
        }
        if transposed {
            inChannels = weightShape[0]
            outChannels = weightShape[1] * group
        } else {
            outChannels = weightShape[0]
            inChannels = weightShape[1] * group
            guard outChannels % group == 0 else { throw fail("output channels \(outChannels) not divisible by group \(group)") }
        }
        guard inChannels == inputChannels else {
            throw fail("weight expects \(inChannels) input channels, input has \(inputChannels)")
        }
        guard inChannels % group == 0 else { throw fail("input channels \(inChannels) not divisible by group \(group)") }
        hasBias = biasShape != nil
        if let biasShape {
            guard biasShape.reduce(1, *) == outChannels else { throw fail("bias has \(biasShape.reduce(1, *)) values, expected \(outChannels)") }
        }
        activation = try FusedActivation(node: node)
    }

    public var isDepthwise: Bool { group > 1 && group == inChannels && group == outChannels }

    public func outputSpatial(_ input: [Int]) throws -> [Int] {
        var out: [Int] = []
        for i in 0..<3 {
            let span = dilations[i] * (kernel[i] - 1) + 1
            let size: Int
            if transposed {
                size = (input[i] - 1) * strides[i] - padsBegin[i] - padsEnd[i] + span + outputPadding[i]
            } else {
                let padded = input[i] + padsBegin[i] + padsEnd[i]
                size = padded >= span ? (padded - span) / strides[i] + 1 : 0
            }
            guard size >= 1 else {
                throw CascadeSegError.invalidInput("spatial size \(input) is too small for a kernel of \(kernel) (output would be empty)")
            }
            out.append(size)
        }
        return out
    }
}

/// MaxPool and AveragePool.
public struct PoolParameters: Equatable, Sendable {
    public var kernel: [Int]
    public var strides: [Int]
    public var padsBegin: [Int]
    public var padsEnd: [Int]
    public var dilations: [Int]
    public var ceilMode: Bool
    public var countIncludePad: Bool
    public var isMax: Bool

    public init(node: Node) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (\(node.op.rawValue)): \(m)") }
        if let auto = node.attributes["auto_pad"]?.stringValue, auto != "NOTSET" { throw fail("auto_pad '\(auto)' is not supported") }
        isMax = node.op == .maxPool
        kernel = try node.ints("kernel_shape")
        guard kernel.count == 3, kernel.allSatisfy({ $0 >= 1 && $0 <= 15 }) else { throw fail("kernel_shape must be three sizes in 1...15") }
        strides = try node.ints("strides", count: 3, default: [1, 1, 1])
        dilations = try node.ints("dilations", count: 3, default: [1, 1, 1])
        let pads = try node.ints("pads", count: 6, default: [0, 0, 0, 0, 0, 0])
        padsBegin = Array(pads[0..<3])
        padsEnd = Array(pads[3..<6])
        guard strides.allSatisfy({ $0 >= 1 && $0 <= 16 }), dilations.allSatisfy({ $0 >= 1 && $0 <= 16 }),
              pads.allSatisfy({ $0 >= 0 && $0 <= 64 }) else { throw fail("strides, dilations or pads out of range") }
        guard zip(padsBegin, kernel).allSatisfy({ $0 < $1 }), zip(padsEnd, kernel).allSatisfy({ $0 < $1 }) else {
            throw fail("pads must be smaller than the kernel")
        }
        ceilMode = try node.int("ceil_mode", default: 0) != 0
        countIncludePad = try node.int("count_include_pad", default: 0) != 0
        if !isMax, dilations != [1, 1, 1] { throw fail("AveragePool has no dilations") }
    }

    public func outputSpatial(_ input: [Int]) throws -> [Int] {
        var out: [Int] = []
        for i in 0..<3 {
            let span = dilations[i] * (kernel[i] - 1) + 1
            let room = input[i] + padsBegin[i] + padsEnd[i] - span
            guard room >= 0 else { throw CascadeSegError.invalidInput("spatial size \(input) is smaller than the pooling window \(kernel)") }
            var size = (ceilMode ? (room + strides[i] - 1) / strides[i] : room / strides[i]) + 1
            // PyTorch and ONNX: the last window must start inside the input or the left padding.
            if ceilMode, (size - 1) * strides[i] >= input[i] + padsBegin[i] { size -= 1 }
            out.append(size)
        }
        return out
    }
}

/// Resize of the spatial axes.
public struct ResizeParameters: Equatable, Sendable {
    public enum Mode: String, Sendable { case nearest, linear }
    public enum CoordinateTransform: String, Sendable {
        case halfPixel = "half_pixel", alignCorners = "align_corners", asymmetric, pytorchHalfPixel = "pytorch_half_pixel"
    }
    public enum NearestRounding: String, Sendable {
        case floor, ceil, roundPreferFloor = "round_prefer_floor", roundPreferCeil = "round_prefer_ceil"
    }
    /// How the output size is found: fixed scales, fixed sizes, or the spatial size of another value.
    public enum Target: Equatable, Sendable { case scales([Double]), sizes([Int]), like(String) }

    public var mode: Mode
    public var transform: CoordinateTransform
    public var rounding: NearestRounding
    public var target: Target

    public init(node: Node) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (Resize): \(m)") }
        guard let mode = Mode(rawValue: try node.string("mode", default: "nearest")) else { throw fail("mode must be nearest or linear") }
        self.mode = mode
        guard let t = CoordinateTransform(rawValue: try node.string("coordinate_transformation_mode", default: "half_pixel")) else {
            throw fail("unsupported coordinate_transformation_mode")
        }
        transform = t
        guard let r = NearestRounding(rawValue: try node.string("nearest_mode", default: "round_prefer_floor")) else {
            throw fail("unsupported nearest_mode")
        }
        rounding = r
        if let like = node.input(1) {
            target = .like(like)
        } else if node.attributes["sizes"] != nil {
            let sizes = try node.ints("sizes")
            guard sizes.count == 3, sizes.allSatisfy({ $0 >= 1 && $0 <= 1 << 16 }) else { throw fail("sizes must be three positive sizes") }
            target = .sizes(sizes)
        } else {
            let scales = try node.floats("scales")
            guard scales.count == 3, scales.allSatisfy({ $0 > 0 && $0 <= 64 }) else { throw fail("scales must be three values in (0, 64]") }
            target = .scales(scales)
        }
    }

    public func outputSpatial(_ input: [Int], likeShape: [Int]?) throws -> [Int] {
        switch target {
        case .scales(let s):
            let out = (0..<3).map { Int((Double(input[$0]) * s[$0]).rounded(.down)) }
            guard out.allSatisfy({ $0 >= 1 }) else { throw CascadeSegError.invalidInput("Resize of \(input) by \(s) is empty") }
            return out
        case .sizes(let s): return s
        case .like:
            guard let likeShape, likeShape.count == 5 else { throw CascadeSegError.invalidGraph("Resize reference value must be 5-D") }
            return Array(likeShape[2...])
        }
    }

    /// The scale used in coordinate mapping for one axis (ONNX: output / input unless scales are given).
    public func scale(axis: Int, input: Int, output: Int) -> Double {
        if case .scales(let s) = target { return s[axis] }
        return Double(output) / Double(input)
    }
}

/// Constant, reflect or edge padding of the spatial axes.
public struct PadParameters: Equatable, Sendable {
    public enum Mode: String, Sendable { case constant, reflect, edge }
    public var padsBegin: [Int]
    public var padsEnd: [Int]
    public var mode: Mode
    public var value: Float

    public init(node: Node) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (Pad): \(m)") }
        let pads = try node.ints("pads")
        guard pads.count == 6, pads.allSatisfy({ $0 >= 0 && $0 <= 4096 }) else {
            throw fail("pads must be six non-negative spatial pads (begin d,h,w then end d,h,w)")
        }
        padsBegin = Array(pads[0..<3])
        padsEnd = Array(pads[3..<6])
        guard let m = Mode(rawValue: try node.string("mode", default: "constant")) else { throw fail("mode must be constant, reflect or edge") }
        mode = m
        value = Float(try node.float("value", default: 0))
    }

    public func outputSpatial(_ input: [Int]) throws -> [Int] {
        if mode == .reflect {
            for i in 0..<3 where padsBegin[i] >= input[i] || padsEnd[i] >= input[i] {
                throw CascadeSegError.invalidInput("reflect padding of \(padsBegin)/\(padsEnd) needs sizes larger than the pads, input is \(input)")
            }
        }
        return (0..<3).map { input[$0] + padsBegin[$0] + padsEnd[$0] }
    }
}

/// Slice along channel and spatial axes (ONNX semantics: negative indices count from the end,
/// bounds are clamped). Only positive steps.
public struct SliceParameters: Equatable, Sendable {
    public var starts: [Int]
    public var ends: [Int]
    public var axes: [Int]
    public var steps: [Int]

    public init(node: Node) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidGraph("node '\(node.name)' (Slice): \(m)") }
        starts = try node.ints("starts")
        ends = try node.ints("ends")
        // ONNX's default axes are 0..<n; axis 0 (the batch of one) may only be kept whole.
        axes = try node.ints("axes", default: Array(0..<starts.count))
        steps = try node.ints("steps", default: Array(repeating: 1, count: starts.count))
        guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
            throw fail("starts, ends, axes and steps must have the same length")
        }
        guard axes.allSatisfy({ (-5...4).contains($0) }), Set(axes.map { ($0 + 5) % 5 }).count == axes.count else {
            throw fail("axes must be distinct axes in -5...4")
        }
        axes = axes.map { ($0 + 5) % 5 }
        if let i = axes.firstIndex(of: 0) {
            guard starts[i] == 0 || starts[i] == -1, ends[i] >= 1, steps[i] == 1 else {
                throw fail("slicing the batch axis is not supported (batch is always 1)")
            }
            starts.remove(at: i); ends.remove(at: i); axes.remove(at: i); steps.remove(at: i)
        }
        guard steps.allSatisfy({ $0 >= 1 }) else { throw fail("only positive steps are supported") }
    }

    /// Per axis (0...4): start and step, and the output shape.
    public func resolve(_ shape: [Int]) throws -> (starts: [Int], steps: [Int], shape: [Int]) {
        var start = [0, 0, 0, 0, 0], step = [1, 1, 1, 1, 1], out = shape
        for (i, axis) in axes.enumerated() {
            let n = shape[axis]
            func clampIndex(_ v: Int) -> Int { min(max(v < 0 ? v + n : v, 0), n) }
            let s = clampIndex(starts[i]), e = clampIndex(ends[i])
            start[axis] = s
            step[axis] = steps[i]
            out[axis] = e > s ? (e - s + steps[i] - 1) / steps[i] : 0
            guard out[axis] >= 1 else { throw CascadeSegError.invalidInput("Slice on axis \(axis) of \(shape) is empty") }
        }
        return (start, step, out)
    }
}

/// How a second operand broadcasts against a 5-D activation (numpy rules, restricted to the
/// forms 3-D networks use).
public enum Broadcast: Equatable, Sendable {
    case same, perChannel, scalar

    public static func classify(_ other: [Int], against shape: [Int]) -> Broadcast? {
        guard other.count <= 5 else { return nil }
        if other == shape { return .same }
        let padded = Array(repeating: 1, count: 5 - other.count) + other
        if padded.allSatisfy({ $0 == 1 }) { return .scalar }
        if padded[0] == 1, padded[1] == shape[1], padded[2...].allSatisfy({ $0 == 1 }) { return .perChannel }
        if padded == shape { return .same }
        return nil
    }
}
