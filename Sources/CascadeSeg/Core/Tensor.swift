/// A dense float32 tensor in host memory, row-major (C order). Activations are NCDHW with N = 1.
public struct Tensor: Equatable, Sendable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "tensor data does not match its shape")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
}

/// Multiplies dimensions, refusing negative sizes and overflow. Used wherever a shape comes
/// from an untrusted file.
public func checkedElementCount(_ shape: [Int], limit: Int = Int.max) -> Int? {
    var product = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = product.multipliedReportingOverflow(by: d)
        guard !overflow, p <= limit else { return nil }
        product = p
    }
    return product
}
