import Foundation

/// Step 7 of the cascade: pasting the stage-2 results of the ROIs into one label map.
///
/// The map starts all background (0) with a best probability of -1 per voxel. For each ROI, in
/// plan order, and each voxel of its box: `k*` is the first arg-max of the voxel's logits, `l`
/// the label of channel `k*`, and `p = 1 / sum_k exp(logit_k - logit_k*)` its softmax
/// probability (in Float, summed in channel order). The voxel takes `l`, and `best = p`, when
/// `l` is background or one of the ROI's labels **and** `p > best` (strictly: on a tie the
/// earlier ROI keeps the voxel).
///
/// Why: ROIs overlap, and where they do the more confident ROI should win. But an ROI sees the
/// structures around the one it was planned for only partly, near its border, so a label the
/// ROI was not planned for has no say there: the ROI planned for that label decides. Background
/// is every ROI's business, so a confident "nothing here" can clear a less confident label.
/// Voxels no ROI covers stay background.
public struct ROIPaste: Sendable {
    /// The image grid (x, y, z).
    public let size: SIMD3<Int>
    /// The pasted labels, index x + nx * (y + ny * z).
    public private(set) var labels: [Int32]
    /// The probability behind each voxel's label; -1 where no ROI has set the voxel.
    public private(set) var probabilities: [Float]

    public init(size: SIMD3<Int>) {
        precondition(size.x >= 1 && size.y >= 1 && size.z >= 1, "an empty grid \(size)")
        self.size = size
        labels = [Int32](repeating: 0, count: size.x * size.y * size.z)
        probabilities = [Float](repeating: -1, count: labels.count)
    }

    /// Pastes one ROI: `logits` on the grid of `box` (image voxels, inside the image), the ROI's
    /// `labels` (the ones it was planned for) and the label of each logit channel.
    public mutating func paste(_ logits: ClassLogits, at box: VoxelBox, labels roiLabels: [Int], labelOfChannel: [Int32]) {
        precondition(logits.size == box.size, "logits of \(logits.size) for a box of \(box.size)")
        precondition(box.clamped(to: size) == box && !box.isEmpty, "box \(box) is not inside the \(size) grid")
        precondition(labelOfChannel.count == logits.channels, "\(labelOfChannel.count) labels for \(logits.channels) channels")
        let k = logits.channels, n = logits.voxelCount, s = box.size
        let taken: [Bool] = labelOfChannel.map { $0 == 0 || roiLabels.contains(Int($0)) }
        let (nx, ny) = (size.x, size.y)
        logits.values.withUnsafeBufferPointer { v in
            labels.withUnsafeMutableBufferPointer { out in
                probabilities.withUnsafeMutableBufferPointer { best in
                    var i = 0
                    for z in 0..<s.z {
                        for y in 0..<s.y {
                            let row = box.lower.x + nx * ((box.lower.y + y) + ny * (box.lower.z + z))
                            for x in 0..<s.x {
                                defer { i += 1 }
                                var top = v[i], winner = 0
                                for c in 1..<k where v[c * n + i] > top { top = v[c * n + i]; winner = c }
                                guard taken[winner] else { continue }
                                var sum: Float = 0
                                for c in 0..<k { sum += exp(v[c * n + i] - top) }
                                let p = 1 / sum
                                if p > best[row + x] {
                                    best[row + x] = p
                                    out[row + x] = labelOfChannel[winner]
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
