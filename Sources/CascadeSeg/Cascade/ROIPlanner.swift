/// Plans the stage-2 regions of interest: pure geometry, no device.
///
/// Inputs: boxes with the label they belong to (usually one per connected component of each
/// label of the stage-1 label map, in stage-1 voxels; prior boxes in image voxels), the image
/// grid (full resolution: size and spacing), the stage-1 grid size, the stage-2 spacing and the
/// cascade's rules.
/// All vectors are (x, y, z); boxes are half-open (see `VoxelBox`).
///
/// Steps, per axis `a` (n = image size, s = image spacing):
/// 1. Stage-1 to image voxels. The `Resampler` maps grids by their physical extent, so stage-1
///    voxel `i` covers image coordinates `[i, i + 1) * n / n1` (n1 = stage-1 size): a stage-1 box
///    `[lo, hi)` becomes `[floor(lo * n / n1), ceil(hi * n / n1))`, computed in integers, then
///    clamped to the image. (The stage-1 spacing is not needed: the sizes fix the mapping.)
///    A box that ends up empty (e.g. a prior outside the image) keeps one voxel slab at the
///    nearest position inside the image.
/// 2. Margin. `m = ceil(marginMM / s - 1e-9)` voxels on each side, then clamped to `[0, n)`.
/// 3. Label groups. The boxes of all labels in one group (groups sharing a label are joined) start
///    as one ROI whose core is the union of their margin-grown boxes; every other box starts as
///    its own ROI.
/// 4. Size. `f = s / stage2Spacing` stage-2 voxels per image voxel. For a core of `b` image
///    voxels the stage-2 size is `S = roundUp(max(minROISize, ceil(b * f - 1e-9)), multiple)` and
///    the box grows to `b' = max(b, round(S / f))` image voxels (round: half away from zero),
///    symmetrically (`floor(extra / 2)` below, the rest above), then shifted back inside the
///    image where it crosses a border; the stage-2 size is `S` (the caller resamples the crop of
///    `b'` voxels to exactly `S`). If `b' >= n` the box is the whole axis; its stage-2 size is
///    then `max(1, round(n * f))`
///    and the network input is that padded up to `roundUp(max(that, minROISize), multiple)`; the
///    caller pads (e.g. with the normalized background) and crops the output back.
///    With `f = 1` (stage 2 at the image spacing) `b' = S`: the box itself is the network input.
/// 5. Merging. `cost = product(inputSize) + launchOverheadVoxels` (stage-2 voxels the network
///    computes, plus the fixed cost of one more launch expressed in voxels). Repeatedly, the pair
///    of ROIs whose merged ROI (union of the cores, then step 4) saves the most,
///    `cost(a) + cost(b) - cost(a U b) > 0`, is merged (ties: the lowest pair of indices), until
///    no merge pays. Each ROI records the labels it serves and the input boxes it covers.
///
/// Every input box (after clamping) is inside the ROI that lists its label; every ROI is inside
/// the image; each `inputSize` component is a multiple of `sizeMultiple` and, where the image is
/// large enough, equal to `stage2Size`.
public struct ROIPlanner: Sendable {
    /// A box of voxels and the label it was found for.
    public struct LabeledBox: Hashable, Sendable {
        public var label: Int
        public var box: VoxelBox
        public init(label: Int, box: VoxelBox) { self.label = label; self.box = box }
    }

    /// One planned region of interest.
    public struct ROI: Equatable, Sendable, CustomStringConvertible {
        /// The crop, in image voxels.
        public var box: VoxelBox
        /// Labels whose stage-2 result should be taken from this ROI (sorted).
        public var labels: [Int]
        /// The crop's size after resampling to the stage-2 spacing (equal to `box.size` when
        /// the stage-2 spacing is the image's).
        public var stage2Size: SIMD3<Int>
        /// The network's input size: `stage2Size`, padded where the image is too small.
        public var inputSize: SIMD3<Int>
        /// Indices (into the boxes given to `plan`) of the boxes this ROI covers.
        public var sourceBoxes: [Int]
        /// `product(inputSize) + launchOverheadVoxels`.
        public var cost: Int

        public var description: String {
            "ROI \(box) labels \(labels) stage-2 \(stage2Size.x)x\(stage2Size.y)x\(stage2Size.z) input \(inputSize.x)x\(inputSize.y)x\(inputSize.z)"
        }
    }

