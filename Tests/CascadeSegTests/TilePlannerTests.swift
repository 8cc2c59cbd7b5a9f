import XCTest
@testable import CascadeSeg

/// The streaming planner's arithmetic, without a device: receptive fields against brute force,
/// and plans over random networks, sizes and budgets.
final class TilePlannerTests: XCTestCase {
    /// Input indices outputs [o0, o1) read, by enumerating every tap.
    func bruteForceReads(_ map: TilePlanner.AxisMap, _ o0: Int, _ o1: Int, n: Int) -> [Int] {
        var reads = Set<Int>()
        switch map {
        case .identity: reads = Set(o0..<o1)
        case .whole: reads = Set(0..<n)
        case .window(let k, let s, let d, let p):
            for o in o0..<o1 { for t in 0..<k { reads.insert(o * s - p + t * d) } }
        case .transposed(let k, let s, let d, let p):
            for i in 0..<n { for t in 0..<k where (o0..<o1).contains(i * s - p + t * d) { reads.insert(i) } }
        }
        return reads.filter { $0 >= 0 && $0 < n }.sorted()
    }

    func testInputRangesCoverExactlyTheVoxelsRead() {
        var random = SplitMixRandom(seed: 3)
        func r(_ m: Int) -> Int { Int(random.next() % UInt64(m)) }
        for _ in 0..<3000 {
            let k = 1 + r(5), s = 1 + r(3), d = 1 + r(2), p = r(k * d)
            let map: TilePlanner.AxisMap = r(2) == 0 ? .window(kernel: k, stride: s, dilation: d, padBegin: p)
                                                     : .transposed(kernel: k, stride: s, dilation: d, padBegin: p)
            let n = 1 + r(20)
            let outputs: Int
            if case .window = map { outputs = max(1, (n + 2 * p - d * (k - 1) - 1) / s + 1) } else { outputs = max(1, (n - 1) * s - 2 * p + d * (k - 1) + 1) }
            let o0 = r(outputs), o1 = o0 + 1 + r(outputs - o0)
            let reads = bruteForceReads(map, o0, o1, n: n)
            let range = map.inputRange(outputs: o0, o1, inputSize: n)
            XCTAssertTrue(range.lowerBound >= 0 && range.upperBound <= n && !range.isEmpty, "\(map): \(range) outside 0..<\(n)")
            XCTAssertTrue(reads.allSatisfy(range.contains), "\(map) outputs \(o0)..<\(o1): \(range) misses some of \(reads)")
            // What the kernel computes on the tile (local coordinates, local padding) must take
            // the same inputs with the same taps as on the whole tensor, output by output.
            let pad = map.localPadBegin(outputStart: o0, inputStart: range.lowerBound)
            for o in o0..<o1 {
                XCTAssertEqual(contributions(map, output: o, n: n, start: 0, pad: nil),
                               contributions(map, output: o - o0, n: range.count, start: range.lowerBound, pad: pad),
                               "\(map) output \(o) in tile \(o0)..<\(o1) reading \(range)")
            }
        }
    }

    /// (global input index, tap) pairs output `output` sums, on an input of `n` voxels that
    /// starts at global index `start`, with padding `pad` (nil: the map's own).
    func contributions(_ map: TilePlanner.AxisMap, output: Int, n: Int, start: Int, pad: Int?) -> Set<[Int]> {
        var result = Set<[Int]>()
        switch map {
        case .window(let k, let s, let d, let p):
            for t in 0..<k {
                let i = output * s - (pad ?? p) + t * d
                if i >= 0 && i < n { result.insert([start + i, t]) }
            }
        case .transposed(let k, let s, let d, let p):
            for i in 0..<n { for t in 0..<k where i * s - (pad ?? p) + t * d == output { result.insert([start + i, t]) } }
        default: break
        }
        return result
    }

