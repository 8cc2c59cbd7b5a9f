import Foundation

/// What a single-network conversion writes besides the graph: the model's metadata.
public struct OnnxConversionOptions: Sendable {
    public var name: String?
    public var description: String
    public var license: String
    /// nil: background plus one label per output channel.
    public var labels: [ModelMetadata.Label]?
    public var spacingMM: [Double]
    public var normalization: ModelMetadata.Normalization
    public var sizeMultiple: [Int]?

    public init(name: String? = nil, description: String = "", license: String = "", labels: [ModelMetadata.Label]? = nil,
                spacingMM: [Double] = [1, 1, 1], normalization: ModelMetadata.Normalization = .none, sizeMultiple: [Int]? = nil) {
        self.name = name; self.description = description; self.license = license; self.labels = labels
        self.spacingMM = spacingMM; self.normalization = normalization; self.sizeMultiple = sizeMultiple
    }
}

/// ONNX file -> `ModelFile` with one stage (`stage1`). Pure Swift: no Python at conversion time.
public enum OnnxConverter {
    /// ONNX files are protobufs, which are limited to 2 GiB; bigger models use external data.
    public static let maxFileBytes = 1 << 31

    public struct Result: Sendable {
        public var model: ModelFile
        public var imported: OnnxImportedGraph
    }

    /// Parses an ONNX file; external data is looked up next to it.
    public static func load(contentsOf path: String) throws -> (model: OnnxModelProto, baseDirectory: String) {
        let bytes = try AtomicFile.read(path, limit: maxFileBytes)
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return (try OnnxModelProto(bytes: bytes), folder.isEmpty ? "." : folder)
    }

    public static func convert(contentsOf path: String, options: OnnxConversionOptions = OnnxConversionOptions()) throws -> Result {
        let (proto, folder) = try load(contentsOf: path)
        var options = options
        if options.name == nil { options.name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent }
        return try convert(proto, baseDirectory: folder, options: options)
    }

    /// Converts ONNX bytes held in memory (external data is refused: there is no folder).
    public static func convert(bytes: [UInt8], options: OnnxConversionOptions = OnnxConversionOptions()) throws -> Result {
        try convert(try OnnxModelProto(bytes: bytes), baseDirectory: nil, options: options)
    }

    public static func convert(_ proto: OnnxModelProto, baseDirectory: String?, options: OnnxConversionOptions) throws -> Result {
        let imported = try OnnxImporter.importGraph(proto, baseDirectory: baseDirectory,
                                                    options: OnnxImportOptions(graphName: "stage1", sizeMultiple: options.sizeMultiple))
        let labels: [ModelMetadata.Label]
        if let given = options.labels {
            labels = given
        } else {
            let classes = max(imported.outputChannels ?? 1, 1)
            labels = [ModelMetadata.Label(id: 0, name: "background")]
                + (1..<max(classes, 1)).map { ModelMetadata.Label(id: $0, name: "label\($0)") }
        }
        let metadata = ModelMetadata(name: options.name ?? "onnx-model", description: options.description, license: options.license,
                                     labels: labels,
                                     input: .init(channels: imported.inputChannels, normalization: options.normalization),
                                     stages: [.init(graph: imported.graph.name, spacingMM: options.spacingMM)])
        try metadata.validate(graphNames: [imported.graph.name])
        return Result(model: ModelFile(metadata: metadata, graphs: [imported.graph], weights: imported.weights), imported: imported)
    }
}
