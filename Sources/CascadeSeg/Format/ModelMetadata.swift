/// The descriptive part of a model file: what the model segments and how its input is prepared.
public struct ModelMetadata: Codable, Equatable, Sendable {
    public struct Label: Codable, Equatable, Sendable {
        public var id: Int
        public var name: String
        public init(id: Int, name: String) { self.id = id; self.name = name }
    }

    /// Intensity normalization applied to the image before stage 1 (see docs/FORMAT.md).
    public struct Normalization: Codable, Equatable, Sendable {
        public var kind: String
        public var foreground: String?
        public var clip: [Double]?
        public var mean: Double?
        public var std: Double?
        public var lower: Double?
        public var upper: Double?
        public init(kind: String, foreground: String? = nil, clip: [Double]? = nil, mean: Double? = nil,
                    std: Double? = nil, lower: Double? = nil, upper: Double? = nil) {
            self.kind = kind; self.foreground = foreground; self.clip = clip
            self.mean = mean; self.std = std; self.lower = lower; self.upper = upper
        }
        public static let none = Normalization(kind: "none")
    }

    public struct Input: Codable, Equatable, Sendable {
        public var channels: Int
        public var normalization: Normalization
        public init(channels: Int, normalization: Normalization) { self.channels = channels; self.normalization = normalization }
    }

    public struct Stage: Codable, Equatable, Sendable {
        public var graph: String
        public var spacingMM: [Double]
        enum CodingKeys: String, CodingKey { case graph, spacingMM = "spacing_mm" }
        public init(graph: String, spacingMM: [Double]) { self.graph = graph; self.spacingMM = spacingMM }
    }

    public struct PriorBox: Codable, Equatable, Sendable {
        public var label: Int
        /// [z0, y0, x0, z1, y1, x1] as fractions of the foreground bounding box.
        public var box: [Double]
        /// Stage 1 finding less than this volume of the label counts as a miss (optional).
        public var minVolumeMM3: Double?
        enum CodingKeys: String, CodingKey { case label, box, minVolumeMM3 = "min_volume_mm3" }
        public init(label: Int, box: [Double], minVolumeMM3: Double? = nil) {
            self.label = label; self.box = box; self.minVolumeMM3 = minVolumeMM3
        }
    }

    public struct Cascade: Codable, Equatable, Sendable {
        public var stage1: String
        public var stage2: String
        public var marginMM: Double
        public var minROISize: [Int]
        public var labelGroups: [[Int]]
        public var priors: [PriorBox]?
        enum CodingKeys: String, CodingKey {
            case stage1, stage2, marginMM = "margin_mm", minROISize = "min_roi_size", labelGroups = "label_groups", priors
        }
        public init(stage1: String, stage2: String, marginMM: Double, minROISize: [Int], labelGroups: [[Int]] = [], priors: [PriorBox]? = nil) {
            self.stage1 = stage1; self.stage2 = stage2; self.marginMM = marginMM
            self.minROISize = minROISize; self.labelGroups = labelGroups; self.priors = priors
        }
    }

    public var name: String
    public var description: String
    public var license: String
    public var labels: [Label]
    public var input: Input
    public var stages: [Stage]
    public var cascade: Cascade?

    public init(name: String, description: String = "", license: String = "", labels: [Label],
                input: Input, stages: [Stage], cascade: Cascade? = nil) {
        self.name = name; self.description = description; self.license = license
        self.labels = labels; self.input = input; self.stages = stages; self.cascade = cascade
    }

    /// Checks internal consistency against the graphs the file carries.
    func validate(graphNames: Set<String>) throws {
        func fail(_ m: String) -> CascadeSegError { .invalidModel("metadata: \(m)") }
        guard input.channels >= 1, input.channels <= 64 else { throw fail("input channels must be in 1...64") }
        guard Set(labels.map(\.id)).count == labels.count else { throw fail("label ids must be unique") }
        guard labels.allSatisfy({ $0.id >= 0 && $0.id < 65536 }) else { throw fail("label ids must be in 0...65535") }
        guard !stages.isEmpty else { throw fail("at least one stage is required") }
        for stage in stages {
            guard graphNames.contains(stage.graph) else { throw fail("stage names graph '\(stage.graph)', which the file does not contain") }
            guard stage.spacingMM.count == 3, stage.spacingMM.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                throw fail("stage '\(stage.graph)': spacing_mm must be three positive numbers")
            }
        }
        let known = ["none", "zscore", "ct", "percentile"]
        guard known.contains(input.normalization.kind) else { throw fail("unknown normalization '\(input.normalization.kind)'") }
        if let cascade {
            for g in [cascade.stage1, cascade.stage2] where !stages.contains(where: { $0.graph == g }) {
                throw fail("cascade names graph '\(g)', which is not a stage")
            }
            guard cascade.marginMM >= 0, cascade.marginMM.isFinite else { throw fail("margin_mm must be >= 0") }
            guard cascade.minROISize.count == 3, cascade.minROISize.allSatisfy({ $0 >= 1 }) else { throw fail("min_roi_size must be three positive sizes") }
            for prior in cascade.priors ?? [] where prior.box.count != 6 || !prior.box.allSatisfy({ $0 >= -1 && $0 <= 2 }) {
                throw fail("prior box of label \(prior.label) must be six fractions")
            }
            for prior in cascade.priors ?? [] where !(prior.minVolumeMM3.map { $0 >= 0 && $0.isFinite } ?? true) {
                throw fail("prior of label \(prior.label): min_volume_mm3 must be >= 0")
            }
        }
    }
}
