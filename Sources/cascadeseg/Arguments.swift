import CascadeSeg

/// A minimal command-line parser: positionals, `--name value` options and `--flag` switches.
/// Every option must be declared; anything else is a usage error naming it.
struct Arguments {
    private(set) var positionals: [String] = []
    private var values: [String: String] = [:]
    private var flags: Set<String> = []

    init(_ raw: [String], options: Set<String>, flags allowedFlags: Set<String>) throws {
        var i = 0
        while i < raw.count {
            let a = raw[i]
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2))
                var inline: String? = nil
                if let eq = name.firstIndex(of: "=") {
                    inline = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                }
                if allowedFlags.contains(name) && inline == nil {
                    flags.insert(name)
                } else if options.contains(name) {
                    if let inline { values[name] = inline } else {
                        guard i + 1 < raw.count else { throw CascadeSegError.usage("option --\(name) needs a value") }
                        i += 1
                        values[name] = raw[i]
                    }
                } else {
                    throw CascadeSegError.usage("unknown option --\(name)")
                }
            } else if a == "-o", options.contains("output") {
                guard i + 1 < raw.count else { throw CascadeSegError.usage("option -o needs a value") }
                i += 1
                values["output"] = raw[i]
            } else {
                positionals.append(a)
            }
            i += 1
        }
    }

    subscript(option: String) -> String? { values[option] }
    func has(_ flag: String) -> Bool { flags.contains(flag) }

    func require(_ option: String) throws -> String {
        guard let v = values[option] else { throw CascadeSegError.usage("missing required option --\(option)") }
        return v
    }

    /// A byte count: a positive integer, optionally followed by K, M or G (powers of 1024,
    /// either case): `1048576`, `64M`, `2G`. Nil when the option is absent.
    func bytes(_ option: String) throws -> Int? {
        guard let s = values[option] else { return nil }
        return try Arguments.parseBytes(s, option: option)
    }

    static func parseBytes(_ text: String, option: String) throws -> Int {
        func bad() -> CascadeSegError {
            .usage("--\(option) must be a positive number of bytes, optionally with K, M or G (1024-based), e.g. 512M; got '\(text)'")
        }
        var digits = Substring(text)
        var scale = 1
        if let last = digits.last, let power = ["K": 1, "M": 2, "G": 3][last.uppercased()] {
            scale = 1 << (10 * power)
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(digits), value > 0 else { throw bad() }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow else { throw bad() }
        return bytes
    }

    func int(_ option: String, default value: Int) throws -> Int {
        guard let s = values[option] else { return value }
        guard let v = Int(s) else { throw CascadeSegError.usage("--\(option) must be an integer, got '\(s)'") }
        return v
    }
}