    /// The image (full-resolution) grid: size and spacing (mm).
    public var imageSize: SIMD3<Int>
    public var imageSpacing: SIMD3<Double>
    public var stage1Size: SIMD3<Int>
    public var stage2Spacing: SIMD3<Double>
    public var marginMM: Double
    /// Smallest ROI, in stage-2 voxels.
    public var minROISize: SIMD3<Int>
    /// The stage-2 network's size multiple.
    public var sizeMultiple: SIMD3<Int>
    public var labelGroups: [[Int]]
    /// The cost of one more stage-2 launch, in voxels.
    public var launchOverheadVoxels: Int

    public static let defaultLaunchOverheadVoxels = 32 * 32 * 32

    public init(imageSize: SIMD3<Int>, imageSpacing: SIMD3<Double>, stage1Size: SIMD3<Int>, stage2Spacing: SIMD3<Double>, marginMM: Double,
                minROISize: SIMD3<Int>, sizeMultiple: SIMD3<Int>, labelGroups: [[Int]] = [],
                launchOverheadVoxels: Int = ROIPlanner.defaultLaunchOverheadVoxels) throws {
        func bad(_ m: String) -> CascadeSegError { .invalidInput("ROI planner: \(m)") }
        guard all(imageSize .>= 1) else { throw bad("image size \(imageSize) has an empty axis") }
        for a in 0..<3 where !(imageSpacing[a] > 0 && imageSpacing[a].isFinite) {
            throw bad("image spacing \(imageSpacing) must be positive and finite")
        }
        guard all(stage1Size .>= 1) else { throw bad("stage-1 size \(stage1Size) has an empty axis") }
        for a in 0..<3 where !(stage2Spacing[a] > 0 && stage2Spacing[a].isFinite) {
            throw bad("stage-2 spacing \(stage2Spacing) must be positive and finite")
        }
        guard marginMM >= 0, marginMM.isFinite else { throw bad("margin \(marginMM) mm must be >= 0") }
        guard all(minROISize .>= 1) else { throw bad("minimum ROI size \(minROISize) must be >= 1") }
        guard all(sizeMultiple .>= 1) else { throw bad("size multiple \(sizeMultiple) must be >= 1") }
        guard launchOverheadVoxels >= 0 else { throw bad("launch overhead must be >= 0") }
        self.imageSize = imageSize; self.imageSpacing = imageSpacing; self.stage1Size = stage1Size; self.stage2Spacing = stage2Spacing
        self.marginMM = marginMM; self.minROISize = minROISize; self.sizeMultiple = sizeMultiple
        self.labelGroups = labelGroups; self.launchOverheadVoxels = launchOverheadVoxels
    }

    /// A planner with the cascade's rules; `stage2SpacingMM` and `sizeMultiple` as the model file
    /// lists them, in (z, y, x) order (the stage's `spacing_mm`, the stage-2 graph's `size_multiple`).
    public init(cascade: ModelMetadata.Cascade, imageSize: SIMD3<Int>, imageSpacing: SIMD3<Double>, stage1Size: SIMD3<Int>,
                stage2SpacingMM: [Double], sizeMultiple: [Int],
                launchOverheadVoxels: Int = ROIPlanner.defaultLaunchOverheadVoxels) throws {
        guard stage2SpacingMM.count == 3, sizeMultiple.count == 3, cascade.minROISize.count == 3 else {
            throw CascadeSegError.invalidInput("ROI planner: spacing, size multiple and min_roi_size need three values each")
        }
        try self.init(imageSize: imageSize, imageSpacing: imageSpacing, stage1Size: stage1Size, stage2Spacing: SIMD3(zyx: stage2SpacingMM),
                      marginMM: cascade.marginMM, minROISize: SIMD3(zyx: cascade.minROISize),
                      sizeMultiple: SIMD3(zyx: sizeMultiple), labelGroups: cascade.labelGroups,
                      launchOverheadVoxels: launchOverheadVoxels)
    }

    // MARK: - Boxes

    /// One box per connected component (e.g. of the stage-1 label map), skipping components of
    /// fewer than `minimumVoxels` voxels and the labels in `excluding`.
    public static func boxes(of labeling: ConnectedComponents.Labeling, minimumVoxels: Int = 1,
                             excluding: Set<Int> = []) -> [LabeledBox] {
        labeling.components.compactMap { c in
            c.voxelCount >= minimumVoxels && !excluding.contains(c.label) ? LabeledBox(label: c.label, box: c.box) : nil
        }
    }

