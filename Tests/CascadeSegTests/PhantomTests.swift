import XCTest
@testable import CascadeSeg

final class PhantomTests: XCTestCase {
    func testPhantomIsDeterministicAndHoldsEveryStructure() {
        let a = Phantom(size: SIMD3(48, 44, 40), seed: 3)
        let b = Phantom(size: SIMD3(48, 44, 40), seed: 3)
        XCTAssertEqual(a.image, b.image)
        XCTAssertEqual(a.labels, b.labels)
        XCTAssertNotEqual(Phantom(size: SIMD3(48, 44, 40), seed: 4).image, a.image, "the seed drives the noise")
        var counts = [Int32: Int]()
        for l in a.labels { counts[l, default: 0] += 1 }
        for s in a.structures { XCTAssertGreaterThan(counts[s.id] ?? 0, 0, "\(s.name) is missing") }
        // The large sphere: radius 0.05 * 40 = 2 mm; about 4/3 pi 2^3 = 33.5 voxels.
        XCTAssertEqual(Double(counts[1]!), 33.5, accuracy: 15)
        // Structures are small against the body (the microstructure setting of the cascade).
        let body = a.image.voxels.filter { $0 != 0 }.count
        let structures = a.labels.filter { $0 != 0 }.count
        XCTAssertLessThan(Double(structures) / Double(body), 0.05)
        // Every labelled voxel is inside the body.
        for i in a.labels.indices where a.labels[i] != 0 { XCTAssertNotEqual(a.image.voxels[i], 0) }
    }

    func testStructuresScaleWithAnisotropicSpacing() {
        let p = Phantom(size: SIMD3(40, 40, 20), spacing: SIMD3(1, 1, 2), seed: 1)
        let components = ConnectedComponents.label(labelMap: p.labels, size: p.image.size)
        let labelsFound = Set(components.components.map(\.label))
        XCTAssertTrue(labelsFound.isSuperset(of: [1, 2, 3, 4]), "\(labelsFound)")
    }
}
