import Foundation
import XCTest
@testable import CascadeSeg

/// `cascadeseg convert`: ONNX files exported from PyTorch (tools/make_onnx_fixtures.py) are
/// converted in-process, run by the engine and compared with the PyTorch outputs stored next to
/// them; hostile ONNX files must each fail with a clear CascadeSegError.
final class OnnxConverterTests: XCTestCase {
    static var fixtures: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures").appendingPathComponent("onnx") }

    // MARK: - PyTorch exports, run by the engine

    @discardableResult
    func checkAgainstPyTorch(_ name: String, file: String? = nil, weightType: ModelFile.WeightType = .float32,
                             maxRelativeL2: Double = 1e-4, maxAbs: Float = 1e-3) throws -> OnnxConverter.Result {
        let path = Self.fixtures.appendingPathComponent("\(file ?? name).onnx").path
        let result = try OnnxConverter.convert(contentsOf: path)
        // Through the file format and back, as `cascadeseg convert` writes it.
        let model = try ModelFile(bytes: try result.model.serialized(weightType: weightType))
        XCTAssertEqual(model.graphs, result.model.graphs)
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let network = try Network(model: model, context: context)
        let pairs = try FixturePairs.load(name, in: Self.fixtures)
        XCTAssertEqual(pairs.count, 2, "fixtures for \(name) are missing")
        for (size, x, expected) in pairs {
            let y = try network.run(x).outputs[network.graph.outputs[0].name]!
            XCTAssertEqual(y.shape, expected.shape, "\(name) \(size)")
            guard y.shape == expected.shape else { continue }
            let (relativeL2, maxErr) = differences(y.data, expected.data)
            XCTAssertLessThanOrEqual(relativeL2, maxRelativeL2, "\(name) \(size)")
            XCTAssertLessThanOrEqual(maxErr, maxAbs, "\(name) \(size)")
        }
        return result
    }

    func ops(_ graph: Graph) -> [OpType: Int] {
        var count: [OpType: Int] = [:]
        for n in graph.nodes { count[n.op, default: 0] += 1 }
        return count
    }

    func testPlainConvUNetMatchesPyTorch() throws {
        let r = try checkAgainstPyTorch("plain_unet")
        let g = r.model.graphs[0]
        XCTAssertEqual(ops(g), [.conv: 11, .instanceNormalization: 10, .leakyRelu: 10, .convTranspose: 2, .concat: 2])
        XCTAssertEqual(g.sizeMultiple, [4, 4, 4])
        XCTAssertEqual(g.input.shape, [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])
        XCTAssertEqual(r.model.metadata.stages, [ModelMetadata.Stage(graph: "stage1", spacingMM: [1, 1, 1])])
        XCTAssertEqual(r.model.metadata.labels.map(\.id), [0, 1, 2])
        XCTAssertEqual(r.model.metadata.input, .init(channels: 1, normalization: .none))
        XCTAssertEqual(r.model.parameterCount, 21527)
    }

    func testPlainConvUNetWithFloat16Weights() throws {
        // float16 storage rounds the weights: a looser, still tight, comparison.
        try checkAgainstPyTorch("plain_unet", weightType: .float16, maxRelativeL2: 3e-3, maxAbs: 2e-2)
    }

    func testBatchNormInterpolationNetMatchesPyTorch() throws {
        let r = try checkAgainstPyTorch("bn_interp")
        let g = r.model.graphs[0]
        XCTAssertEqual(ops(g), [.conv: 2, .relu: 1, .resize: 1, .maxPool: 1, .concat: 1, .batchNormalization: 1, .sigmoid: 1])
        XCTAssertEqual(g.sizeMultiple, [1, 1, 1], "odd sizes are allowed")
        let resize = try XCTUnwrap(g.nodes.first { $0.op == .resize })
        XCTAssertEqual(resize.attributes["scales"], .numbers([2, 2, 2]))
        XCTAssertEqual(resize.attributes["mode"], .string("linear"))
        XCTAssertEqual(resize.inputs.count, 1, "the scales constant became an attribute")
    }

    func testDynamoExportMatchesPyTorch() throws {
        // Written by torch.onnx.export(dynamo=True) at opset 18, with the exporter's per-node
        // metadata kept.
        let r = try checkAgainstPyTorch("bn_interp", file: "bn_interp_dynamo")
        XCTAssertEqual(r.imported.opset, 18)
        XCTAssertEqual(ops(r.model.graphs[0]), [.conv: 2, .relu: 1, .resize: 1, .maxPool: 1, .concat: 1, .batchNormalization: 1, .sigmoid: 1])
    }

