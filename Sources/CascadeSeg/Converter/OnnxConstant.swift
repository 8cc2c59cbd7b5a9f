/// A value the converter knows at conversion time: a weight, a folded constant, or a shape
/// vector whose entries may be symbolic (the size of axis `axis` of runtime value `value`).
struct OnnxConstant {
    /// One entry of a shape vector: known, or an axis size of a runtime tensor.
    enum SymbolicDim: Hashable, CustomStringConvertible {
        case known(Int64)
        case dim(value: String, axis: Int)

        var description: String {
            switch self {
            case .known(let v): return String(v)
            case .dim(let v, let a): return "\(v).shape[\(a)]"
            }
        }
    }

    enum Storage {
        case floats([Float])
        case ints([Int64])
        case symbolic([SymbolicDim])
    }

    var shape: [Int]
    var storage: Storage

    /// Largest constant the folder materializes (elements).
    static let maxFoldedElements = 1 << 26

    init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
        if case .symbolic(let dims) = storage, dims.allSatisfy({ if case .known = $0 { return true }; return false }) {
            self.storage = .ints(dims.map { if case .known(let v) = $0 { return v }; return 0 })
        }
    }

    init(floats: [Float], shape: [Int]) { self.init(shape: shape, storage: .floats(floats)) }
    init(ints: [Int64], shape: [Int]) { self.init(shape: shape, storage: .ints(ints)) }

    var count: Int {
        switch storage {
        case .floats(let v): return v.count
        case .ints(let v): return v.count
        case .symbolic(let v): return v.count
        }
    }

    var isFloat: Bool { if case .floats = storage { return true }; return false }

    /// Integer values (nil for floats or unresolved symbols).
    var ints: [Int64]? { if case .ints(let v) = storage { return v }; return nil }

    /// Numeric values as Double (nil for unresolved symbols).
    var doubles: [Double]? {
        switch storage {
        case .floats(let v): return v.map(Double.init)
        case .ints(let v): return v.map(Double.init)
        case .symbolic: return nil
        }
    }

    /// Values as Float, for weights.
    var floats: [Float]? {
        switch storage {
        case .floats(let v): return v
        case .ints(let v): return v.map(Float.init)
        case .symbolic: return nil
        }
    }

    /// Entries as symbolic dims (numbers must be integral).
    var symbolicDims: [SymbolicDim]? {
        switch storage {
        case .symbolic(let v): return v
        case .ints(let v): return v.map { .known($0) }
        case .floats: return nil
        }
    }

    /// The elements at `indices` (flat, C order) arranged as `shape`.
    func gather(_ indices: [Int], shape: [Int]) -> OnnxConstant {
        switch storage {
        case .floats(let v): return OnnxConstant(shape: shape, storage: .floats(indices.map { v[$0] }))
        case .ints(let v): return OnnxConstant(shape: shape, storage: .ints(indices.map { v[$0] }))
        case .symbolic(let v): return OnnxConstant(shape: shape, storage: .symbolic(indices.map { v[$0] }))
        }
    }

    func reshaped(_ shape: [Int]) -> OnnxConstant { OnnxConstant(shape: shape, storage: storage) }

    static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    /// Concatenation of several constants' storage (promoting ints to floats, or to symbols).
    static func concatenated(_ parts: [OnnxConstant], indices: [(part: Int, index: Int)], shape: [Int]) -> OnnxConstant {
        if parts.contains(where: \.isFloat) {
            let values = parts.map { $0.floats ?? [] }
            return OnnxConstant(shape: shape, storage: .floats(indices.map { values[$0.part][$0.index] }))
        }
        if parts.allSatisfy({ $0.ints != nil }) {
            let values = parts.map { $0.ints! }
            return OnnxConstant(shape: shape, storage: .ints(indices.map { values[$0.part][$0.index] }))
        }
        let values = parts.map { $0.symbolicDims! }
        return OnnxConstant(shape: shape, storage: .symbolic(indices.map { values[$0.part][$0.index] }))
    }
}
