import CZstd

/// One-frame zstd compression with the strict checks the model reader needs.
enum ZstdCodec {
    static func compress(_ bytes: [UInt8], level: Int32) throws -> [UInt8] {
        let bound = ZSTD_compressBound(bytes.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                ZSTD_compress(dst.baseAddress, bound, src.baseAddress, src.count, level)
            }
        }
        guard ZSTD_isError(written) == 0 else {
            throw CascadeSegError.io("zstd compression failed: \(String(cString: ZSTD_getErrorName(written)))")
        }
        out.removeSubrange(written...)
        return out
    }

    /// Decompresses exactly one frame that must declare, and produce, `expectedSize` bytes.
    /// `what` names the tensor in errors.
    static func decompress(_ frame: ArraySlice<UInt8>, expectedSize: Int, what: String) throws -> [UInt8] {
        try frame.withUnsafeBytes { src -> [UInt8] in
            // Skippable frames (other magic numbers) hold no content and are not allowed.
            guard src.count >= 4, src.loadUnaligned(as: UInt32.self).littleEndian == 0xFD2F_B528 else {
                throw CascadeSegError.invalidModel("tensor '\(what)': stored bytes are not a zstd frame (bad or skippable-frame magic)")
            }
            let declared = ZSTD_getFrameContentSize(src.baseAddress, src.count)
            // ZSTD_CONTENTSIZE_UNKNOWN and _ERROR are the two largest UInt64 values.
            guard declared != UInt64.max, declared != UInt64.max - 1 else {
                throw CascadeSegError.invalidModel("tensor '\(what)': stored bytes are not a zstd frame with a declared size")
            }
            guard declared == UInt64(expectedSize) else {
                throw CascadeSegError.invalidModel("tensor '\(what)': zstd frame declares \(declared) bytes, the table says \(expectedSize)")
            }
            let frameSize = ZSTD_findFrameCompressedSize(src.baseAddress, src.count)
            guard ZSTD_isError(frameSize) == 0, frameSize == src.count else {
                throw CascadeSegError.invalidModel("tensor '\(what)': stored bytes are not exactly one complete zstd frame")
            }
            // A frame header may declare any size: bound what its blocks can produce before
            // allocating, so that a few stored bytes cannot make the reader commit gigabytes.
            guard let bound = outputBound(src), bound >= UInt64(expectedSize) else {
                throw CascadeSegError.invalidModel("tensor '\(what)': zstd frame's blocks cannot produce the declared \(expectedSize) bytes")
            }
            var out = [UInt8](repeating: 0, count: expectedSize)
            let produced = out.withUnsafeMutableBytes { dst in
                ZSTD_decompress(dst.baseAddress, expectedSize, src.baseAddress, src.count)
            }
            guard ZSTD_isError(produced) == 0 else {
                throw CascadeSegError.invalidModel("tensor '\(what)': zstd decompression failed (\(String(cString: ZSTD_getErrorName(produced))))")
            }
            guard produced == expectedSize else {
                throw CascadeSegError.invalidModel("tensor '\(what)': decompressed to \(produced) bytes, expected \(expectedSize)")
            }
            return out
        }
    }

    /// Upper bound of the bytes one complete frame (already checked by
    /// `ZSTD_findFrameCompressedSize`) can decompress to, from its block headers: a raw block
    /// yields its stored size, an RLE block its declared size, a compressed block at most 128 KiB.
    static func outputBound(_ frame: UnsafeRawBufferPointer) -> UInt64? {
        // Frame header (RFC 8878 3.1.1.1): magic (checked by the caller), descriptor, window descriptor unless single
        // segment, dictionary id (0/1/2/4 bytes), content size (0 or 1/2/4/8 bytes).
        guard frame.count >= 5 else { return nil }
        let descriptor = Int(frame[4])
        let singleSegment = descriptor & 0x20 != 0
        var position = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]
            + [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]
        var total: UInt64 = 0
        while position + 3 <= frame.count {
            let header = Int(frame[position]) | Int(frame[position + 1]) << 8 | Int(frame[position + 2]) << 16
            let last = header & 1 != 0, type = (header >> 1) & 3, size = header >> 3
            position += 3
            switch type {
            case 0: total += UInt64(size); position += size       // raw
            case 1: total += UInt64(size); position += 1          // RLE
            case 2: total += 128 << 10; position += size           // compressed
            default: return nil                                    // reserved
            }
            if last { return position <= frame.count ? total : nil }
        }
        return nil
    }
}