    func testMiscOpsNetMatchesPyTorch() throws {
        let r = try checkAgainstPyTorch("misc_ops")
        let g = r.model.graphs[0]
        XCTAssertEqual(ops(g)[.groupNormalization], 1, "GroupNorm pattern fused")
        XCTAssertNil(ops(g)[.instanceNormalization])
        XCTAssertEqual(ops(g)[.mul], 1, "only the Div by a constant remains a Mul; the GroupNorm affine was folded")
        XCTAssertEqual(g.sizeMultiple, [2, 2, 2])
        let pad = try XCTUnwrap(g.nodes.first { $0.op == .pad })
        XCTAssertEqual(pad.attributes["pads"], .ints([1, 1, 1, 1, 1, 1]))
        XCTAssertEqual(pad.attributes["mode"], .string("edge"))
        let resizes = g.nodes.filter { $0.op == .resize }
        XCTAssertEqual(resizes.count, 2)
        XCTAssertTrue(resizes.contains { $0.inputs.count == 2 }, "interpolation to another tensor's size uses the reference input")
        let slice = try XCTUnwrap(g.nodes.first { $0.op == .slice })
        XCTAssertEqual(slice.attributes["axes"], .ints([3]))
        XCTAssertEqual(slice.attributes["starts"], .ints([1]))
        XCTAssertEqual(slice.attributes["ends"], .ints([Int(Int32.max)]))
        XCTAssertEqual(g.nodes.count, 16, "shape subgraphs and constants are folded away")
    }

    // MARK: - Networks as users build them (nnU-Net's dynamic-network-architectures, MONAI)

