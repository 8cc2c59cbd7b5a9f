import CNifti
import XCTest
@testable import CascadeSeg

/// `Volume` and `IntensityNormalization` (docs/PIPELINE.md): every scheme against a direct
/// Double computation, the all-zero and constant images, percentiles against sorting, errors.
final class CascadeNormalizationTests: XCTestCase {
    typealias N = ModelMetadata.Normalization

    func randomVolume(_ size: SIMD3<Int>, seed: UInt64, zeroFraction: Double = 0, range: ClosedRange<Double> = -50...300) -> Volume {
        var rng = SeededRandom(seed: seed)
        let voxels = (0..<(size.x * size.y * size.z)).map { _ -> Float in
            rng.unit() < zeroFraction ? 0 : rng.uniform(range)
        }
        return Volume(size: size, spacing: SIMD3(0.8, 1, 2.5), voxels: voxels)
    }

    /// Mean and population std in Double, the reference for the z-scores.
    func reference(_ values: [Float]) -> (mean: Double, std: Double) {
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
        return (mean, max(variance.squareRoot(), 1e-8))
    }

    /// numpy's linear percentile by sorting.
    func referencePercentile(_ values: [Float], _ p: Double) -> Double {
        let s = values.sorted()
        let q = p / 100 * Double(s.count - 1)
        let k = Int(q.rounded(.down))
        let t = q - Double(k)
        guard t > 0 else { return Double(s[k]) }
        let a = Double(s[k]), b = Double(s[k + 1])
        return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1 - t)   // numpy's _lerp
    }

    func assertClose(_ a: [Float], _ b: [Double], tolerance: Double = 2e-6, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        var worst = 0.0
        for (x, y) in zip(a, b) { worst = max(worst, abs(Double(x) - y) / max(1, abs(y))) }
        XCTAssertLessThanOrEqual(worst, tolerance, file: file, line: line)
    }

    func testVolumeFromNiftiImageKeepsGridAndVoxels() throws {
        let affine: [[Double]] = [[0.5, 0, 0, -10], [0, 1.5, 0, 3], [0, 0, 2, 7]]
        let geometry = try NiftiGeometry(nx: 4, ny: 3, nz: 2, affine: affine)
        let image = try NiftiImage(voxels: (0..<24).map(Float.init), geometry: geometry)
        let volume = Volume(image)
        XCTAssertEqual(volume.size, SIMD3(4, 3, 2))
        XCTAssertEqual(volume.spacing, SIMD3(0.5, 1.5, 2))
        XCTAssertEqual(volume.voxels, image.voxels)
        XCTAssertEqual(volume[x: 3, y: 2, z: 1], 23)
        XCTAssertEqual(volume.index(1, 2, 1), 1 + 4 * (2 + 3 * 1))
        var metres = image
        metres.geometry.xyzUnits = NIFTI_UNITS_METER
        XCTAssertEqual(Volume(metres).spacing, SIMD3(500, 1500, 2000))
        XCTAssertEqual(SIMD3<Double>(zyx: [3, 2, 1]), SIMD3(1, 2, 3))
        XCTAssertEqual(SIMD3(1, 2, 3).zyx, [3, 2, 1])
    }

    func testNoneLeavesVoxelsUnchanged() throws {
        let v = randomVolume(SIMD3(5, 4, 3), seed: 1)
        XCTAssertEqual(try IntensityNormalization.apply(.none, to: v), v)
    }

    func testZScoreOverAllVoxels() throws {
        let v = randomVolume(SIMD3(7, 6, 5), seed: 2, zeroFraction: 0.3)
        let out = try IntensityNormalization.apply(N(kind: "zscore", foreground: "all"), to: v)
        let (mean, std) = reference(v.voxels)
        assertClose(out.voxels, v.voxels.map { (Double($0) - mean) / std })
        let (m2, s2) = reference(out.voxels)
        XCTAssertEqual(m2, 0, accuracy: 1e-6)
        XCTAssertEqual(s2, 1, accuracy: 1e-5)
        XCTAssertEqual(out.size, v.size)
        XCTAssertEqual(out.spacing, v.spacing)
    }

    func testZScoreOverNonzeroVoxelsLeavesZerosAtZero() throws {
        let v = randomVolume(SIMD3(7, 6, 5), seed: 3, zeroFraction: 0.4)
        let foreground = v.voxels.filter { $0 != 0 }
        let (mean, std) = reference(foreground)
        for normalization in [N(kind: "zscore", foreground: "nonzero"), N(kind: "zscore")] {
            let out = try IntensityNormalization.apply(normalization, to: v)
            assertClose(out.voxels, v.voxels.map { $0 == 0 ? 0 : (Double($0) - mean) / std })
            for (a, b) in zip(v.voxels, out.voxels) where a == 0 { XCTAssertEqual(b, 0) }
        }
    }

    func testAllZeroAndConstantImagesGiveZerosNotNaN() throws {
        let zero = Volume(size: SIMD3(4, 3, 2), repeating: 0)
        let schemes = [N(kind: "zscore", foreground: "nonzero"), N(kind: "zscore", foreground: "all"),
                       N(kind: "percentile", foreground: "nonzero", lower: 0.5, upper: 99.5),
                       N(kind: "percentile", foreground: "all", lower: 0.5, upper: 99.5)]
        for scheme in schemes {
            let out = try IntensityNormalization.apply(scheme, to: zero)
            XCTAssertEqual(out.voxels, zero.voxels, "\(scheme)")
        }
        let constant = Volume(size: SIMD3(4, 3, 2), repeating: 42)
        for scheme in schemes {
            let out = try IntensityNormalization.apply(scheme, to: constant)
            XCTAssertTrue(out.voxels.allSatisfy { $0 == 0 }, "\(scheme)")
        }
    }

    func testCTClipsThenUsesTheModelsMeanAndStd() throws {
        let v = Volume(size: SIMD3(5, 1, 1), voxels: [-2000, -100, 0, 80, 3000])
        let out = try IntensityNormalization.apply(N(kind: "ct", clip: [-1000, 1500], mean: 50, std: 200), to: v)
        let expected: [Double] = [-1000, -100, 0, 80, 1500].map { ($0 - 50) / 200 }
        assertClose(out.voxels, expected, tolerance: 1e-7)
    }

    func testPercentileClipsToForegroundPercentilesThenZScores() throws {
        for (foreground, seed) in [("nonzero", UInt64(4)), ("all", 5)] {
            let v = randomVolume(SIMD3(9, 8, 7), seed: seed, zeroFraction: 0.35)
            let out = try IntensityNormalization.apply(N(kind: "percentile", foreground: foreground, lower: 2.5, upper: 97), to: v)
            let nonzero = foreground == "nonzero"
            let fg = nonzero ? v.voxels.filter { $0 != 0 } : v.voxels
            let lo = Float(referencePercentile(fg, 2.5)), hi = Float(referencePercentile(fg, 97))
            let (mean, std) = reference(fg.map { min(max($0, lo), hi) })
            let expected = v.voxels.map { x -> Double in
                nonzero && x == 0 ? 0 : (Double(min(max(x, lo), hi)) - mean) / std
            }
            assertClose(out.voxels, expected)
        }
    }

    func testOrderStatisticsAndPercentilesMatchSorting() {
        var rng = SeededRandom(seed: 6)
        for count in [1, 2, 3, 10, 257, 1000] {
            // Negative and positive values, many ties, both zeros, tiny and huge magnitudes.
            let values: [Float] = (0..<count).map { i in
                switch i % 5 {
                case 0: return Float(Int(rng.next() % 7)) - 3
                case 1: return i % 2 == 0 ? 0 : -0.0
                case 2: return rng.uniform(-1e-30...1e-30)
                case 3: return rng.uniform(-3e38...3e38)
                default: return rng.uniform(-100...100)
                }
            }
            let sorted = values.sorted()
            values.withUnsafeBufferPointer { v in
                for rank in Set([0, count / 3, count / 2, count - 1]) {
                    XCTAssertEqual(IntensityNormalization.orderStatistic(v, rank: rank), sorted[rank])
                }
                for p in [0, 0.5, 25, 50, 99.5, 100] {
                    let a = IntensityNormalization.percentile(v, p), b = referencePercentile(values, p)
                    XCTAssertEqual(a, b, accuracy: abs(b) * 1e-12 + 1e-300, "n \(count) p \(p)")
                }
            }
        }
    }

    func testInvalidParametersAndNonFiniteVoxelsAreRefused() {
        let v = Volume(size: SIMD3(2, 1, 1), voxels: [1, 2])
        let bad: [N] = [N(kind: "minmax"), N(kind: "zscore", foreground: "body"),
                        N(kind: "ct", clip: [100, -100], mean: 0, std: 1), N(kind: "ct", clip: [0, 1], mean: 0),
                        N(kind: "ct", clip: [0, 1], mean: 0, std: 0), N(kind: "percentile", lower: 99, upper: 1),
                        N(kind: "percentile", lower: -1, upper: 50), N(kind: "percentile", lower: 1)]
        for n in bad {
            XCTAssertThrowsError(try IntensityNormalization.apply(n, to: v), "\(n)") { error in
                guard case CascadeSegError.invalidModel = error else { return XCTFail("\(error)") }
            }
        }
        let nan = Volume(size: SIMD3(2, 1, 1), voxels: [1, .nan])
        XCTAssertThrowsError(try IntensityNormalization.apply(N(kind: "zscore"), to: nan)) { error in
            guard case CascadeSegError.invalidInput(let m) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(m.contains("1 NaN or infinite"), m)
        }
        XCTAssertNoThrow(try IntensityNormalization.apply(.none, to: nan))
    }
}
