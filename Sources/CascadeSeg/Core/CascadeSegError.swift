/// Every failure the engine reports. Each case carries enough context for a user to act on it.
public enum CascadeSegError: Error, CustomStringConvertible, Equatable {
    /// A model file that is malformed, truncated, corrupted or hostile.
    case invalidModel(String)
    /// A graph that cannot be executed as written (unknown op, bad attribute, shape mismatch).
    case invalidGraph(String)
    /// Input data (a tensor, an array file) that does not fit what was asked of it.
    case invalidInput(String)
    /// An OpenCL call failed; `operation` names what the engine was doing.
    case openCL(operation: String, code: Int32, codeName: String)
    /// An OpenCL program failed to build; the build log is attached.
    case kernelBuild(program: String, log: String)
    /// No OpenCL platform or no device matching the request.
    case noDevice(String)
    /// A memory budget or allocation cap that cannot be met.
    case budget(String)
    /// Reading or writing a file failed.
    case io(String)
    /// Command-line usage errors.
    case usage(String)
    /// The caller cancelled the work (`CancellationToken.cancel()`) before it finished; the
    /// string says where it stopped. Nothing was written.
    case cancelled(String)

    public var description: String {
        switch self {
        case .invalidModel(let m): return "invalid model file: \(m)"
        case .invalidGraph(let m): return "invalid graph: \(m)"
        case .invalidInput(let m): return "invalid input: \(m)"
        case .openCL(let op, let code, let name): return "OpenCL error \(name) (\(code)) while \(op)"
        case .kernelBuild(let program, let log): return "OpenCL program '\(program)' failed to build:\n\(log)"
        case .noDevice(let m): return "no OpenCL device: \(m)"
        case .budget(let m): return "memory budget: \(m)"
        case .io(let m): return "I/O error: \(m)"
        case .usage(let m): return m
        case .cancelled(let m): return "cancelled: \(m)"
        }
    }
}
