import CZlib
import XCTest
@testable import CascadeSeg

/// The overlay PNG: a valid file (chunks, CRCs, zlib data) whose pixels show the labels and boxes.
final class OverlayTests: XCTestCase {
    /// Minimal independent PNG reader for 8-bit RGB, filter 0 (what PNGWriter writes).
    func decode(_ png: [UInt8]) throws -> (width: Int, height: Int, rgb: [UInt8]) {
        XCTAssertEqual(Array(png[0..<8]), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var at = 8, width = 0, height = 0, idat: [UInt8] = [], types: [String] = []
        func be32(_ i: Int) -> Int {
            var v = 0
            for k in 0..<4 { v = v << 8 | Int(png[i + k]) }
            return v
        }
        while at < png.count {
            let length = be32(at)
            let type = String(decoding: png[(at + 4)..<(at + 8)], as: UTF8.self)
            let data = Array(png[(at + 8)..<(at + 8 + length)])
            let crc = Array(png[(at + 4)..<(at + 8 + length)]).withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
            XCTAssertEqual(UInt32(be32(at + 8 + length)), crc, "CRC of \(type)")
            types.append(type)
            if type == "IHDR" { width = be32(at + 8); height = be32(at + 12); XCTAssertEqual(Array(data[8...]), [8, 2, 0, 0, 0]) }
            if type == "IDAT" { idat += data }
            at += 12 + length
        }
        XCTAssertEqual(types, ["IHDR", "IDAT", "IEND"])
        var rawSize = uLong(height * (width * 3 + 1))
        var raw = [UInt8](repeating: 0, count: Int(rawSize))
        XCTAssertEqual(uncompress(&raw, &rawSize, idat, uLong(idat.count)), Z_OK)
        var rgb: [UInt8] = []
        let stride = width * 3 + 1
        for y in 0..<height {
            let start: Int = y * stride
            XCTAssertEqual(raw[start], 0, "filter byte of row \(y)")
            rgb.append(contentsOf: raw[(start + 1)..<(start + stride)])
        }
        return (width, height, rgb)
    }

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
