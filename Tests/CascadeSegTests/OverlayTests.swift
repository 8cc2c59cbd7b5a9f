import CZlib
import XCTest
@testable import CascadeSeg

/// The overlay PNG: a valid file (chunks, CRCs, zlib data) whose pixels show the labels and boxes.
final class OverlayTests: XCTestCase {
    func decode(_ png: [UInt8]) throws -> (width: Int, height: Int, rgb: [UInt8]) { try PNGTestDecoder.decode(png) }

    func testPNGRoundTrip() throws {
        var rng = SeededRandom(seed: 12)
        let rgb = (0..<(7 * 5 * 3)).map { _ in UInt8(rng.next() & 0xFF) }
        let png = try PNGWriter.encode(rgb: rgb, width: 7, height: 5)
        let decoded = try decode(png)
        XCTAssertEqual(decoded.width, 7)
        XCTAssertEqual(decoded.height, 5)
        XCTAssertEqual(decoded.rgb, rgb)
        XCTAssertThrowsError(try PNGWriter.encode(rgb: rgb, width: 8, height: 5))
    }

    func testOverlayShowsLabelsAndBoxes() throws {
        let size = SIMD3(10, 8, 6)
        let image = Volume(size: size, voxels: (0..<(10 * 8 * 6)).map { Float($0 % 7) })
        var labels = [Int32](repeating: 0, count: 10 * 8 * 6)
        for z in 2..<4 { for y in 3..<5 { for x in 4..<7 { labels[image.index(x, y, z)] = 2 } } }
        let box = VoxelBox(lower: SIMD3(1, 1, 1), upper: SIMD3(9, 7, 5))
        let (rgb, width, height) = try OverlayRenderer.render(image: image, labels: labels, boxes: [box], center: SIMD3(5, 3, 2))
        XCTAssertEqual(width, 10 + 10 + 8 + 2 * 4)
        XCTAssertEqual(height, 8)
        let decoded = try decode(try PNGWriter.encode(rgb: rgb, width: width, height: height))
        func pixel(_ u: Int, _ v: Int) -> [UInt8] {
            let o: Int = (v * width + u) * 3
            return Array(decoded.rgb[o..<(o + 3)])
        }
        // Axial panel: voxel (5, 3, 2) is labelled 2 and drawn at u = 5, v = 8 - 1 - 3 = 4.
        let colour = OverlayRenderer.colour(of: 2)
        let p = pixel(5, 4)
        XCTAssertGreaterThan(Int(p[1]), Int(p[0]), "label 2's green should dominate the blend: \(p)")
        XCTAssertEqual(colour.1, 180)
        // The box's lower x edge (x = 1) at y = 3 is outlined in yellow on the axial panel.
        XCTAssertEqual(pixel(1, 4), [255, 255, 0])
        // Outside the box and unlabelled: grey.
        let g = pixel(0, 0)
        XCTAssertEqual(g[0], g[1]); XCTAssertEqual(g[1], g[2])
    }
}
