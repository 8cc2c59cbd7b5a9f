import Foundation
import XCTest
@testable import CascadeSeg

/// `Resampler` (docs/PIPELINE.md) against a naive per-voxel implementation of the stated
/// formulas, plus invariants: identity, constants, linear ramps, label round trips.
final class CascadeResamplerTests: XCTestCase {
    func randomVolume(_ size: SIMD3<Int>, seed: UInt64, spacing: SIMD3<Double> = SIMD3(1, 1, 1)) -> Volume {
        var rng = SeededRandom(seed: seed)
        return Volume(size: size, spacing: spacing, voxels: (0..<(size.x * size.y * size.z)).map { _ in rng.uniform(-1...1) })
    }

    /// Naive reference: per-axis Gaussian (clamped borders) when an axis shrinks, then every
    /// output voxel interpolated directly from the 8 neighbours at c = (i + 0.5) * n / m - 0.5.
    func naiveResample(_ v: Volume, to m: SIMD3<Int>, antiAliasing: Bool) -> [Double] {
        let n = v.size
        var data = v.voxels.map(Double.init)
        func at(_ d: [Double], _ x: Int, _ y: Int, _ z: Int) -> Double { d[x + n.x * (y + n.y * z)] }
        if antiAliasing {
            for axis in 0..<3 where n[axis] > m[axis] {
                let sigma = (Double(n[axis]) / Double(m[axis]) - 1) / 2
                let radius = Int(4 * sigma + 0.5)
                var kernel = (-radius...radius).map { exp(-0.5 * Double($0 * $0) / (sigma * sigma)) }
                let total = kernel.reduce(0, +)
                kernel = kernel.map { $0 / total }
                var filtered = data
                for z in 0..<n.z { for y in 0..<n.y { for x in 0..<n.x {
                    var acc = 0.0
                    for r in -radius...radius {
                        var p = SIMD3(x, y, z)
                        p[axis] = min(max(p[axis] + r, 0), n[axis] - 1)
                        acc += kernel[r + radius] * at(data, p.x, p.y, p.z)
                    }
                    filtered[x + n.x * (y + n.y * z)] = acc
                } } }
                data = filtered
            }
        }
        func taps(_ i: Int, _ axis: Int) -> [(Int, Double)] {
            var c = (Double(i) + 0.5) * Double(n[axis]) / Double(m[axis]) - 0.5
            c = min(max(c, 0), Double(n[axis] - 1))
            let i0 = Int(c.rounded(.down)), t = c - Double(i0)
            return [(i0, 1 - t), (min(i0 + 1, n[axis] - 1), t)]
        }
        var out = [Double]()
        for z in 0..<m.z { for y in 0..<m.y { for x in 0..<m.x {
            var acc = 0.0
            for (zi, wz) in taps(z, 2) { for (yi, wy) in taps(y, 1) { for (xi, wx) in taps(x, 0) {
                acc += wz * wy * wx * at(data, xi, yi, zi)
            } } }
            out.append(acc)
        } } }
        return out
    }

    func maxError(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
    }

    func testOutputSizeAndSpacingRules() {
        // round half to even: 5 * 1 / 2 = 2.5 -> 2, 7 / 2 = 3.5 -> 4; never below 1.
        XCTAssertEqual(Resampler.resampledSize(SIMD3(5, 7, 1), spacing: SIMD3(1, 1, 1), to: SIMD3(2, 2, 2)), SIMD3(2, 4, 1))
        XCTAssertEqual(Resampler.resampledSize(SIMD3(181, 217, 181), spacing: SIMD3(1, 1, 1), to: SIMD3(3, 3, 3)), SIMD3(60, 72, 60))
        XCTAssertEqual(Resampler.resampledSize(SIMD3(10, 10, 10), spacing: SIMD3(0.5, 1, 2), to: SIMD3(1, 1, 1)), SIMD3(5, 10, 20))
        let v = randomVolume(SIMD3(181 / 10, 7, 5), seed: 1)
        let out = Resampler.resample(v, toSpacing: SIMD3(3, 1, 0.5))
        XCTAssertEqual(out.size, SIMD3(6, 7, 10))
        XCTAssertEqual(out.spacing.x, 3, accuracy: 1e-12)   // 18 voxels -> 6: exactly 3 mm
        XCTAssertEqual(out.spacing.z, 0.5, accuracy: 1e-12)
        let odd = Resampler.resample(randomVolume(SIMD3(181, 1, 1), seed: 2), toSpacing: SIMD3(3, 1, 1))
        XCTAssertEqual(odd.size.x, 60)
        XCTAssertEqual(odd.spacing.x, 181.0 / 60, accuracy: 1e-12)   // extent kept: 60 x 3.0167 = 181 mm
        XCTAssertEqual(Resampler.antiAliasingSigma(inputSize: 12, outputSize: 4), 1)
        XCTAssertEqual(Resampler.antiAliasingSigma(inputSize: 4, outputSize: 12), 0)
        XCTAssertEqual(Resampler.sourceCoordinate(0, inputSize: 12, outputSize: 4), 1)
        XCTAssertEqual(Resampler.sourceCoordinate(0, inputSize: 4, outputSize: 12), 0)   // -1/3 clamped
    }

    func testIdentityReturnsTheSameVolume() {
        let v = randomVolume(SIMD3(6, 5, 4), seed: 3, spacing: SIMD3(0.7, 1.1, 3))
        XCTAssertEqual(Resampler.resample(v, toSpacing: v.spacing), v)
        XCTAssertEqual(Resampler.resample(v, toSize: v.size), v)
    }

