import CZlib
import Foundation

/// Reads a file as a byte stream, decompressing it when it is gzip (by its magic bytes), and
/// tells a complete gzip stream from one that was cut short. zlib's `gzread` does not: when only
/// the stream's 8-byte trailer (CRC and length) is missing it reports a clean end of file.
final class InflatingReader {
    let path: String
    /// Whether the file starts with the gzip magic 1f 8b.
    let isCompressed: Bool
    private let fd: Int32
    private var stream = z_stream()
    private let input: UnsafeMutableRawBufferPointer
    /// Whether the current gzip member has ended (its trailer checked by zlib).
    private var memberEnded = false

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CascadeSegError.io("cannot open '\(path)': \(String(cString: strerror(errno)))") }
        var magic: (UInt8, UInt8) = (0, 0)
        isCompressed = pread(fd, &magic, 2, 0) == 2 && magic == (0x1F, 0x8B)
        input = UnsafeMutableRawBufferPointer.allocate(byteCount: isCompressed ? 1 << 20 : 0, alignment: 16)
        // 15 + 16: a gzip wrapper, whose CRC-32 and length zlib checks at the end of each member.
        if isCompressed, inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) != Z_OK {
            close(fd)
            input.deallocate()
            throw CascadeSegError.io("cannot start decompressing '\(path)': \(stream.msg.map { String(cString: $0) } ?? "zlib failed")")
        }
    }

    deinit {
        if isCompressed { inflateEnd(&stream) }
        close(fd)
        input.deallocate()
    }

    /// Fills `buffer` unless the data ends first; returns how many bytes it filled.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        guard isCompressed else { return try readPlain(into: buffer) }
        stream.next_out = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = UInt32(buffer.count)
        while stream.avail_out > 0 {
            if stream.avail_in == 0 {
                try refill()
                if stream.avail_in == 0 { break }   // end of file
            }
            if memberEnded {
                // Another gzip member may follow (concatenated gzip files are one stream);
                // anything else after a complete member is ignored, as gzip does.
                guard stream.next_in[0] == 0x1F else { break }
                inflateReset(&stream)
                memberEnded = false
            }
            switch inflate(&stream, Z_NO_FLUSH) {
            case Z_OK: continue
            case Z_BUF_ERROR where stream.avail_in == 0: continue   // needs more input
            case Z_BUF_ERROR:
                throw CascadeSegError.invalidInput("'\(path)' is corrupt: zlib could make no progress decompressing it")
            case Z_STREAM_END: memberEnded = true
            default:
                throw CascadeSegError.invalidInput("'\(path)' is corrupt: \(stream.msg.map { String(cString: $0) } ?? "invalid compressed data")")
            }
        }
        return buffer.count - Int(stream.avail_out)
    }

    /// Reads and discards `count` bytes; returns how many there were.
    func skip(_ count: Int) throws -> Int {
        if !isCompressed {
            let here = lseek(fd, 0, SEEK_CUR), end = lseek(fd, 0, SEEK_END)
            let skipped = max(0, min(Int(end - here), count))
            lseek(fd, here + off_t(skipped), SEEK_SET)
            return skipped
        }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: min(max(count, 1), 1 << 16), alignment: 16)
        defer { scratch.deallocate() }
        var done = 0
        while done < count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<min(scratch.count, count - done)]))
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads on to the end of the file; for gzip, throws unless the last member ended with a
    /// trailer that zlib checked. Trailing bytes after the data are allowed.
    func finish() throws {
        guard isCompressed else { return }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { scratch.deallocate() }
        while try read(into: scratch) > 0 {}
        guard memberEnded else {
            throw CascadeSegError.invalidInput("'\(path)' is truncated: its gzip stream ends before its checksum")
        }
    }

    private func refill() throws {
        var n: Int
        repeat { n = Foundation.read(fd, input.baseAddress!, input.count) } while n < 0 && errno == EINTR
        guard n >= 0 else { throw CascadeSegError.io("reading '\(path)' failed: \(String(cString: strerror(errno)))") }
        stream.next_in = input.baseAddress!.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = UInt32(n)
    }

    private func readPlain(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = Foundation.read(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CascadeSegError.io("reading '\(path)' failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
