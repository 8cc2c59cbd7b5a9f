import XCTest
@testable import CascadeSeg

final class MemoryPlannerTests: XCTestCase {
    typealias Request = MemoryPlanner.Request

    static func aligned(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    /// Checks every property a plan must have; `context` names the case in failures.
    func check(_ requests: [Request], alignment: Int, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
        let plan = MemoryPlanner.plan(requests, alignment: alignment)
        XCTAssertEqual(Set(plan.offsets.keys), Set(requests.map(\.id)), "\(context): not every request placed", file: file, line: line)
        for r in requests {
            guard let offset = plan.offsets[r.id] else { continue }
            XCTAssertGreaterThanOrEqual(offset, 0, context, file: file, line: line)
            XCTAssertEqual(offset % alignment, 0, "\(context): request \(r.id) at \(offset) is not \(alignment)-aligned", file: file, line: line)
            XCTAssertLessThanOrEqual(offset + r.bytes, plan.arenaBytes, "\(context): request \(r.id) ends past the arena", file: file, line: line)
        }
        // No two requests alive at the same step share a byte. Empty requests count as one byte
        // (the executor still binds a small view for them).
        for (i, a) in requests.enumerated() {
            for b in requests[(i + 1)...] where a.firstUse <= b.lastUse && b.firstUse <= a.lastUse {
                let oa = plan.offsets[a.id] ?? 0, ob = plan.offsets[b.id] ?? 0
                let disjoint = oa + max(a.bytes, 1) <= ob || ob + max(b.bytes, 1) <= oa
                XCTAssertTrue(disjoint, "\(context): \(a) at \(oa) overlaps \(b) at \(ob)", file: file, line: line)
            }
        }
        let lower = MemoryPlanner.lowerBound(requests, alignment: alignment)
        let sum = requests.reduce(0) { $0 + Self.aligned(max($1.bytes, 1), alignment) }
        XCTAssertGreaterThanOrEqual(plan.arenaBytes, lower, "\(context): arena below the lower bound", file: file, line: line)
        XCTAssertLessThanOrEqual(plan.arenaBytes, sum, "\(context): arena larger than all requests side by side", file: file, line: line)
        // The plan does not depend on the order the requests come in (the executor collects
        // them from a dictionary, whose order changes from run to run).
        var shuffled = requests
        var rng = SeededRandom(seed: UInt64(requests.count) &* 31 &+ UInt64(alignment))
        shuffled.shuffle(using: &rng)
        XCTAssertEqual(MemoryPlanner.plan(shuffled, alignment: alignment), plan, "\(context): plan depends on request order", file: file, line: line)
    }

    func testRandomRequestSets() {
        var rng = SeededRandom(seed: 0xC5E6)
        var totalArena = 0, totalLower = 0
        for trial in 0..<400 {
            let count = Int.random(in: 0...80, using: &rng)
            let steps = Int.random(in: 1...60, using: &rng)
            let alignment = [1, 4, 64, 128, 256, 4096].randomElement(using: &rng)!
            let maxBytes = [16, 1000, 100_000, 10_000_000].randomElement(using: &rng)!
            let requests: [Request] = (0..<count).map { id in
                let first = Int.random(in: 0..<steps, using: &rng)
                let span = Int.random(in: 0...2, using: &rng) == 0 ? Int.random(in: 0..<steps, using: &rng) : Int.random(in: 0...3, using: &rng)
                let bytes = Int.random(in: 0...9, using: &rng) == 0 ? 0 : Int.random(in: 1...maxBytes, using: &rng)
                return Request(id: id * 3 + 7, bytes: bytes, firstUse: first, lastUse: first + span)
            }
            check(requests, alignment: alignment, "trial \(trial) (\(count) requests, alignment \(alignment))")
            let plan = MemoryPlanner.plan(requests, alignment: alignment)
            totalArena += plan.arenaBytes
            totalLower += MemoryPlanner.lowerBound(requests, alignment: alignment)
        }
        // Greedy-by-size is not optimal, but on average it stays close to the bound.
        XCTAssertLessThan(Double(totalArena), 1.5 * Double(totalLower), "arena \(totalArena) vs lower bound \(totalLower)")
    }

    func testEdgeCases() {
        XCTAssertEqual(MemoryPlanner.plan([], alignment: 64).arenaBytes, 0)
        XCTAssertEqual(MemoryPlanner.lowerBound([], alignment: 64), 0)
        let one = [Request(id: 0, bytes: 100, firstUse: 0, lastUse: 0)]
        XCTAssertEqual(MemoryPlanner.plan(one, alignment: 64), .init(offsets: [0: 0], arenaBytes: 128))
        // All alive at once: they sit side by side and the lower bound is met exactly.
        let together = (0..<10).map { Request(id: $0, bytes: 1000 * ($0 + 1), firstUse: 0, lastUse: 5) }
        check(together, alignment: 64, "simultaneous")
        XCTAssertEqual(MemoryPlanner.plan(together, alignment: 64).arenaBytes, MemoryPlanner.lowerBound(together, alignment: 64))
        // Disjoint lifetimes: everything reuses the same bytes.
        let sequential = (0..<10).map { Request(id: $0, bytes: 1000 * ($0 + 1), firstUse: 2 * $0, lastUse: 2 * $0 + 1) }
        check(sequential, alignment: 64, "sequential")
        XCTAssertEqual(MemoryPlanner.plan(sequential, alignment: 64).arenaBytes, Self.aligned(10_000, 64))
        // A chain where each tensor overlaps only its successor (a plain feed-forward network).
        let chain = (0..<20).map { Request(id: $0, bytes: [4096, 1 << 20, 300, 65536][$0 % 4], firstUse: $0, lastUse: $0 + 1) }
        check(chain, alignment: 256, "chain")
        // Zero-byte requests still get distinct, aligned places when alive together.
        let empties = (0..<4).map { Request(id: $0, bytes: 0, firstUse: 0, lastUse: 0) }
        check(empties, alignment: 64, "empty")
        XCTAssertEqual(Set(MemoryPlanner.plan(empties, alignment: 64).offsets.values).count, 4)
    }

    // MARK: A real network

    /// x -> Conv -> InstanceNorm(relu) -> Conv -> Add(skip) -> Concat(skip) -> Conv(1x1) -> y
    func makeNetwork(context: ComputeContext) throws -> Network {
        var rng = SeededRandom(seed: 99)
        let c = 2, k = 4
        func conv(_ name: String, _ x: String, _ y: String, kernel: Int) -> Node {
            let p = kernel / 2
            return Node(name: name, op: .conv, inputs: [x, name + ".w", name + ".b"], outputs: [y],
                        attributes: ["pads": .ints([p, p, p, p, p, p])])
        }
        let graph = Graph(
            name: "planner-net",
            inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(c), .symbol("D"), .symbol("H"), .symbol("W")])],
            outputs: [ValueInfo(name: "y", shape: [.fixed(1), .fixed(3), .symbol("D"), .symbol("H"), .symbol("W")])],
            nodes: [
                conv("c1", "x", "a", kernel: 3),
                Node(name: "norm", op: .instanceNormalization, inputs: ["a", "norm.scale", "norm.bias"], outputs: ["n"],
                     attributes: ["activation": .string("relu")]),
                conv("c2", "n", "b", kernel: 3),
                Node(name: "add", op: .add, inputs: ["b", "n"], outputs: ["s"]),
                Node(name: "relu", op: .relu, inputs: ["s"], outputs: ["r"]),
                Node(name: "cat", op: .concat, inputs: ["r", "n"], outputs: ["j"], attributes: ["axis": .int(1)]),
                conv("head", "j", "y", kernel: 1),
            ])
        let weights: [String: Tensor] = [
            "c1.w": rng.tensor([k, c, 3, 3, 3], in: -0.3...0.3), "c1.b": rng.tensor([k]),
            "norm.scale": rng.tensor([k], in: 0.5...1.5), "norm.bias": rng.tensor([k], in: -0.1...0.1),
            "c2.w": rng.tensor([k, k, 3, 3, 3], in: -0.2...0.2), "c2.b": rng.tensor([k]),
            "head.w": rng.tensor([3, 2 * k, 1, 1, 1], in: -0.5...0.5), "head.b": rng.tensor([3]),
        ]
        return try Network(graph: graph, weights: weights, context: context)
    }

    func testNetworkPlanMatchesRunAndReusesMemory() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let network = try makeNetwork(context: context)
        var rng = SeededRandom(seed: 5)
        for (d, h, w) in [(8, 8, 8), (5, 12, 7)] {
            let shape = [1, 2, d, h, w]
            let plan = try network.plan(inputShape: shape)
            let result = try network.run(rng.tensor(shape))
            XCTAssertEqual(result.outputs["y"]?.shape, [1, 3, d, h, w])
            XCTAssertEqual(plan.peakBytes, result.plannedPeakBytes, "input \(shape)")
            XCTAssertEqual(result.plannedPeakBytes, result.peakDeviceBytes, "input \(shape)")
            XCTAssertGreaterThanOrEqual(plan.peakBytes, plan.weightBytes + plan.arena.arenaBytes)

            // Activations: every value that is not a weight.
            let activations = plan.shapes.filter { network.constantShapes[$0.key] == nil }
            XCTAssertTrue(activations.keys.contains("x") && activations.keys.contains("y"))
            let activationBytes = activations.values.reduce(0) { $0 + $1.reduce(1, *) * 4 }
            XCTAssertLessThan(plan.arena.arenaBytes, activationBytes,
                              "no reuse: arena \(plan.arena.arenaBytes) B for \(activationBytes) B of activations")
            // In place: the normalization writes over its input (and fewer storages than values exist).
            XCTAssertEqual(plan.storageOf["a"], plan.storageOf["n"], "InstanceNormalization did not run in place")
            XCTAssertLessThan(Set(plan.storageOf.values).count, plan.storageOf.count)
            // Every storage is placed, aligned, inside the arena.
            let alignment = max(context.device.baseAddressAlignBytes, 64)
            XCTAssertEqual(Set(plan.arena.offsets.keys), Set(plan.storageBytes.keys))
            for (id, offset) in plan.arena.offsets {
                XCTAssertEqual(offset % alignment, 0)
                XCTAssertLessThanOrEqual(offset + (plan.storageBytes[id] ?? 0), plan.arena.arenaBytes)
            }
        }
    }
}
