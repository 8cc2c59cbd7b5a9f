/// Byte-plane shuffle: plane j holds byte j of every element. It groups the similar exponent
/// bytes of neighbouring floats, so zstd compresses weights further.
enum ByteShuffle {
    static func shuffle(_ bytes: [UInt8], elementSize: Int) -> [UInt8] {
        let n = bytes.count / elementSize
        var out = [UInt8](repeating: 0, count: bytes.count)
        bytes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<n {
                    for j in 0..<elementSize { dst[j * n + i] = src[i * elementSize + j] }
                }
            }
        }
        return out
    }

    static func unshuffle(_ planes: [UInt8], elementSize: Int) -> [UInt8] {
        let n = planes.count / elementSize
        var out = [UInt8](repeating: 0, count: planes.count)
        planes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for j in 0..<elementSize {
                    for i in 0..<n { dst[i * elementSize + j] = src[j * n + i] }
                }
            }
        }
        return out
    }
}
