import CZlib

/// CRC-32 (zlib polynomial), as used by the model file for the header, manifest and tensors.
enum CRC32 {
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: uLong = crc32(0, nil, 0)
        var base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        var remaining = bytes.count
        while remaining > 0, let pointer = base {
            let chunk = min(remaining, Int(UInt32.max >> 1))
            crc = crc32(crc, pointer, uInt(chunk))
            base = pointer + chunk
            remaining -= chunk
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