    func testTrilinearMatchesTheNaiveFormula() {
        let cases: [(SIMD3<Int>, SIMD3<Int>)] = [
            (SIMD3(6, 5, 4), SIMD3(13, 3, 4)), (SIMD3(7, 9, 5), SIMD3(3, 9, 11)),
            (SIMD3(1, 4, 6), SIMD3(3, 1, 2)), (SIMD3(10, 3, 8), SIMD3(10, 7, 3)),
        ]
        for (i, (from, to)) in cases.enumerated() {
            let v = randomVolume(from, seed: 10 + UInt64(i))
            for aa in [false, true] {
                let out = Resampler.resample(v, toSize: to, antiAliasing: aa)
                XCTAssertEqual(out.size, to)
                XCTAssertLessThan(maxError(out.voxels, naiveResample(v, to: to, antiAliasing: aa)), 2e-6, "\(from) -> \(to) aa \(aa)")
            }
        }
    }

    func testConstantImageStaysConstant() {
        let v = Volume(size: SIMD3(17, 11, 9), spacing: SIMD3(1, 1, 1), repeating: 3.25)
        for spacing in [SIMD3(3.0, 3, 3), SIMD3(0.4, 2.5, 1), SIMD3(7.0, 0.3, 1.7)] {
            let out = Resampler.resample(v, toSpacing: spacing)
            XCTAssertLessThan(out.voxels.map { abs($0 - 3.25) }.max()!, 1e-5, "\(spacing)")
        }
    }

    func testLinearRampStaysLinearUnderUpsampling() {
        let n = SIMD3(6, 5, 4), m = SIMD3(15, 11, 9)
        func f(_ x: Double, _ y: Double, _ z: Double) -> Double { 0.5 * x - 1.25 * y + 2 * z + 3 }
        var v = Volume(size: n, repeating: 0)
        for z in 0..<n.z { for y in 0..<n.y { for x in 0..<n.x { v[x: x, y: y, z: z] = Float(f(Double(x), Double(y), Double(z))) } } }
        let out = Resampler.resample(v, toSize: m)
        var checked = 0
        for z in 0..<m.z { for y in 0..<m.y { for x in 0..<m.x {
            let c = (0..<3).map { a -> Double in
                let i = [x, y, z][a]
                return (Double(i) + 0.5) * Double(n[a]) / Double(m[a]) - 0.5
            }
            // Away from the borders, where the coordinate is not clamped.
            guard c.indices.allSatisfy({ c[$0] >= 0 && c[$0] <= Double(n[$0] - 1) }) else { continue }
            XCTAssertEqual(Double(out[x: x, y: y, z: z]), f(c[0], c[1], c[2]), accuracy: 1e-5)
            checked += 1
        } } }
        XCTAssertGreaterThan(checked, m.x * m.y * m.z / 3)
    }

    func testAntiAliasingSuppressesACheckerboard() {
        var v = Volume(size: SIMD3(30, 30, 30), repeating: 0)
        for z in 0..<30 { for y in 0..<30 { for x in 0..<30 { v[x: x, y: y, z: z] = (x + y + z) % 2 == 0 ? 1 : -1 } } }
        let aliased = Resampler.resample(v, toSpacing: SIMD3(3, 3, 3), antiAliasing: false)
        let smooth = Resampler.resample(v, toSpacing: SIMD3(3, 3, 3))
        XCTAssertEqual(aliased.voxels.map { abs($0) }.max()!, 1)
        XCTAssertLessThan(smooth.voxels.map { abs($0) }.max()!, 0.05)
    }

    func testNearestNeighbourLabels() {
        var rng = SeededRandom(seed: 20)
        let n = SIMD3(5, 4, 3)
        let labels = (0..<60).map { _ in Int32(rng.next() % 5) }
        XCTAssertEqual(Resampler.resampleLabelsToShape(labels, from: n, to: n), labels)
        // Doubling then halving gives the map back.
        let up = Resampler.resampleLabelsToShape(labels, from: n, to: n &* 2)
        XCTAssertEqual(up.count, 480)
        XCTAssertEqual(Resampler.resampleLabelsToShape(up, from: n &* 2, to: n), labels)
        // Against the formula floor((i + 0.5) * n / m), on an odd ratio.
        let m = SIMD3(7, 3, 8)
        let out = Resampler.resampleLabelsToShape(labels, from: n, to: m)
        for z in 0..<m.z { for y in 0..<m.y { for x in 0..<m.x {
            let s = (0..<3).map { a in min(n[a] - 1, Int(((Double([x, y, z][a]) + 0.5) * Double(n[a]) / Double(m[a])).rounded(.down))) }
            XCTAssertEqual(out[x + m.x * (y + m.y * z)], labels[s[0] + n.x * (s[1] + n.y * s[2])])
        } } }
        XCTAssertEqual(Resampler.nearestSourceIndex(0, inputSize: 4, outputSize: 2), 1)   // c = 0.5: ties go up
        XCTAssertEqual(Resampler.nearestSourceIndex(1, inputSize: 4, outputSize: 2), 3)
        XCTAssertEqual(Resampler.resampleLabelsToShape(["a", "b"], from: SIMD3(2, 1, 1), to: SIMD3(4, 1, 1)), ["a", "a", "b", "b"])
    }
}