    /// A random chain of steps shaped like a 3-D U-Net's nodes.
    func randomSteps(_ random: inout SplitMixRandom) -> [TilePlanner.Step] {
        func r(_ m: Int) -> Int { Int(random.next() % UInt64(m)) }
        var steps: [TilePlanner.Step] = []
        var spatial = [8 + r(40), 8 + r(40), 8 + r(40)]
        var channels = 1 + r(4)
        for i in 0..<(3 + r(10)) {
            let out = [4, 8, 16, 32, 64][r(5)]
            switch r(5) {
            case 0, 1:
                let k = [1, 3, 5][r(3)], s = spatial.allSatisfy({ $0 >= 4 }) && r(3) == 0 ? 2 : 1
                let map = TilePlanner.AxisMap.window(kernel: k, stride: s, dilation: 1, padBegin: k / 2)
                let next = spatial.map { ($0 + 2 * (k / 2) - k) / s + 1 }
                steps.append(.init(name: "conv\(i)", kind: .tiled, inputs: [.init(channels: channels, spatial: spatial, z: map, y: map)],
                                   outputChannels: out, outputSpatial: next, weightBytes: 4 * out * channels * k * k * k + 4 * out))
                (spatial, channels) = (next, out)
            case 2:
                let map = TilePlanner.AxisMap.transposed(kernel: 2, stride: 2, dilation: 1, padBegin: 0)
                let next = spatial.map { $0 * 2 }
                steps.append(.init(name: "up\(i)", kind: .tiled, inputs: [.init(channels: channels, spatial: spatial, z: map, y: map)],
                                   outputChannels: out, outputSpatial: next, weightBytes: 4 * out * channels * 8, zAlignment: 2, yAlignment: 2))
                (spatial, channels) = (next, out)
            case 3:
                steps.append(.init(name: "norm\(i)", kind: .tiled, inputs: [.init(channels: channels, spatial: spatial, z: .identity, y: .identity)],
                                   outputChannels: channels, outputSpatial: spatial, weightBytes: 8 * channels, scratchBytes: 64 * channels))
            default:
                steps.append(.init(name: "concat\(i)", kind: .host, inputs: [.init(channels: channels, spatial: spatial, z: .identity, y: .identity)],
                                   outputChannels: channels * 2, outputSpatial: spatial))
                channels *= 2
            }
        }
        return steps
    }

    func testPlansStayWithinRandomBudgets() throws {
        var random = SplitMixRandom(seed: 11)
        for _ in 0..<200 {
            let steps = randomSteps(&random)
            let minimum = TilePlanner.minimumBudget(steps).bytes
            let whole = steps.map { TilePlanner.wholeTiling($0).peakBytes }.max()!
            XCTAssertLessThanOrEqual(minimum, whole)
            XCTAssertThrowsError(try TilePlanner.plan(steps, budget: minimum - 1))
            for budget in [minimum, minimum + Int(random.next() % UInt64(max(1, whole - minimum + 1))), whole] {
                let plan = try TilePlanner.plan(steps, budget: budget)
                for (step, tiling) in zip(steps, plan) {
                    XCTAssertLessThanOrEqual(tiling.peakBytes, budget, "\(step.name) at budget \(budget)")
                    if step.kind != .host {
                        XCTAssertEqual(tiling, TilePlanner.tiling(step, depth: tiling.depth, height: tiling.height),
                                       "\(step.name): the reported bytes must be the tiling's")
                    }
                    if step.kind == .tiled {
                        // Tile starts keep the step's alignment, and the tiles cover the output.
                        XCTAssertTrue(tiling.depth % step.zAlignment == 0 || tiling.depth == step.outputSpatial[0])
                        XCTAssertTrue(tiling.height % step.yAlignment == 0 || tiling.height == step.outputSpatial[1])
                        let covered = TilePlanner.ranges(extent: step.outputSpatial[0], tile: tiling.depth).map(\.count).reduce(0, +)
                        XCTAssertEqual(covered, step.outputSpatial[0])
                        // Fewest tiles: one more z-plane per tile (when that changes the count) would not fit.
                        if tiling.height == step.outputSpatial[1], tiling.depth < step.outputSpatial[0] {
                            let bigger = TilePlanner.tiling(step, depth: tiling.depth + step.zAlignment, height: tiling.height)
                            if bigger.tileCount < tiling.tileCount {
                                XCTAssertGreaterThan(bigger.peakBytes, budget, "\(step.name): more could have fit")
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(try TilePlanner.plan(steps, budget: whole).map(\.tileCount), steps.map { _ in 1 },
                           "a budget the whole tensors fit in needs no tiles")
        }
    }
}
