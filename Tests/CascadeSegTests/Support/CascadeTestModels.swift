import Foundation
@testable import CascadeSeg

/// Small cascade models whose result is known analytically, for the cascade and `segment` tests.
///
/// Each stage is a nearest-intensity classifier over the `Phantom`'s intensities, built from two
/// pointwise (1x1x1) convolutions on the raw image (normalization `none`). A prototype of
/// intensity mu scores `2 mu x - mu^2` (largest for the nearest mu). Background has two
/// prototypes, outside the body (0) and the body (0.5): its score is the larger of the two,
/// `max(0, x - 0.25) = relu(x - 0.25)`, which the first convolution computes together with
/// `relu(x)` and `relu(-x)` (so that the second can form `x` linearly).
/// A label a stage should not know scores a constant -1000 there: that stage never finds it.
enum CascadeTestModels {
    /// The phantom's structure intensities by label (docs/PIPELINE.md, "Phantom").
    static let phantomIntensities: [Int: Float] = [1: 0.9, 2: 0.2, 3: 1.0, 4: 0.75]
    static let bodyIntensity: Float = 0.5
    static let names = [0: "background", 1: "sphere_large", 2: "sphere_small", 3: "tube", 4: "shell", 5: "absent"]

    /// Weights of one stage classifier named `prefix` for `labels` (0 first, all sorted).
    static func classifier(_ prefix: String, labels: [Int], intensities: [Int: Float], unknown: Set<Int>,
                           sizeMultiple: [Int], inputChannels: Int = 1) -> (Graph, [String: Tensor]) {
        let k = labels.count
        let shape: (Int) -> [CascadeSeg.Dimension] = { [.fixed(1), .fixed($0), .symbol("D"), .symbol("H"), .symbol("W")] }
        let graph = Graph(name: prefix, inputs: [ValueInfo(name: "image", shape: shape(inputChannels))],
                          outputs: [ValueInfo(name: "logits", shape: shape(k))], nodes: [
            Node(name: prefix + ".features", op: .conv, inputs: ["image", prefix + ".features.w", prefix + ".features.b"], outputs: ["f"],
                 attributes: ["pads": .ints([0, 0, 0, 0, 0, 0]), "activation": .string("relu")]),
            Node(name: prefix + ".scores", op: .conv, inputs: ["f", prefix + ".scores.w", prefix + ".scores.b"], outputs: ["logits"],
                 attributes: ["pads": .ints([0, 0, 0, 0, 0, 0])]),
        ], sizeMultiple: sizeMultiple)
        let mb = bodyIntensity
        // features: relu(x), relu(-x), relu(2 mb x - mb^2) (from the first input channel only).
        var w1 = [Float](repeating: 0, count: 3 * inputChannels)
        w1[0 * inputChannels] = 1; w1[1 * inputChannels] = -1; w1[2 * inputChannels] = 2 * mb
        let b1: [Float] = [0, 0, -mb * mb]
        var w2 = [Float](), b2 = [Float]()
        for label in labels {
            if label == 0 {
                w2 += [0, 0, 1]; b2.append(0)
            } else if unknown.contains(label) {
                w2 += [0, 0, 0]; b2.append(-1000)
            } else {
                let mu = intensities[label]!
                w2 += [2 * mu, -2 * mu, 0]; b2.append(-mu * mu)
            }
        }
        return (graph, [prefix + ".features.w": Tensor(shape: [3, inputChannels, 1, 1, 1], data: w1),
                        prefix + ".features.b": Tensor(shape: [3], data: b1),
                        prefix + ".scores.w": Tensor(shape: [k, 3, 1, 1, 1], data: w2),
                        prefix + ".scores.b": Tensor(shape: [k], data: b2)])
    }

    /// A two-stage model: stage 1 ("localizer") at `stage1Spacing`, stage 2 ("roi") at
    /// `stage2Spacing` (mm, z y x), both classifying the phantom's intensities (plus any in
    /// `extraIntensities`, e.g. a label that never occurs).
    static func cascade(stage1Spacing: [Double] = [2, 2, 2], stage2Spacing: [Double] = [1, 1, 1],
                        extraIntensities: [Int: Float] = [:], stage1Unknown: Set<Int> = [],
                        marginMM: Double = 2, minROISize: [Int] = [16, 16, 16],
                        priors: [ModelMetadata.PriorBox]? = nil, labelGroups: [[Int]] = [],
                        inputChannels: Int = 1) -> ModelFile {
        let intensities = phantomIntensities.merging(extraIntensities) { $1 }
        let labels = [0] + intensities.keys.sorted()
        let (g1, w1) = classifier("localizer", labels: labels, intensities: intensities, unknown: stage1Unknown,
                                  sizeMultiple: [4, 4, 4], inputChannels: inputChannels)
        let (g2, w2) = classifier("roi", labels: labels, intensities: intensities, unknown: [],
                                  sizeMultiple: [8, 8, 8], inputChannels: inputChannels)
        let metadata = ModelMetadata(
            name: "phantom-cascade", description: "nearest-intensity classifiers for the phantom", license: "CC0-1.0",
            labels: labels.map { .init(id: $0, name: names[$0] ?? "label \($0)") },
            input: .init(channels: inputChannels, normalization: .none),
            stages: [.init(graph: "localizer", spacingMM: stage1Spacing), .init(graph: "roi", spacingMM: stage2Spacing)],
            cascade: .init(stage1: "localizer", stage2: "roi", marginMM: marginMM, minROISize: minROISize,
                           labelGroups: labelGroups, priors: priors))
        return ModelFile(metadata: metadata, graphs: [g1, g2], weights: w1.merging(w2) { a, _ in a })
    }

    /// The phantom as a NIfTI image (identity rotation, origin shifted), spacing in mm.
    /// With `filled`, the voxels outside the body take the body's intensity, so that no
    /// partial-volume edge of the body (0.5 -> 0, through label 2's 0.2) reaches stage 1.
    static func phantomImage(size: SIMD3<Int> = SIMD3(48, 48, 48), spacing: SIMD3<Double> = SIMD3(1, 1, 1),
                             seed: UInt64 = 5, noise: Float = 0.02, filled: Bool = true) throws -> (image: NiftiImage, phantom: Phantom) {
        var phantom = Phantom(size: size, spacing: spacing, seed: seed, noise: noise)
        if filled { for i in phantom.image.voxels.indices where phantom.image.voxels[i] == 0 { phantom.image.voxels[i] = bodyIntensity } }
        let affine: [[Double]] = [[spacing.x, 0, 0, -20], [0, spacing.y, 0, 10], [0, 0, spacing.z, 3], [0, 0, 0, 1]]
        let geometry = try NiftiGeometry(nx: size.x, ny: size.y, nz: size.z, affine: affine)
        return (try NiftiImage(voxels: phantom.image.voxels, geometry: geometry), phantom)
    }
}