    /// A stage-1 box in image voxels (step 1), clamped to the image.
    public func imageBox(fromStage1 box: VoxelBox) -> VoxelBox {
        let n = imageSize
        var out = box
        for a in 0..<3 {
            out.lower[a] = Self.floorDiv(box.lower[a] * n[a], stage1Size[a])
            out.upper[a] = -Self.floorDiv(-box.upper[a] * n[a], stage1Size[a])
        }
        return nonEmpty(out)
    }

    /// Plans the ROIs for boxes found in stage-1 voxels plus boxes already in image voxels (priors).
    public func plan(stage1Boxes: [LabeledBox], imageBoxes: [LabeledBox] = []) -> [ROI] {
        plan(stage1Boxes.map { LabeledBox(label: $0.label, box: imageBox(fromStage1: $0.box)) } + imageBoxes)
    }

    /// Plans the ROIs for boxes in image voxels (steps 2 to 5).
    public func plan(_ boxes: [LabeledBox]) -> [ROI] {
        let n = imageSize
        var margin = SIMD3<Int>()
        for a in 0..<3 { margin[a] = max(0, Int((marginMM / imageSpacing[a] - 1e-9).rounded(.up))) }
        let grown = boxes.map { b -> VoxelBox in
            let box = nonEmpty(b.box)
            return VoxelBox(lower: box.lower &- margin, upper: box.upper &+ margin).clamped(to: n)
        }

        // Label groups, joined where they share a label.
        var groupOf = [Int: Int]()
        var groupParent = [Int]()
        func root(_ g: Int) -> Int { var g = g; while groupParent[g] != g { g = groupParent[g] }; return g }
        for group in labelGroups where !group.isEmpty {
            let g = groupParent.count
            groupParent.append(g)
            for label in group {
                if let other = groupOf[label] { groupParent[root(other)] = g } else { groupOf[label] = g }
            }
        }

        // Initial ROIs: one per group present, one per other box.
        struct Candidate { var core: VoxelBox; var labels: Set<Int>; var sources: [Int] }
        var candidates = [Candidate]()
        var candidateOfGroup = [Int: Int]()
        for (i, b) in boxes.enumerated() {
            if let g = groupOf[b.label].map(root) {
                if let c = candidateOfGroup[g] {
                    candidates[c].core = candidates[c].core.union(grown[i])
                    candidates[c].labels.insert(b.label)
                    candidates[c].sources.append(i)
                    continue
                }
                candidateOfGroup[g] = candidates.count
            }
            candidates.append(Candidate(core: grown[i], labels: [b.label], sources: [i]))
        }

        // Greedy merging by cost.
        var fitted = candidates.map { fit($0.core) }
        var alive = [Bool](repeating: true, count: candidates.count)
        let k = candidates.count
        var saving = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        func computeSaving(_ i: Int, _ j: Int) -> Int {
            fitted[i].cost + fitted[j].cost - fit(candidates[i].core.union(candidates[j].core)).cost
        }
        for i in 0..<k { for j in (i + 1)..<max(k, i + 1) { saving[i][j] = computeSaving(i, j) } }
        while true {
            var best = 0, bi = -1, bj = -1
            for i in 0..<k where alive[i] {
                for j in (i + 1)..<max(k, i + 1) where alive[j] && saving[i][j] > best {
                    best = saving[i][j]; bi = i; bj = j
                }
            }
            guard bi >= 0 else { break }
            candidates[bi].core = candidates[bi].core.union(candidates[bj].core)
            candidates[bi].labels.formUnion(candidates[bj].labels)
            candidates[bi].sources += candidates[bj].sources
            fitted[bi] = fit(candidates[bi].core)
            alive[bj] = false
            for j in 0..<k where alive[j] && j != bi {
                let s = computeSaving(min(bi, j), max(bi, j))
                saving[min(bi, j)][max(bi, j)] = s
            }
        }

        var rois = [ROI]()
        for i in 0..<k where alive[i] {
            var roi = fitted[i]
            roi.labels = candidates[i].labels.sorted()
            roi.sourceBoxes = candidates[i].sources.sorted()
            rois.append(roi)
        }
        return rois.sorted { a, b in
            if a.labels.first! != b.labels.first! { return a.labels.first! < b.labels.first! }
            return a.box.lower.zyx.lexicographicallyPrecedes(b.box.lower.zyx)
        }
    }