    /// Every export of `name` that tools/make_onnx_fixtures.py wrote: the TorchScript-based
    /// exporter at opsets 17 and 18 and, where it worked, the dynamo exporter at 18 and 17.
    /// All of them share the network's stored inputs and PyTorch outputs.
    func checkExports(_ name: String, suffixes: [String] = ["", "_op18", "_dynamo", "_dynamo_op17"], nodes: [OpType: Int],
                      sizeMultiple: [Int], file: StaticString = #filePath, line: UInt = #line) throws {
        for f in suffixes.map({ name + $0 }) {
            let r = try checkAgainstPyTorch(name, file: f)
            let g = r.model.graphs[0]
            XCTAssertEqual(r.imported.opset, f.hasSuffix("op18") || f.hasSuffix("_dynamo") ? 18 : 17, f, file: file, line: line)
            XCTAssertEqual(ops(g), nodes, f, file: file, line: line)
            XCTAssertEqual(g.sizeMultiple, sizeMultiple, f, file: file, line: line)
            XCTAssertEqual(g.input.shape, [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")], f, file: file, line: line)
            XCTAssertEqual(g.outputs[0].shape, [.fixed(1), .fixed(3), .symbol("D"), .symbol("H"), .symbol("W")], f, file: file, line: line)
        }
    }

    func testNnUNetPlainConvUNetMatchesPyTorch() throws {
        // Anisotropic: kernels (1, 3, 3) and strides (1, 2, 2), so D may be odd.
        try checkExports("nnunet_plain", nodes: [.conv: 11, .instanceNormalization: 10, .leakyRelu: 10, .convTranspose: 2, .concat: 2],
                         sizeMultiple: [1, 4, 4])
    }

    func testNnUNetResidualEncoderUNetMatchesPyTorch() throws {
        // Stem, BasicBlockD with AvgPool + 1x1x1 conv on the strided skip paths.
        try checkExports("nnunet_resenc", nodes: [.conv: 16, .instanceNormalization: 15, .leakyRelu: 13, .add: 5, .averagePool: 2,
                                                  .convTranspose: 2, .concat: 2], sizeMultiple: [4, 4, 4])
    }

    func testMonaiUNetMatchesPyTorch() throws {
        // Residual units, PReLU, ConvTranspose (k 3, s 2, padding 1, output_padding 1).
        try checkExports("monai_unet", nodes: [.conv: 11, .instanceNormalization: 9, .prelu: 9, .add: 5, .concat: 2, .convTranspose: 2],
                         sizeMultiple: [4, 4, 4])
        let g = try OnnxConverter.convert(contentsOf: Self.fixtures.appendingPathComponent("monai_unet.onnx").path).model.graphs[0]
        XCTAssertTrue(g.nodes.contains { $0.op == .convTranspose && $0.attributes["output_padding"] == .ints([1, 1, 1]) })
    }

    func testMonaiBasicUNetMatchesPyTorch() throws {
        // Its UpCat pads only where the traced sizes differed: the TorchScript exporter writes
        // Pads of zeros. The dynamo exporter cannot write its Pad at opset 17 (no opset 17 file).
        try checkExports("monai_basicunet", suffixes: ["", "_op18", "_dynamo"], nodes: [.conv: 19, .instanceNormalization: 18, .leakyRelu: 18, .maxPool: 4,
                                                    .convTranspose: 4, .concat: 4], sizeMultiple: [16, 16, 16])
    }

    func testMonaiSegResNetMatchesPyTorch() throws {
        // GroupNorm export pattern (Reshape -> InstanceNormalization -> Reshape -> Mul -> Add)
        // and trilinear upsampling by 2.
        try checkExports("monai_segresnet", nodes: [.conv: 18, .groupNormalization: 13, .relu: 13, .add: 8, .resize: 2],
                         sizeMultiple: [4, 4, 4])
    }

    func testMonaiDynUNetMatchesPyTorch() throws {
        // Residual blocks, strides (2, 2, 1): W may be odd.
        try checkExports("monai_dynunet", nodes: [.conv: 14, .instanceNormalization: 13, .leakyRelu: 10, .add: 3, .concat: 2,
                                                  .convTranspose: 2], sizeMultiple: [4, 4, 1])
    }

    // MARK: - Small ONNX models built here

    func testWeightDataTypesAndLayouts() throws {
        let w: [Float] = [0.5, -1.25]
        let cases: [(String, OnnxTestModel.Tensor)] = [
            ("float raw_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, raw: w.flatMap { $0.bitPattern.littleEndianBytes })),
            ("float_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: w)),
            ("float16 raw_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 10,
                                       raw: w.flatMap { Float16Conversion.fromFloat($0).littleEndianBytes })),
            ("float16 int32_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 10,
                                         int32Data: w.map { Int64(Float16Conversion.fromFloat($0)) })),
            ("double raw_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 11,
                                      raw: w.flatMap { Double($0).bitPattern.littleEndianBytes })),
            ("double_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 11, doubleData: w.map(Double.init))),
            ("int32_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 6, int32Data: [3, -4])),
            ("int64 raw_data", .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 7, raw: [Int64(3), -4].flatMap { $0.littleEndianBytes })),
        ]
        for (what, tensor) in cases {
            let result = try OnnxConverter.convert(bytes: OnnxTestModel.conv1x1(weight: tensor).bytes)
            let expected: [Float] = tensor.dataType == 6 || tensor.dataType == 7 ? [3, -4] : w
            XCTAssertEqual(result.model.weights["w"]?.data, expected, what)
            XCTAssertEqual(result.model.weights["w"]?.shape, [2, 1, 1, 1, 1], what)
        }
    }

    /// Opset 11 writes a channel softmax as Transpose -> Softmax(last axis) -> Transpose, and
    /// `argmax(1).long().unsqueeze(1)` as ArgMax(keepdims 0) -> Cast -> Unsqueeze.
    func testOlderOpsetSoftmaxAndArgMaxPatterns() throws {
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        m.opset = 11
        m.nodes += [
            .init(op: "Transpose", name: "t1", inputs: ["y"], outputs: ["yt"], attributes: [.ints("perm", [0, 4, 2, 3, 1])]),
            .init(op: "Softmax", name: "sm", inputs: ["yt"], outputs: ["st"], attributes: [.int("axis", 4)]),
            .init(op: "Transpose", name: "t2", inputs: ["st"], outputs: ["probs"], attributes: [.ints("perm", [0, 4, 2, 3, 1])]),
            .init(op: "ArgMax", name: "am", inputs: ["probs"], outputs: ["idx"], attributes: [.int("axis", 1), .int("keepdims", 0)]),
            .init(op: "Cast", name: "cast", inputs: ["idx"], outputs: ["idx64"], attributes: [.int("to", 7)]),
            .init(op: "Unsqueeze", name: "unsq", inputs: ["idx64"], outputs: ["labels"], attributes: [.ints("axes", [1])]),
        ]
        m.outputs = [("labels", 1), ("probs", 2)]
        let g = try OnnxConverter.convert(bytes: m.bytes).model.graphs[0]
        XCTAssertEqual(g.nodes.map(\.op), [.conv, .softmax, .argMax])
        XCTAssertEqual(g.nodes[1].attributes["axis"], .int(1))
        XCTAssertEqual(g.outputs.map(\.name), ["labels", "probs"])
        XCTAssertEqual(g.outputs[0].shape, [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])
        // A Transpose that is not part of the pattern is reported as such.
        m.nodes[2].attributes = [.ints("perm", [0, 1, 2, 3, 4])]
        let message = try conversionError(m.bytes)
        XCTAssertTrue(message.contains("Transpose (nodes 't1', 't2')"), message)
    }

    /// MONAI's BasicUNet pads the upsampled tensor only where the traced sizes differed, so
    /// the TorchScript exporter writes Pads of zeros; they become renames.
    func testPadOfZerosIsDropped() throws {
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        m.initializers.append(.init(name: "zeros", dims: [10], dataType: 7, raw: [Int64](repeating: 0, count: 10).flatMap(\.littleEndianBytes)))
        m.initializers.append(.init(name: "ones", dims: [10], dataType: 7, raw: [Int64](repeating: 0, count: 10).enumerated()
            .map { $0.offset >= 2 && $0.offset != 5 && $0.offset != 6 ? Int64(1) : 0 }.flatMap(\.littleEndianBytes)))
        m.nodes += [
            .init(op: "Pad", name: "pad_zero", inputs: ["y", "zeros"], outputs: ["p"], attributes: [.string("mode", "edge")]),
            .init(op: "Relu", name: "relu", inputs: ["p"], outputs: ["z"]),
        ]
        m.outputs = [("z", 2)]
        let r = try OnnxConverter.convert(bytes: m.bytes)
        XCTAssertEqual(r.model.graphs[0].nodes.map(\.op), [.conv, .relu])
        XCTAssertEqual(r.model.graphs[0].nodes[1].inputs, ["y"])
        XCTAssertTrue(r.imported.notes.contains { $0.contains("'pad_zero' pads nothing") }, "\(r.imported.notes)")
        // A Pad that pads is kept.
        m.nodes[m.nodes.count - 2].inputs = ["y", "ones"]
        let kept = try OnnxConverter.convert(bytes: m.bytes).model.graphs[0]
        XCTAssertEqual(kept.nodes.map(\.op), [.conv, .pad, .relu])
        XCTAssertEqual(kept.nodes[1].attributes["pads"], .ints([1, 1, 1, 1, 1, 1]))
    }

    /// The dynamo exporter names an axis declared as a multiple of 4 `4*_D`: such expressions
    /// become plain D, H, W symbols (without tying two axes together).
    func testDimensionExpressionsBecomePlainSymbols() throws {
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        m.inputShape = [.value(1), .value(1), .param("4*_D"), .param("16*s1"), .param("W")]
        let g = try OnnxConverter.convert(bytes: m.bytes).model.graphs[0]
        XCTAssertEqual(g.input.shape, [.fixed(1), .fixed(1), .symbol("D"), .symbol("H"), .symbol("W")])
        XCTAssertEqual(g.outputs[0].shape, [.fixed(1), .fixed(2), .symbol("D"), .symbol("H"), .symbol("W")])
        m.inputShape = [.value(1), .value(1), .param("2*_D"), .param("D"), .param("")]
        let tied = try OnnxConverter.convert(bytes: m.bytes).model.graphs[0]
        XCTAssertEqual(tied.input.shape, [.fixed(1), .fixed(1), .symbol("D_0"), .symbol("D"), .symbol("W")])
        XCTAssertTrue(OnnxImporter.isPlainSymbol("batch_size2"))
        for bad in ["", "2D", "4*_D", "s0 + 1", "ä"] { XCTAssertFalse(OnnxImporter.isPlainSymbol(bad), bad) }
    }

    func testUnsupportedOperatorsAreListedWithNodeNames() throws {
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        // y -> LSTM -> Einsum -> Einsum -> z; plus a dead unsupported node that must not be listed.
        m.nodes += [
            .init(op: "LSTM", name: "rnn_0", inputs: ["y"], outputs: ["l"]),
            .init(op: "Einsum", name: "ein_a", inputs: ["l"], outputs: ["e1"]),
            .init(op: "Einsum", name: "ein_b", inputs: ["e1"], outputs: ["z"]),
            .init(op: "TopK", name: "dead_topk", inputs: ["y"], outputs: ["unused"]),
        ]
        m.outputs = [("z", 1)]
        let message = try conversionError(m.bytes)
        XCTAssertTrue(message.contains("unsupported ONNX operators"), message)
        XCTAssertTrue(message.contains("LSTM (node 'rnn_0')"), message)
        XCTAssertTrue(message.contains("Einsum (nodes 'ein_a', 'ein_b')"), message)
        XCTAssertFalse(message.contains("TopK"), "dead nodes are not reported: \(message)")
    }

    func testUnsupportedAttributesAreReportedPerNode() throws {
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        m.initializers.append(.init(name: "scales", dims: [5], dataType: 1, floatData: [1, 1, 2, 2, 2]))
        m.nodes += [
            .init(op: "Resize", name: "up_cubic", inputs: ["y", "", "scales"], outputs: ["u"], attributes: [.string("mode", "cubic")]),
            .init(op: "Softmax", name: "sm_w", inputs: ["u"], outputs: ["z"], attributes: [.int("axis", -1)]),
        ]
        m.outputs = [("z", 1)]
        let message = try conversionError(m.bytes)
        XCTAssertTrue(message.contains("node 'up_cubic' (Resize): mode 'cubic' is not supported"), message)
        XCTAssertTrue(message.contains("node 'sm_w' (Softmax): only Softmax over channels"), message)
    }

    func conversionError(_ bytes: [UInt8], baseDirectory: String? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        do {
            _ = try OnnxConverter.convert(try OnnxModelProto(bytes: bytes), baseDirectory: baseDirectory, options: .init())
        } catch let error as CascadeSegError {
            return error.description
        }
        XCTFail("conversion succeeded", file: file, line: line)
        return ""
    }

    // MARK: - Hostile files

    func testTruncatedFileIsRefused() throws {
        let bytes = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("bn_interp.onnx")))
        for cut in [1, 10, bytes.count / 2, bytes.count - 1] {
            let message = try conversionError(Array(bytes.prefix(cut)))
            XCTAssertTrue(message.hasPrefix("invalid model file: ONNX protobuf"), "\(cut): \(message)")
        }
    }

