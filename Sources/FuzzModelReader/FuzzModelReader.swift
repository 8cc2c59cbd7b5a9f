// libFuzzer target for the `.cseg` reader (`make fuzz`).
//
// Built with `-sanitize=fuzzer -D CSEG_LIBFUZZER`, the entry point hands control to libFuzzer's
// driver, which calls `LLVMFuzzerTestOneInput` for every input. (SwiftPM links executables with
// `main` aliased to `<target>_main`, so libFuzzer's own `main` cannot be used; the entry point
// below takes its place and calls `LLVMFuzzerRunDriver`.) In a normal build this is a small tool:
//   FuzzModelReader --write-seed DIR    writes the seed corpus (small valid model files)
//   FuzzModelReader FILE|DIR ...        replays inputs (for instance a crash file) through the harness
import CascadeSeg
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? ModelFile(bytes: bytes)
    // Random mutations almost never keep the CRCs right, so the same input is also read with
    // the header and manifest CRCs recomputed (reaching the JSON and table checks), and with the
    // tensor CRCs in the manifest recomputed too (reaching zstd and the tensor decoding).
    if let resealed = Reseal.headerAndManifest(bytes) {
        _ = try? ModelFile(bytes: resealed)
        if let withTensors = Reseal.tensors(resealed) { _ = try? ModelFile(bytes: withTensors) }
    }
    return 0
}

/// CRC-32 (zlib polynomial), table driven; the library's own is internal.
enum CRC {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        (0..<8).reduce(UInt32(n)) { c, _ in c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }

    static func of<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        ~bytes.reduce(~UInt32(0)) { table[Int(($0 ^ UInt32($1)) & 0xFF)] ^ ($0 >> 8) }
    }
}

enum Reseal {
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
    static func put32(_ b: inout [UInt8], _ v: UInt32, _ at: Int) { for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    static func put64(_ b: inout [UInt8], _ v: Int, _ at: Int) { for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: UInt64(v) >> (8 * UInt64(i))) } }

    static func manifestRange(_ b: [UInt8]) -> Range<Int>? {
        guard b.count >= 64 else { return nil }
        let offset = u64(b, 16), length = u64(b, 24)
        guard offset <= UInt64(b.count), length <= UInt64(b.count) - offset else { return nil }
        return Int(offset)..<Int(offset + length)
    }

    /// The file with its manifest CRC (when the manifest range lies in the file) and header CRC recomputed.
    static func headerAndManifest(_ bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 64 else { return nil }
        var b = bytes
        if let m = manifestRange(b) { put32(&b, CRC.of(b[m]), 48) }
        put32(&b, CRC.of(b[0..<52]), 52)
        return b == bytes ? nil : b
    }

    /// Recomputes the `crc32` of every tensor whose stored range lies in the data section, and
    /// rebuilds the file around the re-encoded manifest.
    static func tensors(_ bytes: [UInt8]) -> [UInt8]? {
        guard let m = manifestRange(bytes),
              var manifest = (try? JSONSerialization.jsonObject(with: Data(bytes[m]))) as? [String: Any],
              var table = manifest["tensors"] as? [Any] else { return nil }
        let dataOffset = u64(bytes, 32), dataLength = u64(bytes, 40)
        guard dataOffset >= UInt64(m.upperBound), dataOffset <= UInt64(bytes.count), dataLength <= UInt64(bytes.count) - dataOffset else { return nil }
        let data = Array(bytes[Int(dataOffset)..<Int(dataOffset + dataLength)])
        var changed = false
        for (i, entry) in table.enumerated() {
            guard var t = entry as? [String: Any], let offset = t["offset"] as? Int, let length = t["length"] as? Int,
                  offset >= 0, length >= 0, offset <= data.count, length <= data.count - offset else { continue }
            let crc = Int(CRC.of(data[offset..<(offset + length)]))
            if (t["crc32"] as? Int) != crc { t["crc32"] = crc; table[i] = t; changed = true }
        }
        guard changed else { return nil }
        manifest["tensors"] = table
        guard let json = try? JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]) else { return nil }
        return SeedWriter.assemble(manifest: [UInt8](json), data: data)
    }
}

