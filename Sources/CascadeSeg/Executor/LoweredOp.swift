/// A node prepared for one device: its parsed parameters, which kernel runs it, and the
/// device copies of the weights it reads (in the layout that kernel wants).
enum LoweredOp {
    /// `blocked`: register-blocked, group 1, dilation 1, x stride 1 or 2. `general`: anything else.
    enum ConvKernel { case blocked, general, transposeK2S2, transposeGeneral }

    struct Conv {
        var params: ConvParameters
        var kernel: ConvKernel
        var blockSize: Int
        var program: CompiledProgram
        var weights: DeviceBuffer
        var bias: DeviceBuffer
    }

    struct Norm {
        var groups: Int
        var epsilon: Float
        var activation: FusedActivation
        var scale: DeviceBuffer
        var bias: DeviceBuffer
    }

    case conv(Conv)
    case pool(PoolParameters)
    case norm(Norm)
    case channelAffine(scale: DeviceBuffer, shift: DeviceBuffer)
    case unary(FusedActivation)
    case prelu(slope: DeviceBuffer, perChannel: Bool)
    /// Add or Mul; `constant` replaces the second activation input when it is a weight.
    case binary(isMul: Bool, constant: DeviceBuffer?, swapped: Bool, activation: FusedActivation)
    case concat
    case resize(ResizeParameters)
    case softmax
    case argMax
    case pad(PadParameters)
    case slice(SliceParameters)
    case identity

    /// Whether the output may share the storage of input 0 (elementwise, same size).
    var canRunInPlace: Bool {
        switch self {
        case .norm, .channelAffine, .unary, .prelu, .identity: return true
        case .binary(_, _, let swapped, _): return !swapped
        default: return false
        }
    }

    /// Device bytes of the weights this node holds.
    var deviceBytes: Int {
        switch self {
        case .conv(let c): return c.weights.byteCount + c.bias.byteCount
        case .norm(let n): return n.scale.byteCount + n.bias.byteCount
        case .channelAffine(let scale, let shift): return scale.byteCount + shift.byteCount
        case .prelu(let slope, _): return slope.byteCount
        case .binary(_, let constant, _, _): return constant?.byteCount ?? 0
        default: return 0
        }
    }
}