    func testWrongWireTypeIsRefused() throws {
        // ModelProto.graph (field 7) as a varint instead of a message.
        XCTAssertTrue(try conversionError([7 << 3 | 0, 1]).contains("field 7 (graph) has wire type 0, expected 2"))
        // ir_version (field 1) as a length-delimited value.
        XCTAssertTrue(try conversionError([1 << 3 | 2, 0]).contains("field 1 (ir_version) has wire type 2"))
        // Deprecated group wire types.
        XCTAssertTrue(try conversionError([1 << 3 | 3]).contains("unsupported wire type 3"))
        // An eleven-byte varint.
        XCTAssertTrue(try conversionError([1 << 3] + [UInt8](repeating: 0xFF, count: 10) + [1]).contains("varint"))
    }

    func testLengthPastTheEndIsRefused() throws {
        // graph: length 16, but only one byte follows.
        let message = try conversionError([7 << 3 | 2, 16, 0])
        XCTAssertTrue(message.contains("length 16 runs past the end of the message (1 bytes left)"), message)
        // A nested message whose inner length exceeds the outer one.
        let nested = try conversionError([7 << 3 | 2, 3, 1 << 3 | 2, 50, 0, 0])
        XCTAssertTrue(nested.contains("ModelProto.graph: length 50 runs past"), nested)
        // A huge length (2^62).
        let huge = try conversionError([7 << 3 | 2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40])
        XCTAssertTrue(huge.contains("runs past the end"), huge)
    }

