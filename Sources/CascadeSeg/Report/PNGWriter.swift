import CZlib

/// Encodes 8-bit RGB images as PNG (signature, IHDR, one zlib IDAT, IEND; every scanline with
/// filter 0), enough for overlays without an image library.
public enum PNGWriter {
    public static func encode(rgb: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        guard width > 0, height > 0, width <= 1 << 16, height <= 1 << 16, rgb.count == width * height * 3 else {
            throw CascadeSegError.invalidInput("PNG of \(width)x\(height) needs \(width * height * 3) RGB bytes, got \(rgb.count)")
        }
        var raw = [UInt8]()
        raw.reserveCapacity(height * (width * 3 + 1))
        for y in 0..<height {
            raw.append(0)
            raw.append(contentsOf: rgb[(y * width * 3)..<((y + 1) * width * 3)])
        }
        var compressedSize = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
        let status = compress2(&compressed, &compressedSize, raw, uLong(raw.count), 6)
        guard status == Z_OK else { throw CascadeSegError.io("zlib could not compress the PNG image data (status \(status))") }
        compressed.removeSubrange(Int(compressedSize)...)

        func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            let crc = body.withUnsafeBytes { CRC32.checksum($0) }
            return be32(data.count) + body + be32(Int(crc))
        }
        let header = be32(width) + be32(height) + [8, 2, 0, 0, 0]  // 8-bit, truecolour, deflate, filter 0, no interlace
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", compressed) + chunk("IEND", [])
    }
}