/// Small valid model files covering both stages, both dtypes, both encodings and many ops.
enum SeedWriter {
    static func assemble(manifest: [UInt8], data: [UInt8]) -> [UInt8] {
        let dataOffset = (64 + manifest.count + 63) / 64 * 64
        var header = [UInt8](repeating: 0, count: 64)
        header.replaceSubrange(0..<8, with: ModelFile.magic)
        Reseal.put32(&header, ModelFile.formatVersion, 8)
        Reseal.put32(&header, 64, 12)
        Reseal.put64(&header, 64, 16)
        Reseal.put64(&header, manifest.count, 24)
        Reseal.put64(&header, dataOffset, 32)
        Reseal.put64(&header, data.count, 40)
        Reseal.put32(&header, CRC.of(manifest), 48)
        Reseal.put32(&header, CRC.of(header[0..<52]), 52)
        return header + manifest + [UInt8](repeating: 0, count: dataOffset - 64 - manifest.count) + data
    }

    static func values(_ n: Int, seed: Int) -> [Float] {
        (0..<n).map { i in Float(((i * 7919 + seed * 104_729) % 2001) - 1000) / 4000 }
    }

    static func image(_ c: Int) -> [ValueInfo] {
        [ValueInfo(name: "image", shape: [.fixed(1), .fixed(c), .symbol("D"), .symbol("H"), .symbol("W")])]
    }

    static func cascade() -> ModelFile {
        let g1 = Graph(name: "stage1", inputs: image(1), outputs: [ValueInfo(name: "logits", shape: [.fixed(1), .fixed(3), .symbol("D"), .symbol("H"), .symbol("W")])],
                       nodes: [Node(name: "c0", op: .conv, inputs: ["image", "c0.w", "c0.b"], outputs: ["t0"],
                                    attributes: ["pads": .ints([1, 1, 1, 1, 1, 1]), "activation": .string("relu")]),
                               Node(name: "head", op: .conv, inputs: ["t0", "head.w", "head.b"], outputs: ["logits"])],
                       sizeMultiple: [2, 2, 2])
        let g2 = Graph(name: "stage2", inputs: image(1), outputs: [ValueInfo(name: "labels", shape: [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])],
                       nodes: [Node(name: "r0", op: .conv, inputs: ["image", "r0.w", ""], outputs: ["u0"], attributes: ["pads": .ints([1, 1, 1, 1, 1, 1])]),
                               Node(name: "n0", op: .instanceNormalization, inputs: ["u0", "n0.scale", "n0.bias"], outputs: ["u1"],
                                    attributes: ["epsilon": .float(1e-5), "activation": .string("leaky_relu"), "activation_alpha": .float(0.01)]),
                               Node(name: "sm", op: .softmax, inputs: ["u1"], outputs: ["p"], attributes: ["axis": .int(1)]),
                               Node(name: "am", op: .argMax, inputs: ["p"], outputs: ["labels"], attributes: ["axis": .int(1), "keepdims": .int(1)])])
        let weights: [String: Tensor] = [
            "c0.w": Tensor(shape: [2, 1, 3, 3, 3], data: values(54, seed: 1)), "c0.b": Tensor(shape: [2], data: values(2, seed: 2)),
            "head.w": Tensor(shape: [3, 2, 1, 1, 1], data: values(6, seed: 3)), "head.b": Tensor(shape: [3], data: values(3, seed: 4)),
            "r0.w": Tensor(shape: [3, 1, 3, 3, 3], data: values(81, seed: 5)),
            "n0.scale": Tensor(shape: [3], data: [1, 0.5, 2]), "n0.bias": Tensor(shape: [3], data: [0, 0.1, -0.1]),
        ]
        let metadata = ModelMetadata(
            name: "seed-cascade", description: "fuzz seed", license: "CC0-1.0",
            labels: [.init(id: 0, name: "background"), .init(id: 1, name: "a"), .init(id: 2, name: "b")],
            input: .init(channels: 1, normalization: .init(kind: "ct", clip: [-100, 200], mean: 40, std: 50)),
            stages: [.init(graph: "stage1", spacingMM: [3, 3, 3]), .init(graph: "stage2", spacingMM: [1, 1, 1])],
            cascade: .init(stage1: "stage1", stage2: "stage2", marginMM: 4, minROISize: [8, 8, 8], labelGroups: [[1, 2]],
                           priors: [.init(label: 2, box: [0, 0, 0, 0.5, 1, 1])]))
        return ModelFile(metadata: metadata, graphs: [g1, g2], weights: weights)
    }