    func testNegativeAndHugeDimensionsAreRefused() throws {
        for (dims, expected) in [([Int64(2), -1, 1, 1, 1], "negative dimension in [2, -1, 1, 1, 1]"),
                                 ([Int64(1) << 20, 1 << 20, 1 << 20, 1, 1], "has more than 2^30 elements"),
                                 ([Int64.max, 2, 1, 1, 1], "has more than 2^30 elements")] {
            let m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: dims, dataType: 1, raw: [0, 0, 0, 0]))
            let message = try conversionError(m.bytes)
            XCTAssertTrue(message.hasPrefix("invalid model file: ONNX tensor 'w': ") && message.contains(expected), message)
        }
        // A declared input with a huge spatial size.
        var m = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, floatData: [1, 2]))
        m.inputShape = [.value(1), .value(1), .value(1 << 40), .param("H"), .param("W")]
        XCTAssertTrue(try conversionError(m.bytes).contains("spatial size 1099511627776"))
        // raw_data that does not match the shape.
        let short = OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, raw: [0, 0, 0, 0]))
        XCTAssertTrue(try conversionError(short.bytes).contains("raw_data has 4 bytes, shape [2, 1, 1, 1, 1] of float needs 8"))
    }

    /// Randomly corrupted exports: every outcome is a conversion or a CascadeSegError (no trap,
    /// no other error type), and every model that converts passes the file format's checks.
    func testCorruptedExportsFailCleanly() throws {
        var rng = SplitMixRandom(seed: 77)
        var converted = 0, refused = 0
        for name in ["bn_interp", "misc_ops"] {
            let original = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("\(name).onnx")))
            for _ in 0..<150 {
                var bytes = original
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    let at = Int(rng.next() % UInt64(bytes.count))
                    switch rng.next() % 4 {
                    case 0: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: bytes[at] ^= 1 << UInt8(rng.next() % 8)
                    case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                    default: bytes = Array(bytes.prefix(at))
                    }
                    if bytes.isEmpty { break }
                }
                do {
                    let r = try OnnxConverter.convert(bytes: bytes)
                    _ = try ModelFile(bytes: try r.model.serialized(compressionLevel: 1))
                    converted += 1
                } catch is CascadeSegError {
                    refused += 1
                }
            }
        }
        XCTAssertEqual(converted + refused, 300)
        XCTAssertGreaterThan(refused, 0)
    }

    func testDeepNestingIsRefused() throws {
        // Attribute -> GraphProto -> NodeProto -> Attribute -> ... 40 times (> 64 levels).
        var inner = ProtoWriter()
        inner.string(1, "leaf")
        for _ in 0..<40 {
            var node = ProtoWriter()
            node.string(4, "If")
            var attr = ProtoWriter()
            attr.string(1, "then_branch")
            var graph = ProtoWriter()
            graph.message(1, inner)
            attr.message(6, graph)
            attr.int(20, 5)
            node.message(5, attr)
            inner = node
        }
        var graph = ProtoWriter()
        graph.message(1, inner)
        var model = ProtoWriter()
        model.message(7, graph)
        let message = try conversionError(model.bytes)
        XCTAssertTrue(message.contains("nested deeper than 64 levels"), message)
    }

    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cascadeseg-onnx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func externalModel(location: String, offset: Int? = nil, length: Int? = nil) -> OnnxTestModel {
        var entries = [("location", location)]
        if let offset { entries.append(("offset", String(offset))) }
        if let length { entries.append(("length", String(length))) }
        return OnnxTestModel.conv1x1(weight: .init(name: "w", dims: [2, 1, 1, 1, 1], dataType: 1, external: entries))
    }

    func testExternalDataInsideTheFolderIsRead() throws {
        let dir = try temporaryDirectory()
        let values: [Float] = [0.75, -2]
        try Data([9, 9, 9, 9] + values.flatMap { $0.bitPattern.littleEndianBytes }).write(to: dir.appendingPathComponent("weights.bin"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try Data(values.flatMap { $0.bitPattern.littleEndianBytes }).write(to: dir.appendingPathComponent("sub/w.bin"))
        // A symbolic link that stays inside the folder is fine.
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("link.bin").path, withDestinationPath: "sub/w.bin")
        for (location, offset, length) in [("weights.bin", 4, 8), ("weights.bin", 4, nil), ("sub/w.bin", nil, nil), ("./sub/w.bin", 0, 8), ("link.bin", nil, 8)] as [(String, Int?, Int?)] {
            let path = dir.appendingPathComponent("model.onnx")
            try Data(externalModel(location: location, offset: offset, length: length).bytes).write(to: path)
            let result = try OnnxConverter.convert(contentsOf: path.path)
            XCTAssertEqual(result.model.weights["w"]?.data, values, location)
        }
    }

    func testExternalDataOutsideTheFolderIsRefused() throws {
        let root = try temporaryDirectory()
        let dir = root.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(repeating: 0, count: 8).write(to: root.appendingPathComponent("secret.bin"))
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("escape.bin").path,
                                                   withDestinationPath: root.appendingPathComponent("secret.bin").path)
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("up").path, withDestinationPath: "..")
        try Data(repeating: 0, count: 8).write(to: dir.appendingPathComponent("ok.bin"))
        let cases: [(String, Int?, Int?, String)] = [
            ("../secret.bin", nil, nil, "contains '..'"),
            ("sub/../../secret.bin", nil, nil, "contains '..'"),
            ("/etc/passwd", nil, nil, "is an absolute path"),
            ("escape.bin", nil, nil, "outside the model's folder"),
            ("up/secret.bin", nil, nil, "outside the model's folder"),
            ("missing.bin", nil, nil, "does not exist"),
            ("ok.bin", 4, 8, "runs past the end of 'ok.bin'"),
            ("ok.bin", 100, nil, "offset 100 lies past the end"),
            ("ok.bin", 0, 4, "has 4 bytes in 'ok.bin', the tensor's shape needs 8"),
        ]
        let path = dir.appendingPathComponent("model.onnx")
        for (location, offset, length, expected) in cases {
            try Data(externalModel(location: location, offset: offset, length: length).bytes).write(to: path)
            do {
                _ = try OnnxConverter.convert(contentsOf: path.path)
                XCTFail("\(location) was accepted")
            } catch let error as CascadeSegError {
                guard case .invalidModel(let message) = error else { XCTFail("\(location): \(error)"); continue }
                XCTAssertTrue(message.contains("external data") && message.contains(expected), "\(location): \(message)")
            }
        }
        // Bytes in memory have no folder: external data is refused.
        XCTAssertTrue(try conversionError(externalModel(location: "ok.bin").bytes).contains("has no folder"))
    }

    // MARK: - Command line

    func testConvertCommandWritesAModelAndReportsBadTwoStageArguments() throws {
        let candidates = [Bundle(for: Self.self).bundleURL, Bundle(for: Self.self).bundleURL.deletingLastPathComponent()]
        guard let binary = candidates.map({ $0.appendingPathComponent("cascadeseg") }).first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw XCTSkip("the cascadeseg binary is not built next to the tests")
        }
        func run(_ arguments: [String]) throws -> (Int32, String, String) {
            let process = Process()
            process.executableURL = binary
            process.arguments = arguments
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        let dir = try temporaryDirectory()
        let output = dir.appendingPathComponent("net.cseg").path
        let (status, stdout, stderr) = try run(["convert", "--onnx", Self.fixtures.appendingPathComponent("bn_interp.onnx").path,
                                                "-o", output, "--weights", "float16", "--name", "bn",
                                                "--labels", "0=background,1=a,2=b,3=c", "--spacing", "1.5,0.8,0.8"])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stdout.contains("BatchNormalization x1"), stdout)
        XCTAssertTrue(stdout.contains("parameters: 417"), stdout)
        XCTAssertTrue(stdout.contains("stored as float16"), stdout)
        let model = try ModelFile(contentsOf: output)
        XCTAssertEqual(model.metadata.name, "bn")
        XCTAssertEqual(model.metadata.labels.map(\.name), ["background", "a", "b", "c"])
        XCTAssertEqual(model.metadata.stages[0].spacingMM, [1.5, 0.8, 0.8])
        XCTAssertEqual(model.storage?.weightTypes, ["float16"])

        let incomplete = try run(["convert", "--stage1", "a.onnx", "-o", output])
        XCTAssertEqual(incomplete.0, 2)
        XCTAssertTrue(incomplete.2.contains("needs --stage1, --stage2, --config"), incomplete.2)
        let missingConfig = try run(["convert", "--stage1", "a.onnx", "--stage2", "b.onnx", "--config", "c.json", "-o", output])
        XCTAssertEqual(missingConfig.0, 1)
        XCTAssertTrue(missingConfig.2.contains("cannot open 'c.json'"), missingConfig.2)
        let failing = try run(["convert", "--onnx", dir.appendingPathComponent("missing.onnx").path, "-o", dir.appendingPathComponent("x.cseg").path])
        XCTAssertEqual(failing.0, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.cseg").path))
    }
}

