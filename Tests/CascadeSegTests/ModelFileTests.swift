import Foundation
import XCTest
@testable import CascadeSeg

/// Builders shared by the model-file tests (and usable by the fuzz seed generator's tests).
enum ModelFixtures {
    static func conv(_ name: String, _ x: String, _ y: String, pads: Int, activation: String? = nil) -> Node {
        var attributes: [String: AttributeValue] = ["pads": .ints([Int](repeating: pads, count: 6))]
        if let activation { attributes["activation"] = .string(activation) }
        return Node(name: name, op: .conv, inputs: [x, name + ".w", name + ".b"], outputs: [y], attributes: attributes)
    }

    /// A two-stage cascade: "localizer" (stage 1) and "roi" (stage 2), 3 labels, weights drawn
    /// from N(0, scale^2) (Kaiming-like scale by default, as trained weights look).
    static func cascade(seed: UInt64, width: Int = 8) -> ModelFile {
        var rng = SeededRandom(seed: seed)
        func image() -> [ValueInfo] { [ValueInfo(name: "image", shape: [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])] }
        func logits() -> [ValueInfo] { [ValueInfo(name: "logits", shape: [.fixed(1), .fixed(3), .symbol("D"), .symbol("H"), .symbol("W")])] }
        let stage1 = Graph(name: "localizer", inputs: image(), outputs: logits(), nodes: [
            conv("enc0", "image", "t0", pads: 1, activation: "relu"),
            conv("head", "t0", "logits", pads: 0),
        ], sizeMultiple: [4, 4, 4])
        let stage2 = Graph(name: "roi", inputs: image(), outputs: logits(), nodes: [
            conv("roi.enc0", "image", "u0", pads: 1),
            Node(name: "roi.norm0", op: .instanceNormalization, inputs: ["u0", "roi.norm0.scale", "roi.norm0.bias"], outputs: ["u1"],
                 attributes: ["epsilon": .float(1e-5), "activation": .string("leaky_relu"), "activation_alpha": .float(0.01)]),
            conv("roi.head", "u1", "logits", pads: 0),
        ])
        var weights: [String: Tensor] = [:]
        func add(_ name: String, _ shape: [Int], scale: Float) {
            let n = shape.reduce(1, *)
            weights[name] = Tensor(shape: shape, data: (0..<n).map { _ in Float(rng.normal()) * scale })
        }
        add("enc0.w", [width, 1, 3, 3, 3], scale: (2.0 / 27).squareRoot())
        add("enc0.b", [width], scale: 0.01)
        add("head.w", [3, width, 1, 1, 1], scale: (2.0 / Float(width)).squareRoot())
        add("head.b", [3], scale: 0.01)
        add("roi.enc0.w", [2 * width, 1, 3, 3, 3], scale: (2.0 / 27).squareRoot())
        add("roi.enc0.b", [2 * width], scale: 0.01)
        weights["roi.norm0.scale"] = Tensor(shape: [2 * width], data: (0..<(2 * width)).map { _ in 1 + 0.1 * Float(rng.normal()) })
        add("roi.norm0.bias", [2 * width], scale: 0.1)
        add("roi.head.w", [3, 2 * width, 1, 1, 1], scale: (2.0 / Float(2 * width)).squareRoot())
        add("roi.head.b", [3], scale: 0.01)
        let metadata = ModelMetadata(
            name: "test-cascade", description: "two-stage test model", license: "CC0-1.0",
            labels: [.init(id: 0, name: "background"), .init(id: 1, name: "liver"), .init(id: 2, name: "spleen")],
            input: .init(channels: 1, normalization: .init(kind: "ct", clip: [-200, 300], mean: 80, std: 60)),
            stages: [.init(graph: "localizer", spacingMM: [4, 4, 4]), .init(graph: "roi", spacingMM: [1.5, 1, 1])],
            cascade: .init(stage1: "localizer", stage2: "roi", marginMM: 10, minROISize: [16, 16, 16],
                           labelGroups: [[1], [2]], priors: [.init(label: 1, box: [0.1, 0.2, 0.5, 0.6, 0.8, 1.0])]))
        return ModelFile(metadata: metadata, graphs: [stage1, stage2], weights: weights)
    }
}

/// Builds `.cseg` files byte by byte from a manifest given as a JSON object (or as raw bytes)
/// and a data section, with correct header and manifest CRCs unless told otherwise, so that
/// each hostile file differs from a valid one in exactly one way.
enum FileBuilder {
    struct StoredTensor {
        var name: String
        var dtype: String
        var shape: [Int]
        var encoding: String
        var stored: [UInt8]
    }

    static func rawBytes(_ values: [Float], dtype: String) -> [UInt8] {
        var out: [UInt8] = []
        for v in values {
            if dtype == "float16" {
                let h = Float16Conversion.fromFloat(v)
                out += [UInt8(h & 0xFF), UInt8(h >> 8)]
            } else {
                let b = v.bitPattern
                out += (0..<4).map { UInt8(truncatingIfNeeded: b >> (8 * UInt32($0))) }
            }
        }
        return out
    }

    static func tensor(_ name: String, _ dtype: String, _ shape: [Int], _ encoding: String, _ values: [Float]) -> StoredTensor {
        let raw = rawBytes(values, dtype: dtype)
        let stored = encoding == "raw" ? raw
            : try! ZstdCodec.compress(ByteShuffle.shuffle(raw, elementSize: dtype == "float16" ? 2 : 4), level: 3)
        return StoredTensor(name: name, dtype: dtype, shape: shape, encoding: encoding, stored: stored)
    }

