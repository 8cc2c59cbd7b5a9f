import Foundation
import XCTest
@testable import CascadeSeg

/// One network over a whole NIfTI image: the labels must be the network's arg-max at every voxel
/// of the image grid, and the written label map must keep the image's geometry.
final class WholeVolumeSegmentationTests: XCTestCase {
    func synthetic(nx: Int, ny: Int, nz: Int, spacing: Double, seed: UInt64) throws -> NiftiImage {
        var rng = SeededRandom(seed: seed)
        let affine: [[Double]] = [[spacing, 0, 0, -10], [0, spacing, 0, 5], [0, 0, spacing, 2], [0, 0, 0, 1]]
        let geometry = try NiftiGeometry(nx: nx, ny: ny, nz: nz, affine: affine)
        return try NiftiImage(voxels: (0..<(nx * ny * nz)).map { _ in rng.uniform(-2...2) }, geometry: geometry)
    }

    func testLabelsAreTheNetworksArgMaxOnTheImageGrid() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let model = try ModelFile(contentsOf: FixtureNetworkTests.fixtures.appendingPathComponent("unet_in.cseg").path)
        let network = try Network(model: model, context: context)
        let (nx, ny, nz) = (23, 19, 17)
        let image = try synthetic(nx: nx, ny: ny, nz: nz, spacing: 1, seed: 3)
        let result = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: 1, network: network)
        XCTAssertEqual(result.labels.count, nx * ny * nz)

        // Independent reference: place the image in a zero tensor padded to multiples of 4, run,
        // and take the first maximal channel at each image voxel.
        let (px, py, pz) = (24, 20, 20)
        var x = Tensor(zeros: [1, 1, pz, py, px])
        for i in 0..<(nx * ny * nz) {
            let (vx, vy, vz) = (i % nx, (i / nx) % ny, i / (nx * ny))
            x.data[(vz * py + vy) * px + vx] = image.voxels[i]
        }
        let logits = try network(x)
        var mismatches = 0
        for i in 0..<(nx * ny * nz) {
            let (vx, vy, vz) = (i % nx, (i / nx) % ny, i / (nx * ny))
            let scores = (0..<4).map { logits.data[((($0 * pz) + vz) * py + vy) * px + vx] }
            let expected = scores.firstIndex(of: scores.max()!)!
            if Int(result.labels[i]) != expected { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertGreaterThan(Set(result.labels).count, 1, "a random network should produce several labels")

        // Written with the image's geometry, read back unchanged.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wvs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("labels.nii.gz").path
        try NiftiImage.writeLabelMap(result.labels, like: image, to: path)
        let back = try NiftiImage(contentsOf: path)
        XCTAssertEqual(back.geometry, image.geometry)
        XCTAssertEqual(back.voxels.map { Int32($0) }, result.labels)
    }

    func testCoarserImageIsResampledToTheStageSpacingAndBack() throws {
        let context = try ComputeContext.shared(for: try ComputeDevice.select("cpu"))
        let model = try ModelFile(contentsOf: FixtureNetworkTests.fixtures.appendingPathComponent("unet_in.cseg").path)
        let network = try Network(model: model, context: context)
        let image = try synthetic(nx: 11, ny: 9, nz: 7, spacing: 2, seed: 4)
        let result = try WholeVolumeSegmentation.segment(image, model: model, stageIndex: 1, network: network)
        XCTAssertEqual(result.stageSize, SIMD3(22, 18, 14))
        XCTAssertEqual(result.labels.count, 11 * 9 * 7)
        XCTAssertTrue(result.labels.allSatisfy { (0...3).contains($0) })
    }
}