// MARK: - Building ONNX protobufs in tests

/// A protobuf wire-format writer, enough to build small ONNX models.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func key(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    mutating func int(_ field: Int, _ v: Int64) { key(field, 0); varint(UInt64(bitPattern: v)) }
    mutating func float(_ field: Int, _ v: Float) { key(field, 5); bytes += v.bitPattern.littleEndianBytes }
    mutating func data(_ field: Int, _ b: [UInt8]) { key(field, 2); varint(UInt64(b.count)); bytes += b }
    mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: ProtoWriter) { data(field, m.bytes) }
}

extension FixedWidthInteger {
    var littleEndianBytes: [UInt8] { withUnsafeBytes(of: self.littleEndian) { Array($0) } }
}

/// A small ONNX model: one input `x` (1 x 1 x D x H x W), nodes, initializers, outputs.
struct OnnxTestModel {
    struct Tensor {
        var name: String
        var dims: [Int64]
        var dataType: Int32
        var raw: [UInt8]? = nil
        var floatData: [Float] = []
        var int32Data: [Int64] = []
        var doubleData: [Double] = []
        var external: [(String, String)]? = nil

        var proto: ProtoWriter {
            var t = ProtoWriter()
            for d in dims { t.int(1, d) }
            t.int(2, Int64(dataType))
            if !floatData.isEmpty {
                var packed = ProtoWriter()
                for f in floatData { packed.bytes += f.bitPattern.littleEndianBytes }
                t.data(4, packed.bytes)
            }
            if !int32Data.isEmpty {
                var packed = ProtoWriter()
                for v in int32Data { packed.varint(UInt64(bitPattern: v)) }
                t.data(5, packed.bytes)
            }
            t.string(8, name)
            if let raw { t.data(9, raw) }
            if !doubleData.isEmpty {
                var packed = ProtoWriter()
                for v in doubleData { packed.bytes += v.bitPattern.littleEndianBytes }
                t.data(10, packed.bytes)
            }
            if let external {
                for (k, v) in external {
                    var e = ProtoWriter()
                    e.string(1, k)
                    e.string(2, v)
                    t.message(13, e)
                }
                t.int(14, 1)
            }
            return t
        }
    }