    /// One stage exercising most operators (shapes need not make sense to the reader).
    static func manyOps() -> ModelFile {
        func n(_ name: String, _ op: OpType, _ inputs: [String], _ attributes: [String: AttributeValue] = [:]) -> Node {
            Node(name: name, op: op, inputs: inputs, outputs: [name + ".out"], attributes: attributes)
        }
        let nodes = [
            n("pad", .pad, ["image"], ["pads": .ints([1, 1, 1, 1, 1, 1]), "mode": .string("reflect")]),
            n("pool", .maxPool, ["pad.out"], ["kernel_shape": .ints([2, 2, 2]), "strides": .ints([2, 2, 2])]),
            n("avg", .averagePool, ["pool.out"], ["kernel_shape": .ints([3, 3, 3]), "pads": .ints([1, 1, 1, 1, 1, 1])]),
            n("bn", .batchNormalization, ["avg.out", "bn.s", "bn.b", "bn.m", "bn.v"]),
            n("gn", .groupNormalization, ["bn.out", "bn.s", "bn.b"], ["num_groups": .int(1)]),
            n("up", .convTranspose, ["gn.out", "up.w"], ["strides": .ints([2, 2, 2])]),
            n("pr", .prelu, ["up.out", "pr.slope"]),
            n("lr", .leakyRelu, ["pr.out"], ["alpha": .float(0.2)]),
            n("mul", .mul, ["lr.out", "mul.k"]),
            n("sig", .sigmoid, ["mul.out"]),
            n("tanh", .tanh, ["sig.out"]),
            n("rs", .resize, ["tanh.out", "image"], ["mode": .string("linear"), "coordinate_transformation_mode": .string("align_corners")]),
            n("cat", .concat, ["rs.out", "image"], ["axis": .int(1)]),
            n("sl", .slice, ["cat.out"], ["starts": .ints([0]), "ends": .ints([1]), "axes": .ints([1])]),
            n("id", .identity, ["sl.out"]),
        ]
        let graph = Graph(name: "net", inputs: image(1), outputs: [ValueInfo(name: "id.out", shape: [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])],
                          nodes: nodes, sizeMultiple: [2, 2, 2])
        let one = Tensor(shape: [1], data: [1])
        let weights: [String: Tensor] = ["bn.s": one, "bn.b": Tensor(shape: [1], data: [0]), "bn.m": Tensor(shape: [1], data: [0.5]),
                                         "bn.v": Tensor(shape: [1], data: [2]), "up.w": Tensor(shape: [1, 1, 2, 2, 2], data: values(8, seed: 6)),
                                         "pr.slope": Tensor(shape: [1, 1, 1, 1], data: [0.25]), "mul.k": Tensor(shape: [], data: [3])]
        let metadata = ModelMetadata(name: "seed-ops", labels: [.init(id: 0, name: "background"), .init(id: 1, name: "x")],
                                     input: .init(channels: 1, normalization: .init(kind: "percentile", lower: 0.5, upper: 99.5)),
                                     stages: [.init(graph: "net", spacingMM: [1, 0.8, 0.8])])
        return ModelFile(metadata: metadata, graphs: [graph], weights: weights)
    }

