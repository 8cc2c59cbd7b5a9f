import Foundation

/// NumPy `.npy` files (format versions 1.0-3.0) holding little-endian float32 in C order.
public enum NpyFile {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    public static func read(_ path: String) throws -> Tensor {
        try parse(try AtomicFile.read(path), name: path)
    }

    public static func parse(_ bytes: [UInt8], name: String = "array") throws -> Tensor {
        func fail(_ m: String) -> CascadeSegError { .invalidInput("\(name): \(m)") }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("not a .npy file (bad magic)") }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1: headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }; headerStart = 12
        default: throw fail(".npy format version \(major) is not supported")
        }
        guard headerLength <= 1 << 20, headerStart + headerLength <= bytes.count else { throw fail("truncated header") }
        guard let header = String(bytes: bytes[headerStart..<(headerStart + headerLength)], encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw fail("unreadable header")
        }
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = field("descr"), descr.hasPrefix("'<f4'") || descr.hasPrefix("'float32'") else {
            throw fail("dtype must be little-endian float32 ('<f4'); header says \(field("descr")?.prefix(12) ?? "nothing")")
        }
        guard let order = field("fortran_order"), order.hasPrefix("False") else {
            throw fail("array must be in C order (fortran_order False)")
        }
        guard let shapeText = field("shape"), shapeText.hasPrefix("("), let close = shapeText.firstIndex(of: ")") else {
            throw fail("header has no shape")
        }
        let dims = shapeText[shapeText.index(after: shapeText.startIndex)..<close]
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = try dims.map { d -> Int in
            guard let v = Int(d), v >= 0 else { throw fail("bad dimension '\(d)' in shape") }
            return v
        }
        let dataStart = headerStart + headerLength
        guard let count = checkedElementCount(shape, limit: (bytes.count - dataStart) / 4 + 1), count * 4 == bytes.count - dataStart else {
            throw fail("holds \(bytes.count - dataStart) data bytes, but shape \(shape) needs \(checkedElementCount(shape).map { String($0 * 4) } ?? "too many")")
        }
        var data = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                data[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: dataStart + 4 * i, as: UInt32.self)))
            }
        }
        return Tensor(shape: shape, data: data)
    }

    public static func serialize(_ tensor: Tensor) -> [UInt8] {
        let shape = tensor.shape.count == 1 ? "(\(tensor.shape[0]),)" : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var bytes = magic + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        bytes.reserveCapacity(bytes.count + tensor.count * 4)
        for v in tensor.data { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        return bytes
    }

    public static func write(_ tensor: Tensor, to path: String) throws {
        try AtomicFile.write(serialize(tensor), to: path)
    }
}
