import Foundation

/// Reads the bytes of a tensor stored outside the .onnx file (`data_location: EXTERNAL`).
///
/// The location comes from an untrusted file, so it must name a file inside the model's
/// folder: absolute paths, `..` components and symbolic links that resolve outside the folder
/// are refused (the path-traversal holes of onnx's own loader, CVE-2022-25882 and
/// CVE-2024-27318). The offset and length are checked against the file's size before reading.
public enum OnnxExternalData {
    static func fail(_ tensor: String, _ message: String) -> CascadeSegError {
        .invalidModel("ONNX tensor '\(tensor)': external data \(message)")
    }

    /// Checks a location string and returns the resolved path of the file it names inside
    /// `baseDirectory`.
    public static func resolve(location: String, tensor: String, baseDirectory: String) throws -> String {
        guard !location.isEmpty else { throw fail(tensor, "has no location") }
        guard !location.utf8.contains(0) else { throw fail(tensor, "location contains a NUL byte") }
        guard !location.hasPrefix("/"), !location.hasPrefix("~") else {
            throw fail(tensor, "location '\(location)' is an absolute path; only paths inside the model's folder are allowed")
        }
        guard !location.contains("\\"), !(location.count >= 2 && location.dropFirst().first == ":") else {
            throw fail(tensor, "location '\(location)' must be a relative path with '/' separators")
        }
        let components = location.split(separator: "/", omittingEmptySubsequences: true)
        guard !components.contains("..") else {
            throw fail(tensor, "location '\(location)' contains '..'; only paths inside the model's folder are allowed")
        }
        guard let base = realPath(baseDirectory) else {
            throw CascadeSegError.io("cannot resolve the model's folder '\(baseDirectory)'")
        }
        let joined = base + "/" + components.joined(separator: "/")
        guard let resolved = realPath(joined) else {
            throw fail(tensor, "file '\(location)' does not exist in '\(baseDirectory)'")
        }
        let prefix = base.hasSuffix("/") ? base : base + "/"
        guard resolved.hasPrefix(prefix) else {
            throw fail(tensor, "location '\(location)' resolves (through a symbolic link) to '\(resolved)', outside the model's folder")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw fail(tensor, "location '\(location)' is not a regular file")
        }
        return resolved
    }

    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    static func parseSize(_ text: String, key: String, tensor: String) throws -> UInt64 {
        guard !text.isEmpty, text.count <= 20, text.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt64(text) else {
            throw fail(tensor, "\(key) '\(text)' is not a non-negative integer")
        }
        return v
    }

    /// The `expectedBytes` bytes the entries point at.
    static func read(entries: [(key: String, value: String)], tensor: String, expectedBytes: Int,
                     baseDirectory: String?) throws -> [UInt8] {
        var location: String?
        var offset: UInt64 = 0
        var length: UInt64?
        for (key, value) in entries {
            switch key {
            case "location": location = value
            case "offset": offset = try parseSize(value, key: "offset", tensor: tensor)
            case "length": length = try parseSize(value, key: "length", tensor: tensor)
            default: break  // "checksum" and unknown keys
            }
        }
        guard let location else { throw fail(tensor, "has no location") }
        guard let baseDirectory else {
            throw fail(tensor, "'\(location)' cannot be read: the model was not loaded from a file, so it has no folder")
        }
        let path = try resolve(location: location, tensor: tensor, baseDirectory: baseDirectory)
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CascadeSegError.io("cannot open '\(path)'") }
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        guard offset <= size else { throw fail(tensor, "offset \(offset) lies past the end of '\(location)' (\(size) bytes)") }
        let available = size - offset
        let count = length ?? available
        guard count <= available else {
            throw fail(tensor, "range \(offset)+\(count) runs past the end of '\(location)' (\(size) bytes)")
        }
        guard count == UInt64(expectedBytes) else {
            throw fail(tensor, "has \(count) bytes in '\(location)', the tensor's shape needs \(expectedBytes)")
        }
        try handle.seek(toOffset: offset)
        let data = try handle.read(upToCount: expectedBytes) ?? Data()
        guard data.count == expectedBytes else { throw CascadeSegError.io("short read from '\(path)'") }
        return [UInt8](data)
    }
}
