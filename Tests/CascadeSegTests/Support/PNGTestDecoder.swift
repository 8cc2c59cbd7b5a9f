import CZlib
import XCTest

/// Reads back the overlays the tests render (independently of `PNGWriter`).
enum PNGTestDecoder {
    /// Minimal independent PNG reader for 8-bit RGB, filter 0 (what PNGWriter writes).
    static func decode(_ png: [UInt8]) throws -> (width: Int, height: Int, rgb: [UInt8]) {
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
}
