import Foundation

/// What a two-stage model needs besides its two networks (the `--config` file of
/// `cascadeseg convert --stage1 --stage2`; documented in docs/ONNX.md).
public struct CascadeConfig: Codable, Equatable, Sendable {
    public struct Stage: Codable, Equatable, Sendable {
        public var spacingMM: [Double]
        enum CodingKeys: String, CodingKey { case spacingMM = "spacing_mm" }
        public init(spacingMM: [Double]) { self.spacingMM = spacingMM }
    }

    public struct ROI: Codable, Equatable, Sendable {
        public var marginMM: Double
        public var minROISize: [Int]
        public var labelGroups: [[Int]]?
        enum CodingKeys: String, CodingKey { case marginMM = "margin_mm", minROISize = "min_roi_size", labelGroups = "label_groups" }
        public init(marginMM: Double, minROISize: [Int], labelGroups: [[Int]]? = nil) {
            self.marginMM = marginMM; self.minROISize = minROISize; self.labelGroups = labelGroups
        }
    }

    public var name: String
    public var description: String?
    public var license: String?
    public var labels: [ModelMetadata.Label]
    public var normalization: ModelMetadata.Normalization
    public var stage1: Stage
    public var stage2: Stage
    public var roi: ROI
    public var priors: [ModelMetadata.PriorBox]?

    public init(name: String, description: String? = nil, license: String? = nil, labels: [ModelMetadata.Label],
                normalization: ModelMetadata.Normalization, stage1: Stage, stage2: Stage, roi: ROI, priors: [ModelMetadata.PriorBox]? = nil) {
        self.name = name; self.description = description; self.license = license; self.labels = labels
        self.normalization = normalization; self.stage1 = stage1; self.stage2 = stage2; self.roi = roi; self.priors = priors
    }

    public init(contentsOf path: String) throws {
        let bytes = try AtomicFile.read(path, limit: 16 << 20)
        do {
            self = try JSONDecoder().decode(CascadeConfig.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw CascadeSegError.invalidInput("\(path): \(ModelFile.describe(error))")
        } catch {
            throw CascadeSegError.invalidInput("\(path) is not valid JSON")
        }
    }
}

/// Joins two single-network models (as `OnnxConverter` makes them) into one cascade model:
/// graphs `stage1` and `stage2`, weights prefixed with their graph's name, metadata from the
/// config. The result is validated by writing and reading it back before it is returned.
public enum CascadeAssembler {
    public static func assemble(stage1: ModelFile, stage2: ModelFile, config: CascadeConfig) throws -> ModelFile {
        var graphs: [Graph] = []
        var weights: [String: Tensor] = [:]
        for (name, model) in [("stage1", stage1), ("stage2", stage2)] {
            guard model.graphs.count == 1, var graph = model.graphs.first else {
                throw CascadeSegError.invalidModel("the \(name) network must be a single graph, has \(model.graphs.count)")
            }
            let rename = Dictionary(uniqueKeysWithValues: model.weights.keys.map { ($0, "\(name)/\($0)") })
            for (old, new) in rename { weights[new] = model.weights[old] }
            graph.name = name
            for i in graph.nodes.indices { graph.nodes[i].inputs = graph.nodes[i].inputs.map { rename[$0] ?? $0 } }
            graphs.append(graph)
        }
        guard let c1 = graphs[0].inputChannels, let c2 = graphs[1].inputChannels, c1 == c2 else {
            throw CascadeSegError.invalidModel("both stages must read the same fixed number of input channels (stage 1: \(graphs[0].inputChannels.map(String.init) ?? "?"), stage 2: \(graphs[1].inputChannels.map(String.init) ?? "?"))")
        }
        for graph in graphs {
            if let shape = graph.outputs.first?.shape, shape.count == 5, case .fixed(let classes) = shape[1], classes != config.labels.count {
                throw CascadeSegError.invalidModel("graph '\(graph.name)' outputs \(classes) classes but the config lists \(config.labels.count) labels")
            }
        }
        let metadata = ModelMetadata(
            name: config.name, description: config.description ?? "", license: config.license ?? "", labels: config.labels,
            input: .init(channels: c1, normalization: config.normalization),
            stages: [.init(graph: "stage1", spacingMM: config.stage1.spacingMM), .init(graph: "stage2", spacingMM: config.stage2.spacingMM)],
            cascade: .init(stage1: "stage1", stage2: "stage2", marginMM: config.roi.marginMM, minROISize: config.roi.minROISize,
                           labelGroups: config.roi.labelGroups ?? [], priors: config.priors))
        let model = ModelFile(metadata: metadata, graphs: graphs, weights: weights)
        _ = try ModelFile(bytes: try model.serialized(compressionLevel: 1))  // every reader check, now
        return model
    }
}
