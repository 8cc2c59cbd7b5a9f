/// A value of a node attribute: a number, a list of numbers or a string. Integer attributes
/// are numbers that must be integral; the op's definition says which type each attribute has.
public enum AttributeValue: Codable, Equatable, Sendable {
    case number(Double)
    case numbers([Double])
    case string(String)

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Double.self) { self = .number(n) }
        else if let ns = try? container.decode([Double].self) { self = .numbers(ns) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else {
            throw DecodingError.dataCorruptedError(in: container,
                debugDescription: "an attribute must be a number, a list of numbers or a string")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .number(let n): try container.encode(n)
        case .numbers(let ns): try container.encode(ns)
        case .string(let s): try container.encode(s)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }

    public static func int(_ v: Int) -> AttributeValue { .number(Double(v)) }
    public static func ints(_ v: [Int]) -> AttributeValue { .numbers(v.map(Double.init)) }
    public static func float(_ v: Double) -> AttributeValue { .number(v) }
}

/// One operation of a graph: its type, the names of the values it reads and writes, and
/// attributes. An empty input name means an omitted optional input.
public struct Node: Codable, Equatable, Sendable {
    public var name: String
    public var op: OpType
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: AttributeValue]

    public init(name: String, op: OpType, inputs: [String], outputs: [String],
                attributes: [String: AttributeValue] = [:]) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }

    enum CodingKeys: String, CodingKey { case name, op, inputs, outputs, attributes }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        let opName = try c.decode(String.self, forKey: .op)
        guard let op = OpType(rawValue: opName) else {
            throw CascadeSegError.invalidGraph("node '\(name)': unsupported op type '\(opName)'")
        }
        self.op = op
        inputs = try c.decode([String].self, forKey: .inputs)
        outputs = try c.decode([String].self, forKey: .outputs)
        attributes = try c.decodeIfPresent([String: AttributeValue].self, forKey: .attributes) ?? [:]
    }

    // MARK: Typed attribute access

    private func fail(_ message: String) -> CascadeSegError {
        .invalidGraph("node '\(name)' (\(op.rawValue)): \(message)")
    }

    public func int(_ key: String, default value: Int? = nil) throws -> Int {
        guard let attribute = attributes[key] else {
            if let value { return value }
            throw fail("missing attribute '\(key)'")
        }
        guard case .number(let n) = attribute, n.rounded() == n, abs(n) < 1e15 else {
            throw fail("attribute '\(key)' must be an integer")
        }
        return Int(n)
    }

    public func ints(_ key: String, default value: [Int]? = nil) throws -> [Int] {
        guard let attribute = attributes[key] else {
            if let value { return value }
            throw fail("missing attribute '\(key)'")
        }
        guard case .numbers(let ns) = attribute, ns.allSatisfy({ $0.rounded() == $0 && abs($0) < 1e15 }) else {
            throw fail("attribute '\(key)' must be a list of integers")
        }
        return ns.map { Int($0) }
    }

    public func ints(_ key: String, count: Int, default value: [Int]) throws -> [Int] {
        let v = try ints(key, default: value)
        guard v.count == count else { throw fail("attribute '\(key)' must have \(count) values, has \(v.count)") }
        return v
    }

    public func float(_ key: String, default value: Double? = nil) throws -> Double {
        guard let attribute = attributes[key] else {
            if let value { return value }
            throw fail("missing attribute '\(key)'")
        }
        guard case .number(let n) = attribute, n.isFinite else { throw fail("attribute '\(key)' must be a finite number") }
        return n
    }

    public func floats(_ key: String, default value: [Double]? = nil) throws -> [Double] {
        guard let attribute = attributes[key] else {
            if let value { return value }
            throw fail("missing attribute '\(key)'")
        }
        guard case .numbers(let ns) = attribute, ns.allSatisfy(\.isFinite) else {
            throw fail("attribute '\(key)' must be a list of finite numbers")
        }
        return ns
    }

    public func string(_ key: String, default value: String? = nil) throws -> String {
        guard let attribute = attributes[key] else {
            if let value { return value }
            throw fail("missing attribute '\(key)'")
        }
        guard case .string(let s) = attribute else { throw fail("attribute '\(key)' must be a string") }
        return s
    }

    /// The input at `index`, or nil when it is absent or the empty name.
    public func input(_ index: Int) -> String? {
        index < inputs.count && !inputs[index].isEmpty ? inputs[index] : nil
    }
}
