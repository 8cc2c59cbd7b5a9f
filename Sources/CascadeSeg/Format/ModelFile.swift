import Foundation

/// A CascadeSeg model: metadata, one graph per stage and float32 weights. Reads and writes the
/// `.cseg` format specified in docs/FORMAT.md, validating every untrusted field before use.
public struct ModelFile: Sendable {
    public static let magic: [UInt8] = [0x89, 0x43, 0x53, 0x45, 0x47, 0x0D, 0x0A, 0x1A]
    public static let formatVersion: UInt32 = 1
    static let headerLength = 64
    static let maxManifestLength = 64 << 20
    static let maxTensorBytes = 4 << 30
    static let maxTotalBytes = 16 << 30
    static let maxTensorCount = 1 << 20

    public enum WeightType: String, Sendable { case float32, float16 }

    /// How weights are stored, as read from a file or chosen for writing.
    public struct StorageSummary: Sendable {
        public var storedBytes: Int
        public var rawFloat32Bytes: Int
        public var fileBytes: Int
        public var weightTypes: Set<String>
    }

    public var metadata: ModelMetadata
    public var graphs: [Graph]
    public var weights: [String: Tensor]
    /// Present when the model came from a file.
    public private(set) var storage: StorageSummary?

    public init(metadata: ModelMetadata, graphs: [Graph], weights: [String: Tensor]) {
        self.metadata = metadata
        self.graphs = graphs
        self.weights = weights
    }

    public func graph(named name: String) -> Graph? { graphs.first { $0.name == name } }

    /// The graph of stage `index` (1-based, as on the command line).
    public func stageGraph(_ index: Int) throws -> Graph {
        let stages = metadata.stages
        guard index >= 1, index <= stages.count, let g = graph(named: stages[index - 1].graph) else {
            throw CascadeSegError.usage("the model has \(stages.count) stage(s); stage \(index) does not exist")
        }
        return g
    }

    public var parameterCount: Int { weights.values.reduce(0) { $0 + $1.count } }

    // MARK: - Reading

    public init(contentsOf path: String) throws {
        try self.init(bytes: try AtomicFile.read(path))
    }

    struct Manifest: Codable {
        var metadata: ModelMetadata
        var graphs: [Graph]
        var tensors: [TensorEntry]
    }

    struct TensorEntry: Codable {
        var name: String
        var dtype: String
        var shape: [Int]
        var offset: Int
        var length: Int
        var encoding: String
        var crc32: UInt32
    }