    /// Lays the tensors out back to back; returns the tensor table and the data section.
    static func layout(_ tensors: [StoredTensor]) -> (table: [Any], data: [UInt8]) {
        var data: [UInt8] = []
        var table: [Any] = []
        for t in tensors {
            table.append(["name": t.name, "dtype": t.dtype, "shape": t.shape, "offset": data.count, "length": t.stored.count,
                          "encoding": t.encoding, "crc32": Int(CRC32.checksum(t.stored[...]))] as [String: Any])
            data += t.stored
        }
        return (table, data)
    }

    static func json(_ object: Any) -> [UInt8] {
        [UInt8](try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    struct Header {
        var version: UInt32 = 1
        var headerLength: UInt32 = 64
        var manifestOffset: Int? = nil
        var manifestLength: Int? = nil
        var dataOffset: Int? = nil
        var dataLength: Int? = nil
        var manifestCRC: UInt32? = nil
        var headerCRC: UInt32? = nil
    }

    /// The file: header, manifest, zero padding to a 64-byte boundary, data.
    static func assemble(manifest: [UInt8], data: [UInt8], header h: Header = Header()) -> [UInt8] {
        let dataOffset = (64 + manifest.count + 63) / 64 * 64
        var header = [UInt8](repeating: 0, count: 64)
        func put32(_ v: UInt32, _ at: Int) { for i in 0..<4 { header[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        func put64(_ v: Int, _ at: Int) { for i in 0..<8 { header[at + i] = UInt8(truncatingIfNeeded: UInt64(bitPattern: Int64(v)) >> (8 * UInt64(i))) } }
        header.replaceSubrange(0..<8, with: ModelFile.magic)
        put32(h.version, 8)
        put32(h.headerLength, 12)
        put64(h.manifestOffset ?? 64, 16)
        put64(h.manifestLength ?? manifest.count, 24)
        put64(h.dataOffset ?? dataOffset, 32)
        put64(h.dataLength ?? data.count, 40)
        put32(h.manifestCRC ?? CRC32.checksum(manifest[...]), 48)
        put32(h.headerCRC ?? CRC32.checksum(header[0..<52]), 52)
        return header + manifest + [UInt8](repeating: 0, count: dataOffset - 64 - manifest.count) + data
    }

    static func assemble(manifest: Any, data: [UInt8], header: Header = Header()) -> [UInt8] {
        assemble(manifest: json(manifest), data: data, header: header)
    }

    /// Recomputes the header CRC after the header bytes were edited in place.
    static func resealHeader(_ file: inout [UInt8]) {
        let crc = CRC32.checksum(file[0..<52])
        for i in 0..<4 { file[52 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
    }

    /// `root` with the value at `path` (dictionary keys and array indices) replaced, or removed when nil.
    static func setting(_ root: Any, _ path: [Any], _ value: Any?) -> Any {
        guard let first = path.first else { return value as Any }
        let rest = Array(path.dropFirst())
        if let key = first as? String, var dict = root as? [String: Any] {
            if rest.isEmpty, value == nil { dict.removeValue(forKey: key) } else { dict[key] = setting(dict[key] as Any, rest, value) }
            return dict
        }
        if let index = first as? Int, var array = root as? [Any] {
            array[index] = setting(array[index], rest, value)
            return array
        }
        fatalError("bad path component \(first) for \(type(of: root))")
    }

    static func value(_ root: Any, _ path: [Any]) -> Any {
        path.reduce(root) { node, key in
            if let k = key as? String { return (node as! [String: Any])[k]! }
            return (node as! [Any])[key as! Int]
        }
    }

    // MARK: The hand-made base file

    /// Two stages ("g1", "g2") with a cascade, four tensors covering both dtypes and both encodings.
    static func baseTensors() -> [StoredTensor] {
        var rng = SeededRandom(seed: 7)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.normal()) * 0.3 } }
        return [
            tensor("g1.w", "float32", [2, 1, 1, 1, 1], "raw", values(2)),
            tensor("g1.b", "float32", [2], "zstd-shuffle", values(2)),
            tensor("g2.w", "float16", [2, 1, 3, 3, 3], "zstd-shuffle", values(54)),
            tensor("g2.b", "float16", [2], "raw", values(2)),
        ]
    }

    static func baseManifest(table: [Any]) -> [String: Any] {
        func graph(_ name: String, _ nodes: [[String: Any]]) -> [String: Any] {
            ["name": name,
             "inputs": [["name": "image", "shape": [1, 1, "D", "H", "W"]]],
             "outputs": [["name": "logits", "shape": [1, 2, "D", "H", "W"]]],
             "size_multiple": [1, 1, 1],
             "nodes": nodes]
        }
        return [
            "metadata": [
                "name": "base", "description": "hand-made", "license": "CC0-1.0",
                "labels": [["id": 0, "name": "background"], ["id": 1, "name": "organ"]],
                "input": ["channels": 1, "normalization": ["kind": "zscore", "foreground": "nonzero"]],
                "stages": [["graph": "g1", "spacing_mm": [2.0, 2.0, 2.0]], ["graph": "g2", "spacing_mm": [1.0, 0.5, 0.5]]],
                "cascade": ["stage1": "g1", "stage2": "g2", "margin_mm": 5.0, "min_roi_size": [8, 8, 8], "label_groups": [[1]]],
            ] as [String: Any],
            "graphs": [
                graph("g1", [["name": "conv", "op": "Conv", "inputs": ["image", "g1.w", "g1.b"], "outputs": ["logits"]]]),
                graph("g2", [
                    ["name": "conv", "op": "Conv", "inputs": ["image", "g2.w", "g2.b"], "outputs": ["t0"],
                     "attributes": ["pads": [1, 1, 1, 1, 1, 1]]],
                    ["name": "act", "op": "Relu", "inputs": ["t0"], "outputs": ["logits"]],
                ]),
            ],
            "tensors": table,
        ]
    }

    static func base() -> (manifest: [String: Any], data: [UInt8], tensors: [StoredTensor]) {
        let tensors = baseTensors()
        let (table, data) = layout(tensors)
        return (baseManifest(table: table), data, tensors)
    }
}

final class ModelFileTests: XCTestCase {
    // MARK: Helpers

    func assertInvalid(_ bytes: [UInt8], _ fragment: String, _ what: String = "",
                       file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try ModelFile(bytes: bytes)
            XCTFail("\(what): a hostile file was accepted (expected '\(fragment)')", file: file, line: line)
        } catch CascadeSegError.invalidModel(let message) {
            XCTAssertTrue(message.contains(fragment), "\(what): message '\(message)' lacks '\(fragment)'", file: file, line: line)
        } catch {
            XCTFail("\(what): expected invalidModel('\(fragment)'), got \(error)", file: file, line: line)
        }
    }

    /// The tensor table of a file, as the test reads it independently of the reader.
    func table(of file: [UInt8]) throws -> (entries: [[String: Any]], manifestRange: Range<Int>, dataOffset: Int) {
        func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(file[at + $1]) << (8 * $1) } }
        let mo = u64(16), ml = u64(24)
        let manifest = try JSONSerialization.jsonObject(with: Data(file[mo..<(mo + ml)])) as! [String: Any]
        return (manifest["tensors"] as! [[String: Any]], mo..<(mo + ml), u64(32))
    }

    func assertBitEqual(_ a: Tensor?, _ b: Tensor?, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let a, let b else { return XCTFail("tensor '\(name)' missing", file: file, line: line) }
        XCTAssertEqual(a.shape, b.shape, name, file: file, line: line)
        XCTAssertEqual(a.data.map(\.bitPattern), b.data.map(\.bitPattern), "tensor '\(name)' differs", file: file, line: line)
    }

    // MARK: Round trips

    func testRoundTripFloat32IsBitExact() throws {
        var model = ModelFixtures.cascade(seed: 1)
        // Values that a careless writer would normalize: signed zero, subnormals, extremes.
        model.weights["extra.special"] = Tensor(shape: [2, 5], data: [
            0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, Float(bitPattern: 0x007F_FFFF),
            -.leastNormalMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1.0 / 3.0, .pi])
        model.weights["extra.scalar"] = Tensor(shape: [], data: [42])
        model.weights["extra.empty"] = Tensor(shape: [0, 3], data: [])
        let bytes = try model.serialized(weightType: .float32)
        let read = try ModelFile(bytes: bytes)
        XCTAssertEqual(read.metadata, model.metadata)
        XCTAssertEqual(read.graphs, model.graphs)
        XCTAssertEqual(Set(read.weights.keys), Set(model.weights.keys))
        for (name, tensor) in model.weights { assertBitEqual(read.weights[name], tensor, name) }
        XCTAssertEqual(try read.stageGraph(1).name, "localizer")
        XCTAssertEqual(try read.stageGraph(2).name, "roi")
        XCTAssertEqual(read.metadata.cascade?.priors?.first?.box, [0.1, 0.2, 0.5, 0.6, 0.8, 1.0])
        let storage = try XCTUnwrap(read.storage)
        XCTAssertEqual(storage.fileBytes, bytes.count)
        XCTAssertEqual(storage.rawFloat32Bytes, model.parameterCount * 4)
        XCTAssertEqual(storage.weightTypes, ["float32"])
        // Serializing what was read gives the same bytes (the writer is deterministic).
        XCTAssertEqual(try read.serialized(weightType: .float32), bytes)
    }

    func testRoundTripFloat16IsWithinRounding() throws {
        let model = ModelFixtures.cascade(seed: 2, width: 32)
        let f32 = try ModelFile(bytes: try model.serialized(weightType: .float32))
        let f16 = try ModelFile(bytes: try model.serialized(weightType: .float16))
        XCTAssertEqual(f16.metadata, model.metadata)
        XCTAssertEqual(f16.graphs, model.graphs)
        XCTAssertEqual(f16.storage?.weightTypes, ["float16"])
        for (name, tensor) in model.weights {
            let back = try XCTUnwrap(f16.weights[name], name)
            XCTAssertEqual(back.shape, tensor.shape)
            for (x, y) in zip(tensor.data, back.data) {
                // binary16 has 11 significant bits: relative error <= 2^-11 for normal values,
                // absolute error <= 2^-25 in the subnormal range.
                XCTAssertLessThanOrEqual(abs(x - y), max(abs(x) * 0x1p-11, 0x1p-25), "\(name): \(x) -> \(y)")
                #if !(os(macOS) && arch(x86_64))
                XCTAssertEqual(y.bitPattern, Float(Float16(x)).bitPattern, "\(name): \(x) not rounded to nearest even")
                #endif
            }
        }
        let s32 = try XCTUnwrap(f32.storage).storedBytes, s16 = try XCTUnwrap(f16.storage).storedBytes
        XCTAssertLessThanOrEqual(Double(s16), 0.55 * Double(s32), "float16 stores \(s16) bytes, float32 \(s32)")
        XCTAssertEqual(f16.storage?.rawFloat32Bytes, model.parameterCount * 4)
    }

    /// Weights must be finite (docs/FORMAT.md): the writer refuses NaN, infinities and float16
    /// overflow, and the reader refuses files that hold them.
    func testNonFiniteWeights() throws {
        var model = ModelFixtures.cascade(seed: 9)
        for (bad, type) in [(Float.nan, ModelFile.WeightType.float32), (-.infinity, .float32), (70000, .float16)] {
            model.weights["head.b"] = Tensor(shape: [3], data: [0, bad, 0])
            XCTAssertThrowsError(try model.serialized(weightType: type), "\(bad) as \(type)")
        }
        let (manifest, data, tensors) = FileBuilder.base()
        for (index, dtype, stored) in [(0, "float32", FileBuilder.rawBytes([1, .nan], dtype: "float32")),
                                       (0, "float32", FileBuilder.rawBytes([.infinity, 1], dtype: "float32")),
                                       (3, "float16", [0x00, 0x7C, 0x00, 0x00]),   // +inf
                                       (3, "float16", [0x00, 0x00, 0x01, 0xFE])] {  // NaN
            XCTAssertEqual(stored.count, tensors[index].stored.count)
            let offset = FileBuilder.value(manifest, ["tensors", index, "offset"]) as! Int
            var d = data
            d.replaceSubrange(offset..<(offset + stored.count), with: stored)
            let m = FileBuilder.setting(manifest, ["tensors", index, "crc32"], Int(CRC32.checksum(stored[...])))
            assertInvalid(FileBuilder.assemble(manifest: m, data: d), "(weights must be finite)", "\(dtype) \(stored)")
        }
    }

    func testCompressionShrinksRealisticWeights() throws {
        let model = ModelFixtures.cascade(seed: 3, width: 32)
        let read = try ModelFile(bytes: try model.serialized(weightType: .float32))
        let storage = try XCTUnwrap(read.storage)
        // Kaiming-scaled Gaussian weights: the byte planes holding sign and exponent compress well.
        XCTAssertLessThan(storage.storedBytes, storage.rawFloat32Bytes)
        XCTAssertLessThan(Double(storage.storedBytes), 0.95 * Double(storage.rawFloat32Bytes),
                          "stored \(storage.storedBytes) of \(storage.rawFloat32Bytes) raw bytes")
        // Constant tensors compress to almost nothing.
        var constant = model
        constant.weights = model.weights.mapValues { Tensor(shape: $0.shape, data: [Float](repeating: 0.5, count: $0.count)) }
        let c = try XCTUnwrap(try ModelFile(bytes: try constant.serialized()).storage)
        XCTAssertLessThan(c.storedBytes * 10, c.rawFloat32Bytes)
    }

    func testHandMadeBaseFileIsValid() throws {
        let (manifest, data, tensors) = FileBuilder.base()
        let model = try ModelFile(bytes: FileBuilder.assemble(manifest: manifest, data: data))
        XCTAssertEqual(model.graphs.map(\.name), ["g1", "g2"])
        XCTAssertEqual(model.metadata.cascade?.stage2, "g2")
        XCTAssertEqual(model.storage?.weightTypes, ["float32", "float16"])
        for t in tensors {
            let w = try XCTUnwrap(model.weights[t.name])
            XCTAssertEqual(w.shape, t.shape)
            let size = t.dtype == "float16" ? 2 : 4
            let raw = t.encoding == "raw" ? t.stored
                : ByteShuffle.unshuffle(try ZstdCodec.decompress(t.stored[...], expectedSize: w.count * size, what: t.name), elementSize: size)
            XCTAssertEqual(FileBuilder.rawBytes(w.data, dtype: t.dtype), raw, t.name)
        }
        // Unknown keys are ignored (new optional keys need no version change).
        let extended = FileBuilder.setting(FileBuilder.setting(manifest, ["future"], ["x": [1, 2, 3]]),
                                           ["metadata", "future_key"], "hello")
        XCTAssertNoThrow(try ModelFile(bytes: FileBuilder.assemble(manifest: extended, data: data)))
    }

    /// The fuzzer's seeds (written by `FuzzModelReader --write-seed`) stay valid model files.
    func testFuzzSeedCorpusIsValid() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzCorpus").path
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".cseg") }
        try XCTSkipIf(files.isEmpty, "no seed corpus at \(folder)")
        for name in files {
            XCTAssertNoThrow(try ModelFile(contentsOf: folder + "/" + name), name)
        }
    }

    // MARK: Header

    func testShortFiles() {
        for n in [0, 1, 8, 63] {
            assertInvalid([UInt8](repeating: 0x89, count: n), "shorter than the 64-byte header", "\(n) bytes")
        }
    }

    func testBadMagic() {
        let (manifest, data, _) = FileBuilder.base()
        var file = FileBuilder.assemble(manifest: manifest, data: data)
        file[1] = UInt8(ascii: "c")
        assertInvalid(file, "bad magic")
        // A text-mode transfer that turned \r\n into \n shifts everything: still bad magic.
        var text = FileBuilder.assemble(manifest: manifest, data: data)
        text.remove(at: 5)
        assertInvalid(text, "bad magic")
        assertInvalid(Array("{\"metadata\": {}}".utf8) + [UInt8](repeating: 32, count: 64), "bad magic", "JSON file")
    }

    func testWrongVersionAndHeaderLength() {
        let (manifest, data, _) = FileBuilder.base()
        assertInvalid(FileBuilder.assemble(manifest: manifest, data: data, header: .init(version: 2)),
                      "format version 2 is not supported (this reader knows version 1)")
        assertInvalid(FileBuilder.assemble(manifest: manifest, data: data, header: .init(version: 0)), "format version 0")
        assertInvalid(FileBuilder.assemble(manifest: manifest, data: data, header: .init(headerLength: 128)), "header length 128 is not 64")
    }

    func testHeaderChecksum() {
        let (manifest, data, _) = FileBuilder.base()
        let good = FileBuilder.assemble(manifest: manifest, data: data)
        // Every header byte after the version/length fields is covered by the header CRC.
        for i in 16..<56 {
            var file = good
            file[i] ^= 0x10
            assertInvalid(file, "header checksum mismatch (corrupted header)", "byte \(i)")
        }
    }

    func testHeaderRanges() {
        let (manifest, data, _) = FileBuilder.base()
        let m = FileBuilder.json(manifest)
        let dataOffset = (64 + m.count + 63) / 64 * 64
        let cases: [(FileBuilder.Header, String)] = [
            (.init(manifestOffset: 0), "manifest range 0+"),
            (.init(manifestOffset: 63), "manifest range 63+"),
            (.init(manifestLength: 0), "is invalid"),
            (.init(manifestLength: (64 << 20) + 1), "is invalid"),
            (.init(manifestLength: Int(Int64.max)), "is invalid"),
            (.init(manifestOffset: 1 << 40), "extends past the end"),
            (.init(manifestOffset: Int(UInt64.max >> 1)), "extends past the end"),
            (.init(manifestOffset: -64), "extends past the end"),  // 2^64 - 64: overflow bait
            (.init(manifestLength: m.count + 200_000), "extends past the end"),
            (.init(dataOffset: 64 + m.count - 1), "data section overlaps the manifest"),
            (.init(dataOffset: 64), "data section overlaps the manifest"),
            (.init(dataOffset: -1), "data section (18446744073709551615+"),
            (.init(dataLength: data.count + 1), "extends past the end"),
            (.init(dataLength: -1), "extends past the end"),
            (.init(dataLength: data.count - 1), "sections end at"),
            (.init(dataOffset: dataOffset + 1, dataLength: data.count - 1), "lies outside the \(data.count - 1)-byte data section"),
            (.init(manifestCRC: CRC32.checksum(m[...]) ^ 1), "manifest checksum mismatch"),
        ]
        for (header, fragment) in cases {
            assertInvalid(FileBuilder.assemble(manifest: m, data: data, header: header), fragment, "\(header)")
        }
        // Trailing garbage after the data section.
        assertInvalid(FileBuilder.assemble(manifest: m, data: data) + [0], "sections end at")
    }

    // MARK: Truncation

    func testEveryTruncationOfTheHandMadeFileFails() throws {
        let (manifest, data, _) = FileBuilder.base()
        let file = FileBuilder.assemble(manifest: manifest, data: data)
        let (_, manifestRange, dataOffset) = try table(of: file)
        XCTAssertEqual(dataOffset + data.count, file.count)
        for n in 0..<file.count {
            let fragment = n < 64 ? "shorter than the 64-byte header"
                : n < manifestRange.upperBound ? "manifest (64+\(manifestRange.count)) extends past the end of the \(n)-byte file"
                : "data section (\(dataOffset)+\(data.count)) extends past the end of the \(n)-byte file"
            assertInvalid(Array(file[0..<n]), fragment, "truncated to \(n) bytes")
        }
    }

    func testTruncationAtSectionBoundariesOfARealModel() throws {
        let file = try ModelFixtures.cascade(seed: 4).serialized()
        let (entries, manifestRange, dataOffset) = try table(of: file)
        var points: [Int: String] = [0: "shorter", 1: "shorter", 52: "shorter", 63: "shorter", 64: "manifest"]
        for p in [manifestRange.lowerBound, manifestRange.lowerBound + 1, manifestRange.lowerBound + manifestRange.count / 2,
                  manifestRange.upperBound - 1] { points[p] = "manifest" }
        points[manifestRange.upperBound] = "data section"
        points[dataOffset] = "data section"
        for e in entries {
            let start = dataOffset + (e["offset"] as! Int), length = e["length"] as! Int
            for p in [start, start + 1, start + length / 2, start + length - 1, start + length] where p < file.count {
                points[p] = "data section"
            }
        }
        points[file.count - 1] = "data section"
        XCTAssertGreaterThan(points.count, 40)
        for (n, fragment) in points.sorted(by: { $0.key < $1.key }) {
            assertInvalid(Array(file[0..<n]), fragment, "truncated to \(n) of \(file.count) bytes")
        }
    }

    // MARK: Corruption

    func testFlippedManifestByte() throws {
        let (manifest, data, _) = FileBuilder.base()
        let file = FileBuilder.assemble(manifest: manifest, data: data)
        let (_, range, _) = try table(of: file)
        for i in [range.lowerBound, range.lowerBound + range.count / 3, range.upperBound - 1] {
            var bad = file
            bad[i] ^= 0x01
            assertInvalid(bad, "manifest checksum mismatch (corrupted metadata)", "byte \(i)")
        }
    }

    func testFlippedTensorBytes() throws {
        for file in [FileBuilder.assemble(manifest: FileBuilder.base().manifest, data: FileBuilder.base().data),
                     try ModelFixtures.cascade(seed: 5).serialized(weightType: .float16)] {
            let (entries, _, dataOffset) = try table(of: file)
            XCTAssertFalse(entries.isEmpty)
            for e in entries {
                let name = e["name"] as! String
                let start = dataOffset + (e["offset"] as! Int), length = e["length"] as! Int
                for i in Set([start, start + length / 2, start + length - 1]) {
                    var bad = file
                    bad[i] ^= 0x80
                    assertInvalid(bad, "tensor '\(name)': checksum mismatch (corrupted weights)", "byte \(i)")
                }
            }
        }
    }

    // MARK: Hostile manifests (valid CRCs, one thing wrong)

    func testHostileTensorTables() {
        let (manifest, data, tensors) = FileBuilder.base()
        let t3end = data.count
        let cases: [(String, [Any], Any?, String)] = [
            ("huge dims", ["tensors", 0, "shape"], [1 << 40, 1 << 40], "shape [1099511627776, 1099511627776] is negative or too large"),
            ("over 4 GiB", ["tensors", 0, "shape"], [1 << 20, 1 << 20], "is negative or too large"),
            ("just over 4 GiB", ["tensors", 2, "shape"], [(1 << 31) + 1], "is negative or too large"),
            ("negative dim", ["tensors", 0, "shape"], [-2, 1], "is negative or too large"),
            ("two negative dims", ["tensors", 0, "shape"], [-2, -1], "is negative or too large"),
            ("Int overflow", ["tensors", 0, "shape"], [3_037_000_500, 3_037_000_500, 2], "is negative or too large"),
            ("Int.max dims", ["tensors", 1, "shape"], [Int.max, Int.max], "is negative or too large"),
            ("overflow to zero", ["tensors", 1, "shape"], [1 << 32, 1 << 32, 0], "is negative or too large"),
            ("rank 9", ["tensors", 1, "shape"], [1, 1, 1, 1, 1, 1, 1, 1, 2], "rank 9 exceeds 8"),
            ("past data", ["tensors", 3, "offset"], t3end - 2, "lies outside the \(data.count)-byte data section"),
            ("huge offset", ["tensors", 3, "offset"], Int.max, "lies outside"),
            ("negative offset", ["tensors", 0, "offset"], -1, "lies outside"),
            ("huge length", ["tensors", 1, "length"], Int.max, "lies outside"),
            ("negative length", ["tensors", 1, "length"], -8, "lies outside"),
            ("overlap", ["tensors", 1, "offset"], 4, "tensors overlap in the data section"),
            ("same range", ["tensors", 3, "offset"], 0, "tensors overlap"),
            ("duplicate name", ["tensors", 1, "name"], "g1.w", "tensor 'g1.w' appears twice"),
            ("unknown dtype", ["tensors", 2, "dtype"], "int8", "tensor 'g2.w': unknown dtype 'int8'"),
            ("bfloat16", ["tensors", 2, "dtype"], "bfloat16", "unknown dtype 'bfloat16'"),
            ("unknown encoding", ["tensors", 2, "encoding"], "lz4", "tensor 'g2.w': unknown encoding 'lz4'"),
            ("zstd size mismatch (shape)", ["tensors", 1, "shape"], [3], "tensor 'g1.b': zstd frame declares 8 bytes, the table says 12"),
            ("zstd size mismatch (dtype)", ["tensors", 2, "dtype"], "float32", "zstd frame declares 108 bytes, the table says 216"),
            ("zstd on raw bytes", ["tensors", 0, "encoding"], "zstd-shuffle", "tensor 'g1.w': stored bytes are not a zstd frame (bad"),
            ("raw length", ["tensors", 0, "shape"], [3], "tensor 'g1.w': raw length 8 differs from shape size 12"),
            ("raw length (dtype)", ["tensors", 3, "dtype"], "float32", "raw length 4 differs from shape size 8"),
            // Foundation's JSONDecoder reports numbers that do not fit the field's type as
            // "not valid JSON" with no coding path, so only the section can be asserted.
            ("negative crc", ["tensors", 0, "crc32"], -1, "manifest: "),
            ("crc over 32 bits", ["tensors", 0, "crc32"], 1 << 33, "manifest: "),
            ("fractional dim", ["tensors", 0, "shape"], [1.5], "manifest: "),
            ("dim 1e300", ["tensors", 0, "shape"], [1e300], "manifest: "),
            ("string dim", ["tensors", 0, "shape"], ["D"], "wrong type at .tensors[0].shape[0]"),
            ("missing length", ["tensors", 0, "length"], nil, "missing key 'length' at .tensors[0]"),
        ]
        _ = tensors
        for (what, path, value, fragment) in cases {
            let file = FileBuilder.assemble(manifest: FileBuilder.setting(manifest, path, value), data: data)
            assertInvalid(file, fragment, what)
        }
    }

    func testHostileZstdFrames() throws {
        let (manifest, data, tensors) = FileBuilder.base()
        let zstd = tensors[2].stored  // g2.w, a frame at offset table[2].offset
        let offset = FileBuilder.value(manifest, ["tensors", 2, "offset"]) as! Int
        func withStored(_ stored: [UInt8]) -> [UInt8] {
            let d = Array(data[0..<offset]) + stored + Array(data[(offset + zstd.count)...])
            var m = FileBuilder.setting(manifest, ["tensors", 2, "length"], stored.count)
            m = FileBuilder.setting(m, ["tensors", 2, "crc32"], Int(CRC32.checksum(stored[...])))
            m = FileBuilder.setting(m, ["tensors", 3, "offset"], offset + stored.count)
            return FileBuilder.assemble(manifest: m, data: d)
        }
        XCTAssertNoThrow(try ModelFile(bytes: withStored(zstd)))
        assertInvalid(withStored(zstd + [0]), "stored bytes are not exactly one complete zstd frame", "trailing byte")
        assertInvalid(withStored(zstd + zstd), "not exactly one complete zstd frame", "two frames")
        assertInvalid(withStored(Array(zstd.dropLast())), "tensor 'g2.w'", "truncated frame")
        assertInvalid(withStored(Array(zstd.prefix(4))), "tensor 'g2.w'", "magic only")
        assertInvalid(withStored([]), "tensor 'g2.w'", "empty")
        // A skippable frame holding the real frame: not allowed (docs/FORMAT.md).
        let skippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18] + (0..<4).map { UInt8(truncatingIfNeeded: zstd.count >> (8 * $0)) } + zstd
        assertInvalid(withStored(skippable), "tensor 'g2.w': stored bytes are not a zstd frame (bad or skippable-frame magic)", "skippable frame")
        // ... also for an empty tensor, where an empty skippable frame would "declare" 0 bytes.
        var m = FileBuilder.setting(manifest, ["tensors", 1, "shape"], [0, 4])
        let emptySkippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0]
        m = FileBuilder.setting(m, ["tensors", 1, "offset"], data.count)
        m = FileBuilder.setting(m, ["tensors", 1, "length"], emptySkippable.count)
        m = FileBuilder.setting(m, ["tensors", 1, "crc32"], Int(CRC32.checksum(emptySkippable[...])))
        assertInvalid(FileBuilder.assemble(manifest: m, data: data + emptySkippable), "skippable-frame magic", "empty skippable frame")
        // A frame that declares the right size but holds other content: decompression must fail
        // or produce the wrong count, never read or write out of bounds.
        let other = try ZstdCodec.compress([UInt8](repeating: 7, count: 50), level: 1)
        var forged = other
        // Patch the frame content size (one byte after the descriptor of a single-segment frame): 50 -> 108.
        XCTAssertEqual(forged[4] & 0xE0, 0x20, "expected a single-segment frame with a 1-byte content size")
        XCTAssertEqual(forged[5], 50)
        forged[5] = 108
        assertInvalid(withStored(forged), "tensor 'g2.w': zstd decompression failed", "forged content size")
        // Corrupt compressed payload bytes (checksum of the stored bytes updated) must fail cleanly.
        for i in 6..<zstd.count {
            var bad = zstd
            bad[i] ^= 0xFF
            do { _ = try ModelFile(bytes: withStored(bad)) } catch let e as CascadeSegError {
                guard case .invalidModel = e else { return XCTFail("\(e)") }
            }
        }
    }

    /// A 17-byte zstd frame that declares 4 GiB of content (one 1-byte RLE block): the reader
    /// must refuse it without committing gigabytes of memory first.
    func testFrameDeclaringHugeContentIsCheap() throws {
        let (manifest, data, _) = FileBuilder.base()
        let declared: UInt64 = 4 << 30
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xE0]  // magic; single segment, 8-byte content size
        frame += (0..<8).map { UInt8(truncatingIfNeeded: declared >> (8 * UInt64($0))) }
        frame += [0x0B, 0x00, 0x00, 0x00]  // last block, RLE, 1 byte of 0x00
        let offset = data.count
        var m = FileBuilder.setting(manifest, ["tensors", 1, "offset"], offset)
        m = FileBuilder.setting(m, ["tensors", 1, "length"], frame.count)
        m = FileBuilder.setting(m, ["tensors", 1, "shape"], [1 << 30])
        m = FileBuilder.setting(m, ["tensors", 1, "crc32"], Int(CRC32.checksum(frame[...])))
        let file = FileBuilder.assemble(manifest: m, data: data + frame)
        func maxRSS() -> Int { var u = rusage(); getrusage(RUSAGE_SELF.rawValue, &u); return u.ru_maxrss * 1024 }
        let before = maxRSS()
        let start = Date()
        assertInvalid(file, "tensor 'g1.b': zstd frame's blocks cannot produce the declared 4294967296 bytes")
        let grew = maxRSS() - before
        XCTAssertLessThan(grew, 256 << 20, "reading a \(file.count)-byte file raised the peak RSS by \(grew >> 20) MiB")
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.0)

        // Real frames of many blocks (RLE, raw and compressed) stay within the bound.
        var rng = SeededRandom(seed: 11)
        var model = ModelFixtures.cascade(seed: 6)
        model.weights["zeros"] = Tensor(zeros: [1 << 20])
        model.weights["noise"] = rng.tensor([150_000])
        model.weights["mixed"] = Tensor(shape: [160_000], data: (0..<160_000).map { $0 % 7 == 0 ? Float(rng.normal()) : 0 })
        for type in [ModelFile.WeightType.float32, .float16] {
            let read = try ModelFile(bytes: try model.serialized(weightType: type, compressionLevel: 1))
            XCTAssertEqual(read.weights["zeros"]?.data.allSatisfy { $0 == 0 }, true)
            XCTAssertEqual(read.weights["noise"]?.count, 150_000)
        }
    }

    func testHostileGraphsAndMetadata() {
        let (manifest, data, _) = FileBuilder.base()
        let cases: [(String, [Any], Any?, String)] = [
            ("unknown op", ["graphs", 0, "nodes", 0, "op"], "Frobnicate", "node 'conv': unsupported op type 'Frobnicate'"),
            ("lower-case op", ["graphs", 1, "nodes", 1, "op"], "relu", "unsupported op type 'relu'"),
            ("cycle", ["graphs", 1, "nodes", 0, "inputs", 0], "logits", "graph 'g2' contains a cycle"),
            ("self loop", ["graphs", 1, "nodes", 1, "inputs", 0], "logits", "contains a cycle"),
            ("undefined value", ["graphs", 0, "nodes", 0, "inputs", 0], "nowhere", "node 'conv' reads 'nowhere', which nothing defines"),
            ("undefined weight", ["graphs", 1, "nodes", 0, "inputs", 2], "g3.b", "reads 'g3.b', which nothing defines"),
            ("output defined twice", ["graphs", 1, "nodes", 1, "outputs", 0], "t0", "value 't0' is defined more than once"),
            ("output shadows weight", ["graphs", 1, "nodes", 0, "outputs", 0], "g1.w", "is defined more than once"),
            ("output unproduced", ["graphs", 0, "outputs", 0, "name"], "nothing", "graph output 'nothing' is not produced"),
            ("two inputs", ["graphs", 0, "inputs", 1], nil, ""),  // placeholder replaced below
            ("4-D input", ["graphs", 0, "inputs", 0, "shape"], [1, "D", "H", "W"], "input must be 5-D"),
            ("no outputs", ["graphs", 0, "outputs"], [] as [Any], "graph 'g1' has no outputs"),
            ("size_multiple", ["graphs", 0, "size_multiple"], [0, 1, 1], "size_multiple must be three integers"),
            ("attribute type", ["graphs", 1, "nodes", 0, "attributes", "pads"], ["a": 1], "an attribute must be a number"),
            ("stage names a missing graph", ["metadata", "stages", 1, "graph"], "ghost", "stage names graph 'ghost', which the file does not contain"),
            ("no stages", ["metadata", "stages"], [] as [Any], "at least one stage is required"),
            ("bad spacing", ["metadata", "stages", 0, "spacing_mm"], [1.0, 0.0, 1.0], "spacing_mm must be three positive numbers"),
            ("cascade names a non-stage", ["metadata", "cascade", "stage2"], "g3", "cascade names graph 'g3', which is not a stage"),
            ("negative margin", ["metadata", "cascade", "margin_mm"], -1.0, "margin_mm must be >= 0"),
            ("min_roi_size", ["metadata", "cascade", "min_roi_size"], [8, 0, 8], "min_roi_size must be three positive sizes"),
            ("prior box", ["metadata", "cascade", "priors"], [["label": 1, "box": [0, 0, 0, 1, 1]]], "prior box of label 1"),
            ("duplicate labels", ["metadata", "labels", 1, "id"], 0, "label ids must be unique"),
            ("label range", ["metadata", "labels", 1, "id"], -3, "label ids must be in 0...65535"),
            ("channels", ["metadata", "input", "channels"], 0, "input channels must be in 1...64"),
            ("normalization", ["metadata", "input", "normalization", "kind"], "magic", "unknown normalization 'magic'"),
            ("duplicate graph names", ["graphs", 1, "name"], "g1", "graph names must be unique"),
            ("missing metadata", ["metadata"], nil, "missing key 'metadata'"),
            ("graphs not a list", ["graphs"], "g1", "wrong type at .graphs"),
        ]
        for (what, path, value, fragment) in cases where what != "two inputs" {
            let file = FileBuilder.assemble(manifest: FileBuilder.setting(manifest, path, value), data: data)
            assertInvalid(file, fragment, what)
        }
        let inputs = FileBuilder.value(manifest, ["graphs", 0, "inputs"]) as! [Any]
        assertInvalid(FileBuilder.assemble(manifest: FileBuilder.setting(manifest, ["graphs", 0, "inputs"], inputs + inputs), data: data),
                      "graph 'g1' must have exactly one input, has 2", "two inputs")
    }

    func testInvalidAndDeeplyNestedJSON() {
        let (manifest, data, _) = FileBuilder.base()
        let valid = FileBuilder.json(manifest)
        let texts: [(String, [UInt8], String)] = [
            ("truncated JSON", Array(valid.dropLast()), "not valid JSON"),
            ("not JSON", Array("hello, world".utf8), "not valid JSON"),
            ("bare array", Array("[]".utf8), "wrong type"),
            ("NUL bytes", [UInt8](repeating: 0, count: 100), "not valid JSON"),
            ("invalid UTF-8", [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D], "manifest"),
            ("100000 nested arrays", Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8),
             "manifest"),
            ("100000 unclosed arrays", Array(String(repeating: "[", count: 100_000).utf8), "manifest"),
            ("100000 nested objects", Array((String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)).utf8),
             "manifest"),
        ]
        for (what, m, fragment) in texts {
            assertInvalid(FileBuilder.assemble(manifest: m, data: data), fragment, what)
        }
        // Deep nesting inside an otherwise valid manifest, where the decoder must skip it
        // (unknown key) or reject it (attribute value), without exhausting the stack.
        for depth in [100, 500, 100_000] {
            let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            var text = String(decoding: valid, as: UTF8.self)
            text.removeLast()  // the closing brace of the top-level object
            let unknownKey = Array((text + ",\"zz_future\":" + nested + "}").utf8)
            let attribute = Array(String(decoding: valid, as: UTF8.self)
                .replacingOccurrences(of: "\"pads\":[1,1,1,1,1,1]", with: "\"pads\":" + nested).utf8)
            XCTAssertNotEqual(attribute, valid)
            for (what, m) in [("unknown key", unknownKey), ("attribute", attribute)] {
                do {
                    _ = try ModelFile(bytes: FileBuilder.assemble(manifest: m, data: data))
                    // Foundation's parser accepts up to 512 levels; an unknown key is then ignored.
                    XCTAssertTrue(what == "unknown key" && depth <= 500, "depth \(depth) in \(what) was accepted")
                } catch CascadeSegError.invalidModel(let message) {
                    XCTAssertTrue(message.contains("manifest"), message)
                } catch {
                    XCTFail("depth \(depth) in \(what): \(error)")
                }
            }
        }
    }
}
