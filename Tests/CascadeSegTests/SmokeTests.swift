import XCTest
@testable import CascadeSeg

final class SmokeTests: XCTestCase {
    func testSingleConvMatchesNaive() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let (c, k, d, h, w) = (3, 5, 7, 9, 19)
        var rng = SystemRandomNumberGenerator()
        let x = Tensor(shape: [1, c, d, h, w], data: (0..<(c * d * h * w)).map { _ in Float.random(in: -1...1, using: &rng) })
        let wt = Tensor(shape: [k, c, 3, 3, 3], data: (0..<(k * c * 27)).map { _ in Float.random(in: -1...1, using: &rng) })
        let b = Tensor(shape: [k], data: (0..<k).map { _ in Float.random(in: -1...1, using: &rng) })
        let graph = Graph(name: "g", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(c), .symbol("D"), .symbol("H"), .symbol("W")])],
                          outputs: [ValueInfo(name: "y", shape: [])],
                          nodes: [Node(name: "conv", op: .conv, inputs: ["x", "w", "b"], outputs: ["y"],
                                       attributes: ["pads": .ints([1, 1, 1, 1, 1, 1])])])
        let net = try Network(graph: graph, weights: ["w": wt, "b": b], context: context)
        let result = try net.run(x)
        let y = result.outputs["y"]!
        XCTAssertEqual(y.shape, [1, k, d, h, w])
        var maxErr: Float = 0
        for o in 0..<k { for z in 0..<d { for yy in 0..<h { for xx in 0..<w {
            var s = Double(b.data[o])
            for i in 0..<c { for kz in 0..<3 { for ky in 0..<3 { for kx in 0..<3 {
                let iz = z + kz - 1, iy = yy + ky - 1, ix = xx + kx - 1
                if iz < 0 || iz >= d || iy < 0 || iy >= h || ix < 0 || ix >= w { continue }
                s += Double(x.data[((i * d + iz) * h + iy) * w + ix]) * Double(wt.data[((o * c + i) * 3 + kz) * 9 + ky * 3 + kx])
            }}}}
            maxErr = max(maxErr, abs(Float(s) - y.data[((o * d + z) * h + yy) * w + xx]))
        }}}}
        XCTAssertLessThan(maxErr, 1e-4)
        XCTAssertEqual(result.peakDeviceBytes, result.plannedPeakBytes)
    }
}