    /// Step 4 for one core box (inside the image): the fitted box, sizes and cost.
    public func fit(_ core: VoxelBox) -> ROI {
        let n = imageSize
        var box = core, stage2 = SIMD3<Int>(), input = SIMD3<Int>()
        for a in 0..<3 {
            let f = imageSpacing[a] / stage2Spacing[a]
            let b = core.upper[a] - core.lower[a]
            let need = max(minROISize[a], Int((Double(b) * f - 1e-9).rounded(.up)))
            let s = Self.roundUp(need, sizeMultiple[a])
            let target = max(b, Int((Double(s) / f).rounded()))
            if target >= n[a] {
                box.lower[a] = 0; box.upper[a] = n[a]
                stage2[a] = max(1, Int((Double(n[a]) * f).rounded()))
                input[a] = Self.roundUp(max(stage2[a], minROISize[a]), sizeMultiple[a])
            } else {
                let extra = target - b
                var lo = core.lower[a] - extra / 2, hi = core.upper[a] + (extra - extra / 2)
                if lo < 0 { hi -= lo; lo = 0 }
                if hi > n[a] { lo -= hi - n[a]; hi = n[a] }
                box.lower[a] = lo; box.upper[a] = hi
                stage2[a] = s; input[a] = s
            }
        }
        return ROI(box: box, labels: [], stage2Size: stage2, inputSize: input, sourceBoxes: [],
                   cost: input.x * input.y * input.z + launchOverheadVoxels)
    }

    // MARK: - Priors and the foreground

    /// The box of the voxels brighter than `threshold` (`value > threshold`), or nil when there
    /// are none. This is the frame in which the model's prior boxes are given.
    public static func foregroundBox(of volume: Volume, threshold: Float = 0) -> VoxelBox? {
        let (nx, ny, nz) = (volume.nx, volume.ny, volume.nz)
        var lo = SIMD3(Int.max, Int.max, Int.max), hi = SIMD3(-1, -1, -1)
        volume.voxels.withUnsafeBufferPointer { v in
            var i = 0
            for z in 0..<nz {
                for y in 0..<ny {
                    var first = -1, last = -1
                    for x in 0..<nx where v[i + x] > threshold {
                        if first < 0 { first = x }
                        last = x
                    }
                    i += nx
                    guard first >= 0 else { continue }
                    if first < lo.x { lo.x = first }
                    if last > hi.x { hi.x = last }
                    if y < lo.y { lo.y = y }
                    if y > hi.y { hi.y = y }
                    if z < lo.z { lo.z = z }
                    hi.z = z
                }
            }
        }
        return hi.x < 0 ? nil : VoxelBox(lower: lo, upper: hi &+ 1)
    }

    /// A prior box given as fractions `[z0, y0, x0, z1, y1, x1]` of `foregroundBox` (the model
    /// file's `priors[].box`) in voxels: per axis `lower = fg.lower + floor(f0 * size + 1e-9)`,
    /// `upper = fg.lower + ceil(f1 * size - 1e-9)` (fractions swapped if f1 < f0), at least one
    /// voxel; cut to `0 ..< imageSize` when given (keeping at least one voxel inside).
    public static func priorBox(fractions: [Double], foregroundBox fg: VoxelBox, imageSize: SIMD3<Int>? = nil) -> VoxelBox {
        precondition(fractions.count == 6, "a prior box has six fractions [z0, y0, x0, z1, y1, x1]")
        var box = fg
        for a in 0..<3 {
            let f0 = min(fractions[2 - a], fractions[5 - a]), f1 = max(fractions[2 - a], fractions[5 - a])
            let size = Double(fg.upper[a] - fg.lower[a])
            box.lower[a] = fg.lower[a] + Int((f0 * size + 1e-9).rounded(.down))
            box.upper[a] = max(box.lower[a] + 1, fg.lower[a] + Int((f1 * size - 1e-9).rounded(.up)))
        }
        guard let imageSize else { return box }
        return nonEmpty(box, in: imageSize)
    }

    // MARK: - Internals

    func nonEmpty(_ box: VoxelBox) -> VoxelBox { ROIPlanner.nonEmpty(box, in: imageSize) }

    /// `box` cut to the image; an axis left empty keeps the one-voxel slab nearest to it.
    static func nonEmpty(_ box: VoxelBox, in n: SIMD3<Int>) -> VoxelBox {
        var out = box.clamped(to: n)
        for a in 0..<3 where out.upper[a] <= out.lower[a] {
            let at = min(max(box.lower[a], 0), n[a] - 1)
            out.lower[a] = at; out.upper[a] = at + 1
        }
        return out
    }

    private static func roundUp(_ value: Int, _ multiple: Int) -> Int { (value + multiple - 1) / multiple * multiple }

    private static func floorDiv(_ a: Int, _ b: Int) -> Int {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}