    public init(bytes: [UInt8]) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidModel(m) }
        guard bytes.count >= Self.headerLength else {
            throw fail("file is \(bytes.count) bytes, shorter than the 64-byte header (truncated or not a model file)")
        }
        guard Array(bytes[0..<8]) == Self.magic else { throw fail("bad magic: not a .cseg model file") }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        let version = u32(8)
        guard version == Self.formatVersion else {
            throw fail("format version \(version) is not supported (this reader knows version \(Self.formatVersion))")
        }
        guard u32(12) == UInt32(Self.headerLength) else { throw fail("header length \(u32(12)) is not 64") }
        guard CRC32.checksum(bytes[0..<52]) == u32(52) else { throw fail("header checksum mismatch (corrupted header)") }
        let fileLength = UInt64(bytes.count)
        let manifestOffset = u64(16), manifestLength = u64(24), dataOffset = u64(32), dataLength = u64(40)
        guard manifestOffset >= UInt64(Self.headerLength), manifestLength >= 1, manifestLength <= UInt64(Self.maxManifestLength) else {
            throw fail("manifest range \(manifestOffset)+\(manifestLength) is invalid")
        }
        guard manifestOffset <= fileLength, manifestLength <= fileLength - manifestOffset else {
            throw fail("manifest (\(manifestOffset)+\(manifestLength)) extends past the end of the \(fileLength)-byte file (truncated)")
        }
        guard dataOffset >= manifestOffset + manifestLength else { throw fail("data section overlaps the manifest") }
        guard dataOffset <= fileLength, dataLength <= fileLength - dataOffset else {
            throw fail("data section (\(dataOffset)+\(dataLength)) extends past the end of the \(fileLength)-byte file (truncated)")
        }
        guard dataOffset + dataLength == fileLength else {
            throw fail("file is \(fileLength) bytes but its sections end at \(dataOffset + dataLength)")
        }
        let manifestBytes = bytes[Int(manifestOffset)..<Int(manifestOffset + manifestLength)]
        guard CRC32.checksum(manifestBytes) == u32(48) else { throw fail("manifest checksum mismatch (corrupted metadata)") }

        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(manifestBytes))
        } catch let error as CascadeSegError {
            throw fail("manifest: \(error)")
        } catch let error as DecodingError {
            throw fail("manifest: \(Self.describe(error))")
        } catch {
            throw fail("manifest is not valid JSON")
        }

        // Tensor table: every check before any tensor is decompressed.
        guard manifest.tensors.count <= Self.maxTensorCount else { throw fail("too many tensors (\(manifest.tensors.count))") }
        var total = 0
        var seen = Set<String>()
        var ranges: [(Int, Int)] = []
        for t in manifest.tensors {
            guard seen.insert(t.name).inserted else { throw fail("tensor '\(t.name)' appears twice") }
            guard let elementSize = ["float32": 4, "float16": 2][t.dtype] else { throw fail("tensor '\(t.name)': unknown dtype '\(t.dtype)'") }
            guard ["raw", "zstd-shuffle"].contains(t.encoding) else { throw fail("tensor '\(t.name)': unknown encoding '\(t.encoding)'") }
            guard t.shape.count <= 8 else { throw fail("tensor '\(t.name)': rank \(t.shape.count) exceeds 8") }
            guard let count = checkedElementCount(t.shape, limit: Self.maxTensorBytes / elementSize) else {
                throw fail("tensor '\(t.name)': shape \(t.shape) is negative or too large")
            }
            total += count * 4
            guard total <= Self.maxTotalBytes else { throw fail("weights exceed \(Self.maxTotalBytes >> 30) GiB in total") }
            guard t.offset >= 0, t.length >= 0, UInt64(t.offset) <= dataLength, UInt64(t.length) <= dataLength - UInt64(t.offset) else {
                throw fail("tensor '\(t.name)': stored range \(t.offset)+\(t.length) lies outside the \(dataLength)-byte data section")
            }
            if t.encoding == "raw", t.length != count * elementSize {
                throw fail("tensor '\(t.name)': raw length \(t.length) differs from shape size \(count * elementSize)")
            }
            if t.length > 0 { ranges.append((t.offset, t.offset + t.length)) }
        }
        ranges.sort { $0.0 < $1.0 }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 < a.1 { throw fail("tensors overlap in the data section") }

        let graphNames = manifest.graphs.map(\.name)
        guard Set(graphNames).count == graphNames.count else { throw fail("graph names must be unique") }
        try manifest.metadata.validate(graphNames: Set(graphNames))
        let constantNames = Set(manifest.tensors.map(\.name))
        for graph in manifest.graphs {
            do { _ = try graph.validatedOrder(constants: constantNames) } catch { throw fail("\(error)") }
        }

        var weights: [String: Tensor] = [:]
        var stored = 0
        for t in manifest.tensors {
            let start = Int(dataOffset) + t.offset
            let slice = bytes[start..<(start + t.length)]
            guard CRC32.checksum(slice) == t.crc32 else { throw fail("tensor '\(t.name)': checksum mismatch (corrupted weights)") }
            let elementSize = t.dtype == "float16" ? 2 : 4
            let count = t.shape.reduce(1, *)
            var raw: [UInt8]
            if t.encoding == "raw" {
                raw = Array(slice)
            } else {
                raw = ByteShuffle.unshuffle(try ZstdCodec.decompress(slice, expectedSize: count * elementSize, what: t.name),
                                            elementSize: elementSize)
            }
            stored += t.length
            var values = [Float](repeating: 0, count: count)
            raw.withUnsafeBytes { src in
                if elementSize == 4 {
                    for i in 0..<count { values[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                } else {
                    for i in 0..<count { values[i] = Float16Conversion.toFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
                }
            }
            raw = []
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw fail("tensor '\(t.name)': value \(bad) is \(values[bad]) (weights must be finite)")
            }
            weights[t.name] = Tensor(shape: t.shape, data: values)
        }
        self.metadata = manifest.metadata
        self.graphs = manifest.graphs
        self.weights = weights
        self.storage = StorageSummary(storedBytes: stored, rawFloat32Bytes: total, fileBytes: bytes.count,
                                      weightTypes: Set(manifest.tensors.map(\.dtype)))
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? "." + $0.stringValue }.joined()
        }
        switch error {
        case .keyNotFound(let key, let ctx): return "missing key '\(key.stringValue)' at \(path(ctx.codingPath))"
        case .typeMismatch(_, let ctx): return "wrong type at \(path(ctx.codingPath)): \(ctx.debugDescription)"
        case .valueNotFound(_, let ctx): return "missing value at \(path(ctx.codingPath))"
        case .dataCorrupted(let ctx):
            if let underlying = ctx.underlyingError as? CascadeSegError { return underlying.description }
            return "invalid data at \(path(ctx.codingPath)): \(ctx.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    // MARK: - Writing

    /// Serializes the model. Weights are stored as `weightType` (float16 rounds to nearest even)
    /// with the byte-plane shuffle and zstd at `compressionLevel`.
    public func serialized(weightType: WeightType = .float32, compressionLevel: Int32 = 9) throws -> [UInt8] {
        var data: [UInt8] = []
        var entries: [TensorEntry] = []
        for name in weights.keys.sorted() {
            let tensor = weights[name]!
            if let bad = tensor.data.firstIndex(where: { !$0.isFinite || (weightType == .float16 && abs($0) > 65504) }) {
                throw CascadeSegError.invalidModel("tensor '\(name)': value \(bad) is \(tensor.data[bad]), which \(weightType.rawValue) storage cannot hold finitely")
            }
            var raw: [UInt8]
            let elementSize: Int
            switch weightType {
            case .float32:
                elementSize = 4
                raw = [UInt8](repeating: 0, count: tensor.count * 4)
                raw.withUnsafeMutableBytes { dst in
                    for (i, v) in tensor.data.enumerated() { dst.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                }
            case .float16:
                elementSize = 2
                raw = [UInt8](repeating: 0, count: tensor.count * 2)
                raw.withUnsafeMutableBytes { dst in
                    for (i, v) in tensor.data.enumerated() {
                        dst.storeBytes(of: Float16Conversion.fromFloat(v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                    }
                }
            }
            let stored = try ZstdCodec.compress(ByteShuffle.shuffle(raw, elementSize: elementSize), level: compressionLevel)
            entries.append(TensorEntry(name: name, dtype: weightType.rawValue, shape: tensor.shape, offset: data.count,
                                       length: stored.count, encoding: "zstd-shuffle", crc32: CRC32.checksum(stored[...])))
            data += stored
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let manifest = [UInt8](try encoder.encode(Manifest(metadata: metadata, graphs: graphs, tensors: entries)))
        let manifestOffset = Self.headerLength
        let dataOffset = (manifestOffset + manifest.count + 63) / 64 * 64
        var header = [UInt8](repeating: 0, count: Self.headerLength)
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { header[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        func put64(_ v: Int, _ at: Int) { for i in 0..<8 { header[at + i] = UInt8(truncatingIfNeeded: UInt64(v) >> (8 * UInt64(i))) } }
        header.replaceSubrange(0..<8, with: Self.magic)
        put32(Self.formatVersion, 8)
        put32(UInt32(Self.headerLength), 12)
        put64(manifestOffset, 16)
        put64(manifest.count, 24)
        put64(dataOffset, 32)
        put64(data.count, 40)
        put32(CRC32.checksum(manifest[...]), 48)
        put32(CRC32.checksum(header[0..<52]), 52)
        var file = header + manifest
        file += [UInt8](repeating: 0, count: dataOffset - file.count)
        file += data
        return file
    }

    public func write(to path: String, weightType: WeightType = .float32, compressionLevel: Int32 = 9) throws {
        try AtomicFile.write(try serialized(weightType: weightType, compressionLevel: compressionLevel), to: path)
    }
}
