import CascadeSeg
import Foundation

/// `cascadeseg convert`: an ONNX network (exported from PyTorch) to a .cseg model file.
enum ConvertCommand {
    static let usage = """
        usage: cascadeseg convert --stage1 LOC.onnx --stage2 ROI.onnx --config cascade.json -o MODEL.cseg [--weights float16]
               cascadeseg convert --onnx NET.onnx -o NET.cseg [--weights float32|float16] [--name N]
                                  [--labels 0=background,1=liver,...] [--spacing D,H,W] [--normalization N]
                                  [--size-multiple D,H,W] [--description TEXT] [--license TEXT]
          --normalization: none (default), zscore, zscore-all, ct:LO,HI,MEAN,STD or percentile:LO,HI
        """

    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["onnx", "output", "weights", "name", "labels", "spacing", "normalization",
                                                "size-multiple", "description", "license", "stage1", "stage2", "config"],
                                 flags: [])
        if args["stage1"] != nil || args["stage2"] != nil || args["config"] != nil {
            return try convertCascade(args)
        }
        guard args.positionals.isEmpty, let onnxPath = args["onnx"], let outputPath = args["output"] else {
            throw CascadeSegError.usage(usage)
        }
        guard URL(fileURLWithPath: onnxPath).standardized.path != URL(fileURLWithPath: outputPath).standardized.path else {
            throw CascadeSegError.usage("-o must differ from --onnx (inputs are never overwritten)")
        }
        let weightType = try parseWeightType(args)
        var options = OnnxConversionOptions(name: args["name"], description: args["description"] ?? "",
                                            license: args["license"] ?? "")
        if let labels = args["labels"] { options.labels = try parseLabels(labels) }
        if let spacing = args["spacing"] {
            let v = try numbers(spacing, "--spacing", count: 3)
            guard v.allSatisfy({ $0 > 0 && $0.isFinite }) else { throw CascadeSegError.usage("--spacing values must be positive") }
            options.spacingMM = v
        }
        if let m = args["size-multiple"] {
            let v = try numbers(m, "--size-multiple", count: 3)
            guard v.allSatisfy({ $0 >= 1 && $0 <= 4096 && $0.rounded() == $0 }) else {
                throw CascadeSegError.usage("--size-multiple must be three integers in 1...4096")
            }
            options.sizeMultiple = v.map { Int($0) }
        }
        if let n = args["normalization"] { options.normalization = try parseNormalization(n) }

        let result = try OnnxConverter.convert(contentsOf: onnxPath, options: options)
        let bytes = try result.model.serialized(weightType: weightType)
        // Read back with the ordinary reader: the file is checked before it is put in place.
        let check = try ModelFile(bytes: bytes)
        try AtomicFile.write(bytes, to: outputPath)

        let graph = result.imported.graph
        var ops: [String: Int] = [:]
        for n in graph.nodes { ops[n.op.rawValue, default: 0] += 1 }
        print("converted \(onnxPath) (ONNX opset \(result.imported.opset)) -> \(outputPath)")
        print("graph 'stage1': input \(graph.input.shape), size multiple \(graph.sizeMultiple), \(graph.nodes.count) nodes")
        print("  ops: " + ops.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))
        print("  outputs: " + graph.outputs.map { "\($0.name) \($0.shape)" }.joined(separator: ", "))
        for note in result.imported.notes { print("  note: \(note)") }
        print("labels: " + check.metadata.labels.map { "\($0.id)=\($0.name)" }.joined(separator: ", "))
        print("parameters: \(result.model.parameterCount) in \(result.model.weights.count) tensors")
        printStorage(of: check, weightType: weightType)
    }

    /// Two ONNX networks and a cascade config (docs/ONNX.md) to one two-stage model.
    static func convertCascade(_ args: Arguments) throws {
        guard args.positionals.isEmpty, args["onnx"] == nil, let stage1Path = args["stage1"], let stage2Path = args["stage2"],
              let configPath = args["config"], let outputPath = args["output"] else {
            throw CascadeSegError.usage("the two-stage form needs --stage1, --stage2, --config and -o (and no --onnx)\n\(usage)")
        }
        for input in [stage1Path, stage2Path, configPath]
        where URL(fileURLWithPath: input).standardized.path == URL(fileURLWithPath: outputPath).standardized.path {
            throw CascadeSegError.usage("-o must differ from every input (inputs are never overwritten)")
        }
        let weightType = try parseWeightType(args)
        let config = try CascadeConfig(contentsOf: configPath)
        func convert(_ path: String, _ stage: CascadeConfig.Stage) throws -> OnnxConverter.Result {
            try OnnxConverter.convert(contentsOf: path, options: OnnxConversionOptions(
                name: config.name, labels: config.labels, spacingMM: stage.spacingMM, normalization: config.normalization))
        }
        let first = try convert(stage1Path, config.stage1), second = try convert(stage2Path, config.stage2)
        let model = try CascadeAssembler.assemble(stage1: first.model, stage2: second.model, config: config)
        let bytes = try model.serialized(weightType: weightType)
        let check = try ModelFile(bytes: bytes)
        try AtomicFile.write(bytes, to: outputPath)
        print("converted \(stage1Path) (stage 1) and \(stage2Path) (stage 2) -> \(outputPath)")
        for (graph, stage) in zip(check.graphs, check.metadata.stages) {
            var ops: [String: Int] = [:]
            for n in graph.nodes { ops[n.op.rawValue, default: 0] += 1 }
            print("graph '\(graph.name)' at \(stage.spacingMM) mm: \(graph.nodes.count) nodes, size multiple \(graph.sizeMultiple)")
            print("  ops: " + ops.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", "))
        }
        print("labels: " + check.metadata.labels.map { "\($0.id)=\($0.name)" }.joined(separator: ", "))
        print("parameters: \(check.parameterCount) in \(check.weights.count) tensors")
        printStorage(of: check, weightType: weightType)
    }

    static func parseWeightType(_ args: Arguments) throws -> ModelFile.WeightType {
        switch args["weights"] ?? "float32" {
        case "float32": return .float32
        case "float16": return .float16
        case let other: throw CascadeSegError.usage("--weights must be float32 or float16, got '\(other)'")
        }
    }

    /// Raw and stored weight bytes of a written model, as read back.
    static func printStorage(of model: ModelFile, weightType: ModelFile.WeightType) {
        guard let s = model.storage else { return }
        print(String(format: "weights: %d bytes raw float32, %d bytes stored as %@ (%.3fx); file %d bytes",
                     s.rawFloat32Bytes, s.storedBytes, weightType.rawValue,
                     Double(s.storedBytes) / Double(max(s.rawFloat32Bytes, 1)), s.fileBytes))
    }

    static func numbers(_ text: String, _ option: String, count: Int) throws -> [Double] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == count, parts.allSatisfy({ $0 != nil }) else {
            throw CascadeSegError.usage("\(option) must be \(count) comma-separated numbers, got '\(text)'")
        }
        return parts.map { $0! }
    }

    /// `0=background,1=liver,2=tumour`.
    static func parseLabels(_ text: String) throws -> [ModelMetadata.Label] {
        var labels: [ModelMetadata.Label] = []
        for item in text.split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let id = Int(kv[0].trimmingCharacters(in: .whitespaces)), id >= 0, id < 65536,
                  !kv[1].trimmingCharacters(in: .whitespaces).isEmpty else {
                throw CascadeSegError.usage("--labels must be ID=NAME pairs separated by commas (e.g. 0=background,1=liver), got '\(item)'")
            }
            guard !labels.contains(where: { $0.id == id }) else { throw CascadeSegError.usage("--labels: id \(id) appears twice") }
            labels.append(.init(id: id, name: kv[1].trimmingCharacters(in: .whitespaces)))
        }
        guard !labels.isEmpty else { throw CascadeSegError.usage("--labels is empty") }
        return labels
    }

    static func parseNormalization(_ text: String) throws -> ModelMetadata.Normalization {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        switch parts[0] {
        case "none" where parts.count == 1: return .none
        case "zscore" where parts.count == 1: return .init(kind: "zscore", foreground: "nonzero")
        case "zscore-all" where parts.count == 1: return .init(kind: "zscore", foreground: "all")
        case "ct" where parts.count == 2:
            let v = try numbers(parts[1], "--normalization ct", count: 4)
            guard v[0] < v[1], v[3] > 0 else { throw CascadeSegError.usage("--normalization ct:LO,HI,MEAN,STD needs LO < HI and STD > 0") }
            return .init(kind: "ct", clip: [v[0], v[1]], mean: v[2], std: v[3])
        case "percentile" where parts.count == 2:
            let v = try numbers(parts[1], "--normalization percentile", count: 2)
            guard 0 <= v[0], v[0] < v[1], v[1] <= 100 else { throw CascadeSegError.usage("--normalization percentile:LO,HI needs 0 <= LO < HI <= 100") }
            return .init(kind: "percentile", lower: v[0], upper: v[1])
        default:
            throw CascadeSegError.usage("--normalization must be none, zscore, zscore-all, ct:LO,HI,MEAN,STD or percentile:LO,HI, got '\(text)'")
        }
    }
}
