import Foundation

/// Writes files so that a reader never sees a partial one: the bytes go to a temporary file in
/// the same folder, are flushed, and the temporary file is renamed over the destination.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let temporary = folder + "/." + url.lastPathComponent + ".partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw CascadeSegError.io("cannot create '\(temporary)': \(String(cString: strerror(errno)))") }
        var failure: String? = nil
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = String(cString: strerror(errno)); return
                }
                offset += n
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if let failure {
            unlink(temporary)
            throw CascadeSegError.io("writing '\(path)' failed: \(failure)")
        }
        guard rename(temporary, path) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temporary)
            throw CascadeSegError.io("cannot move the finished file to '\(path)': \(message)")
        }
    }

    /// Reads a whole file, refusing ones larger than `limit` bytes.
    public static func read(_ path: String, limit: Int = 1 << 34) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CascadeSegError.io("cannot open '\(path)': \(FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")")
        }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        guard size <= UInt64(limit) else { throw CascadeSegError.io("'\(path)' is larger than \(limit) bytes") }
        try handle.seek(toOffset: 0)
        let data = try handle.readToEnd() ?? Data()
        return [UInt8](data)
    }
}
