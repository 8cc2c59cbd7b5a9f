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
}
