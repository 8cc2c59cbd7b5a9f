/// The operators the engine executes. Names and attribute conventions follow ONNX (opset 17)
/// so that converted graphs read the same; docs/FORMAT.md lists where the engine differs.
public enum OpType: String, Codable, CaseIterable, Sendable {
    case conv = "Conv"
    case convTranspose = "ConvTranspose"
    case maxPool = "MaxPool"
    case averagePool = "AveragePool"
    case instanceNormalization = "InstanceNormalization"
    case groupNormalization = "GroupNormalization"
    case batchNormalization = "BatchNormalization"
    case relu = "Relu"
    case leakyRelu = "LeakyRelu"
    case prelu = "PRelu"
    case sigmoid = "Sigmoid"
    case tanh = "Tanh"
    case add = "Add"
    case mul = "Mul"
    case concat = "Concat"
    case resize = "Resize"
    case softmax = "Softmax"
    case argMax = "ArgMax"
    case pad = "Pad"
    case slice = "Slice"
    case identity = "Identity"
}

/// An elementwise activation that a producer kernel (conv, norm, add) may apply to its output
/// before storing it, saving a full read and write of the tensor.
public enum FusedActivation: Equatable, Sendable {
    case none
    case relu
    case leakyRelu(alpha: Float)
    case sigmoid
    case tanh

    /// Parses the `activation` / `activation_alpha` attribute pair of a node.
    public init(node: Node) throws {
        let name: String
        switch node.attributes["activation"] {
        case nil: name = "none"
        case .string(let s)?: name = s
        default: throw CascadeSegError.invalidGraph("node '\(node.name)': attribute 'activation' must be a string")
        }
        switch name {
        case "none": self = .none
        case "relu": self = .relu
        case "leaky_relu": self = .leakyRelu(alpha: Float(try node.float("activation_alpha", default: 0.01)))
        case "sigmoid": self = .sigmoid
        case "tanh": self = .tanh
        case let other: throw CascadeSegError.invalidGraph("node '\(node.name)': unknown fused activation '\(other)'")
        }
    }

    /// The code and parameter handed to kernels (see Kernels/common.h, `activate`).
    var kernelCode: (Int, Float) {
        switch self {
        case .none: return (0, 0)
        case .relu: return (1, 0)
        case .leakyRelu(let a): return (2, a)
        case .sigmoid: return (3, 0)
        case .tanh: return (4, 0)
        }
    }
}
