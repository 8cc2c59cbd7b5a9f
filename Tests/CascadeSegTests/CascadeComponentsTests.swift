import XCTest
@testable import CascadeSeg

/// `ConnectedComponents` against a breadth-first flood fill on random masks and label maps, for
/// each connectivity, plus hand-made cases.
final class CascadeComponentsTests: XCTestCase {
    typealias CC = ConnectedComponents

    /// Flood fill from each unvisited foreground voxel in scan order: components come out in the
    /// order of their first voxel, as `ConnectedComponents` numbers them.
    func floodFill(_ labels: [Int32], size: SIMD3<Int>, connectivity: CC.Connectivity) -> CC.Labeling {
        let (nx, ny, nz) = (size.x, size.y, size.z)
        var neighbours = [SIMD3<Int>]()
        for dz in -1...1 { for dy in -1...1 { for dx in -1...1 {
            let order = abs(dx) + abs(dy) + abs(dz)
            if order > 0 && order <= (connectivity == .six ? 1 : connectivity == .eighteen ? 2 : 3) { neighbours.append(SIMD3(dx, dy, dz)) }
        } } }
        var map = [Int32](repeating: 0, count: labels.count)
        var components = [CC.Component]()
        for start in labels.indices where labels[start] != 0 && map[start] == 0 {
            let id = Int32(components.count + 1)
            var queue = [start], head = 0
            map[start] = id
            var lo = SIMD3(Int.max, Int.max, Int.max), hi = SIMD3(-1, -1, -1)
            while head < queue.count {
                let i = queue[head]; head += 1
                let p = SIMD3(i % nx, (i / nx) % ny, i / (nx * ny))
                lo = pointwiseMin(lo, p); hi = pointwiseMax(hi, p)
                for d in neighbours {
                    let q = p &+ d
                    guard q.x >= 0, q.x < nx, q.y >= 0, q.y < ny, q.z >= 0, q.z < nz else { continue }
                    let j = q.x + nx * (q.y + ny * q.z)
                    if map[j] == 0 && labels[j] == labels[start] { map[j] = id; queue.append(j) }
                }
            }
            components.append(CC.Component(label: Int(labels[start]), voxelCount: queue.count,
                                           box: VoxelBox(lower: lo, upper: hi &+ 1), firstVoxel: start))
        }
        return CC.Labeling(size: size, components: components, componentMap: map)
    }

    func testNeighbourhoods() {
        XCTAssertEqual(CC.Connectivity.six.backwardOffsets.count, 3)
        XCTAssertEqual(CC.Connectivity.eighteen.backwardOffsets.count, 9)
        XCTAssertEqual(CC.Connectivity.twentySix.backwardOffsets.count, 13)
    }

    func testRandomMasksMatchFloodFill() {
        var rng = SeededRandom(seed: 1)
        for trial in 0..<40 {
            let size = SIMD3(1 + Int(rng.next() % 11), 1 + Int(rng.next() % 9), 1 + Int(rng.next() % 8))
            let density = [0.15, 0.3, 0.45, 0.6][trial % 4]
            let mask = (0..<(size.x * size.y * size.z)).map { _ in rng.unit() < density }
            for connectivity in CC.Connectivity.allCases {
                let got = CC.label(mask: mask, size: size, connectivity: connectivity)
                let want = floodFill(mask.map { $0 ? 1 : 0 }, size: size, connectivity: connectivity)
                XCTAssertEqual(got, want, "trial \(trial) \(size) \(connectivity)")
                XCTAssertEqual(got.components.map(\.voxelCount).reduce(0, +), mask.filter { $0 }.count)
            }
        }
    }

    func testRandomLabelMapsMatchFloodFillPerLabel() {
        var rng = SeededRandom(seed: 2)
        for trial in 0..<30 {
            let size = SIMD3(2 + Int(rng.next() % 9), 2 + Int(rng.next() % 8), 1 + Int(rng.next() % 7))
            let labels = (0..<(size.x * size.y * size.z)).map { _ -> Int32 in rng.unit() < 0.4 ? 0 : Int32(1 + rng.next() % 3) }
            for connectivity in CC.Connectivity.allCases {
                let got = CC.label(labelMap: labels, size: size, connectivity: connectivity)
                XCTAssertEqual(got, floodFill(labels, size: size, connectivity: connectivity), "trial \(trial) \(connectivity)")
                XCTAssertEqual(CC.label(labelMap: labels.map(Float.init), size: size, connectivity: connectivity), got)
            }
        }
    }

    func testHandMadeCases() {
        let size = SIMD3(3, 3, 3)
        func mask(_ points: [SIMD3<Int>]) -> [Bool] {
            var m = [Bool](repeating: false, count: 27)
            for p in points { m[p.x + 3 * (p.y + 3 * p.z)] = true }
            return m
        }
        let corner = mask([SIMD3(0, 0, 0), SIMD3(1, 1, 1)])
        let edge = mask([SIMD3(0, 0, 0), SIMD3(1, 1, 0)])
        XCTAssertEqual(CC.label(mask: corner, size: size, connectivity: .twentySix).components.count, 1)
        XCTAssertEqual(CC.label(mask: corner, size: size, connectivity: .eighteen).components.count, 2)
        XCTAssertEqual(CC.label(mask: edge, size: size, connectivity: .eighteen).components.count, 1)
        XCTAssertEqual(CC.label(mask: edge, size: size, connectivity: .six).components.count, 2)
        // A U shape whose arms meet only at the far end: the union of two provisional labels.
        let u = mask([SIMD3(0, 2, 0), SIMD3(2, 2, 0), SIMD3(0, 1, 0), SIMD3(2, 1, 0), SIMD3(0, 0, 0), SIMD3(1, 0, 0), SIMD3(2, 0, 0)])
        let result = CC.label(mask: u, size: size, connectivity: .six)
        XCTAssertEqual(result.components, [CC.Component(label: 1, voxelCount: 7, box: VoxelBox(lower: .zero, upper: SIMD3(3, 3, 1)), firstVoxel: 0)])
        XCTAssertEqual(CC.label(mask: [Bool](repeating: false, count: 27), size: size).components, [])
        let full = CC.label(mask: [Bool](repeating: true, count: 27), size: size)
        XCTAssertEqual(full.components.map(\.box), [VoxelBox(size: size)])
        XCTAssertEqual(full.componentMap, [Int32](repeating: 1, count: 27))
        // Two labels touching are two components; componentsByLabel groups them.
        let two = CC.label(labelMap: [1, 1, 2, 2, 0, 1] as [Int32], size: SIMD3(6, 1, 1))
        XCTAssertEqual(two.components.map(\.label), [1, 2, 1])
        XCTAssertEqual(two.componentMap, [1, 1, 2, 2, 0, 3])
        XCTAssertEqual(two.componentsByLabel[1]?.map(\.box), [VoxelBox(lower: .zero, upper: SIMD3(2, 1, 1)), VoxelBox(lower: SIMD3(5, 0, 0), upper: SIMD3(6, 1, 1))])
    }
}