    enum Attribute {
        case int(String, Int64)
        case ints(String, [Int64])
        case float(String, Float)
        case string(String, String)

        var proto: ProtoWriter {
            var a = ProtoWriter()
            switch self {
            case .int(let n, let v): a.string(1, n); a.int(3, v); a.int(20, 2)
            case .ints(let n, let v): a.string(1, n); for x in v { a.int(8, x) }; a.int(20, 7)
            case .float(let n, let v): a.string(1, n); a.float(2, v); a.int(20, 1)
            case .string(let n, let v): a.string(1, n); a.string(4, v); a.int(20, 3)
            }
            return a
        }
    }

    struct NodeSpec {
        var op: String
        var name: String
        var inputs: [String]
        var outputs: [String]
        var attributes: [Attribute] = []
    }

    enum Dim { case value(Int64), param(String) }

    var nodes: [NodeSpec] = []
    var initializers: [Tensor] = []
    var inputShape: [Dim] = [.value(1), .value(1), .param("D"), .param("H"), .param("W")]
    var outputs: [(String, Int64)] = []
    var opset: Int64 = 17

    /// x -> Conv 1x1x1 (weight `w`, no bias) -> y.
    static func conv1x1(weight: Tensor) -> OnnxTestModel {
        OnnxTestModel(nodes: [.init(op: "Conv", name: "conv", inputs: ["x", weight.name], outputs: ["y"],
                                    attributes: [.ints("kernel_shape", [1, 1, 1])])],
                      initializers: [weight], outputs: [("y", 2)])
    }

