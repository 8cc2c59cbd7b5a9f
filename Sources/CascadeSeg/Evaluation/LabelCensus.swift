/// One pass over a predicted and a reference label map: for every positive label, its voxel
/// counts in each map, its overlap, and the bounding box of its voxels in either map.
///
/// Per-label surface distances are then computed on that bounding box only. This is exact: all
/// surface voxels of both masks lie inside it, and a voxel on the box's faces that is not on the
/// image border has its outer neighbour outside both masks, so it is a surface voxel whether the
/// box or the whole image is searched.
struct LabelCensus {
    struct Entry {
        var prediction = 0, reference = 0, overlap = 0
        var low = (x: Int.max, y: Int.max, z: Int.max)
        var high = (x: -1, y: -1, z: -1)

        mutating func include(_ x: Int, _ y: Int, _ z: Int) {
            if x < low.x { low.x = x }
            if x > high.x { high.x = x }
            if y < low.y { low.y = y }
            if y > high.y { high.y = y }
            if z < low.z { low.z = z }
            if z > high.z { high.z = z }
        }
    }

    let grid: MetricGrid
    private(set) var entries: [Entry] = []
    private var slots: [Int32: Int] = [:]

    /// The positive labels found in either map, in order of first appearance.
    var labels: [Int32] { slots.sorted { $0.value < $1.value }.map(\.key) }

    init(prediction: [Int32], reference: [Int32], grid: MetricGrid) {
        precondition(prediction.count == grid.voxelCount && reference.count == grid.voxelCount)
        var entries: [Entry] = []
        var slots: [Int32: Int] = [:]
        // Neighbouring voxels mostly share a label, so the last slot looked up is remembered.
        var lastLabel: Int32 = 0, lastSlot = -1
        func slot(_ label: Int32) -> Int {
            if label == lastLabel { return lastSlot }
            let s: Int
            if let known = slots[label] { s = known } else {
                s = entries.count
                slots[label] = s
                entries.append(Entry())
            }
            lastLabel = label
            lastSlot = s
            return s
        }
        prediction.withUnsafeBufferPointer { p in
            reference.withUnsafeBufferPointer { r in
                var i = 0
                for z in 0..<grid.nz {
                    for y in 0..<grid.ny {
                        for x in 0..<grid.nx {
                            let a = p[i], b = r[i]
                            i += 1
                            if a > 0 {
                                let s = slot(a)
                                entries[s].prediction += 1
                                if a == b { entries[s].overlap += 1 }
                                entries[s].include(x, y, z)
                            }
                            if b > 0 {
                                let s = slot(b)
                                entries[s].reference += 1
                                if a != b { entries[s].include(x, y, z) }
                            }
                        }
                    }
                }
            }
        }
        self.grid = grid
        self.entries = entries
        self.slots = slots
    }

    /// The metrics of `label`, computing surface distances on its bounding box only.
    func metrics(label: Int, prediction: [Int32], reference: [Int32]) -> LabelMetrics {
        guard let s = slots[Int32(label)] else {
            return LabelMetrics(label: label, predictionVoxels: 0, referenceVoxels: 0, overlapVoxels: 0,
                                hd95: .nan, voxelVolume: grid.voxelVolume)
        }
        let e = entries[s]
        var hd95 = Double.nan
        if e.prediction > 0 && e.reference > 0 {
            let box = MetricGrid(nx: e.high.x - e.low.x + 1, ny: e.high.y - e.low.y + 1, nz: e.high.z - e.low.z + 1,
                                spacing: grid.spacing)
            var p = [Bool](repeating: false, count: box.voxelCount)
            var r = p
            let value = Int32(label)
            var j = 0
            for z in e.low.z...e.high.z {
                for y in e.low.y...e.high.y {
                    let row = grid.nx * (y + grid.ny * z)
                    for x in e.low.x...e.high.x {
                        p[j] = prediction[row + x] == value
                        r[j] = reference[row + x] == value
                        j += 1
                    }
                }
            }
            hd95 = HausdorffDistance.robust(prediction: p, reference: r, in: box)
        }
        return LabelMetrics(label: label, predictionVoxels: e.prediction, referenceVoxels: e.reference,
                            overlapVoxels: e.overlap, hd95: hd95, voxelVolume: grid.voxelVolume)
    }
}