    /// A hand-made file with `raw` tensors (the library's writer always compresses).
    static func rawEncoded() -> [UInt8] {
        func le(_ v: [Float], half: Bool) -> [UInt8] {
            v.flatMap { x -> [UInt8] in
                if half { let h = Float16Conversion.fromFloat(x); return [UInt8(h & 0xFF), UInt8(h >> 8)] }
                return (0..<4).map { UInt8(truncatingIfNeeded: x.bitPattern >> (8 * UInt32($0))) }
            }
        }
        let w = le(values(8, seed: 7), half: false), b = le([0.5, -0.5], half: true)
        let table: [[String: Any]] = [
            ["name": "w", "dtype": "float32", "shape": [2, 1, 1, 2, 2], "offset": 0, "length": w.count, "encoding": "raw", "crc32": Int(CRC.of(w))],
            ["name": "b", "dtype": "float16", "shape": [2], "offset": w.count, "length": b.count, "encoding": "raw", "crc32": Int(CRC.of(b))],
        ]
        let manifest: [String: Any] = [
            "metadata": ["name": "seed-raw", "description": "", "license": "",
                         "labels": [["id": 0, "name": "background"], ["id": 1, "name": "x"]],
                         "input": ["channels": 1, "normalization": ["kind": "zscore", "foreground": "all"]],
                         "stages": [["graph": "g", "spacing_mm": [1, 1, 1]]]] as [String: Any],
            "graphs": [["name": "g", "inputs": [["name": "x", "shape": [1, 1, "D", "H", "W"]]],
                        "outputs": [["name": "y", "shape": [1, 2, "D", "H", "W"]]],
                        "nodes": [["name": "conv", "op": "Conv", "inputs": ["x", "w", "b"], "outputs": ["y"],
                                   "attributes": ["pads": [0, 0, 0, 1, 1, 1], "group": 1, "activation": "sigmoid"]]]]],
            "tensors": table,
        ]
        let json = try! JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
        return assemble(manifest: [UInt8](json), data: w + b)
    }

    static func seeds() throws -> [(String, [UInt8])] {
        [("cascade-f32.cseg", try cascade().serialized(weightType: .float32)),
         ("cascade-f16.cseg", try cascade().serialized(weightType: .float16)),
         ("ops-f32.cseg", try manyOps().serialized(weightType: .float32, compressionLevel: 19)),
         ("raw.cseg", rawEncoded())]
    }
}

#if CSEG_LIBFUZZER
typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// `int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*cb)(const uint8_t *, size_t))`, in libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: FuzzCallback) -> CInt

@_cdecl("FuzzModelReader_main")
func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc, vector = argv
    return LLVMFuzzerRunDriver(&count, &vector) { data, size in
        fuzz(data ?? UnsafePointer(bitPattern: 1)!, size)
    }
}
#else
@main
enum FuzzModelReaderMain {
    static func main() throws {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--write-seed" {
            guard arguments.count == 2 else { throw CascadeSegError.usage("usage: FuzzModelReader --write-seed DIR") }
            try FileManager.default.createDirectory(atPath: arguments[1], withIntermediateDirectories: true)
            for (name, bytes) in try SeedWriter.seeds() {
                _ = try ModelFile(bytes: bytes)  // every seed must be valid
                try Data(bytes).write(to: URL(fileURLWithPath: arguments[1] + "/" + name))
                print("\(arguments[1])/\(name): \(bytes.count) bytes")
            }
            return
        }
        guard !arguments.isEmpty else {
            print("usage: FuzzModelReader --write-seed DIR | FuzzModelReader FILE|DIR ...  (build with `make fuzz` to fuzz)")
            return
        }
        var files: [String] = []
        while let path = arguments.popLast() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                files += try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        for file in files {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
            _ = bytes.withUnsafeBufferPointer { fuzz($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
            // What the reader says about the input as given and after each resealing step.
            var verdicts: [String] = []
            var input: [UInt8]? = bytes
            for step in 0..<3 {
                guard let b = input else { break }
                do { _ = try ModelFile(bytes: b); verdicts.append("valid") } catch { verdicts.append("\(error)") }
                input = step == 0 ? Reseal.headerAndManifest(b) : Reseal.tensors(b)
            }
            print("\(file): " + verdicts.joined(separator: " | resealed: "))
        }
    }
}
#endif