    static func valueInfo(_ name: String, _ dims: [Dim]) -> ProtoWriter {
        var shape = ProtoWriter()
        for d in dims {
            var dim = ProtoWriter()
            switch d {
            case .value(let v): dim.int(1, v)
            case .param(let p): dim.string(2, p)
            }
            shape.message(1, dim)
        }
        var tensorType = ProtoWriter()
        tensorType.int(1, 1)
        tensorType.message(2, shape)
        var type = ProtoWriter()
        type.message(1, tensorType)
        var info = ProtoWriter()
        info.string(1, name)
        info.message(2, type)
        return info
    }

    var bytes: [UInt8] {
        var g = ProtoWriter()
        for n in nodes {
            var node = ProtoWriter()
            for i in n.inputs { node.string(1, i) }
            for o in n.outputs { node.string(2, o) }
            node.string(3, n.name)
            node.string(4, n.op)
            for a in n.attributes { node.message(5, a.proto) }
            g.message(1, node)
        }
        g.string(2, "test")
        for t in initializers { g.message(5, t.proto) }
        g.message(11, Self.valueInfo("x", inputShape))
        for (name, channels) in outputs {
            g.message(12, Self.valueInfo(name, [.value(1), .value(channels), .param("D"), .param("H"), .param("W")]))
        }
        var m = ProtoWriter()
        m.int(1, 8)
        m.message(7, g)
        var opsetId = ProtoWriter()
        opsetId.string(1, "")
        opsetId.int(2, opset)
        m.message(8, opsetId)
        return m.bytes
    }
}
