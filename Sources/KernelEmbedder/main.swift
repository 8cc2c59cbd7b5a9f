// Writes a Swift file holding each kernel source as a string literal, keyed by file name.
// Usage: KernelEmbedder OUTPUT.swift KERNEL.cl...
import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write("usage: KernelEmbedder OUTPUT.swift KERNEL.cl...\n".data(using: .utf8)!)
    exit(2)
}
var swift = "// Generated from Kernels/ at build time. Do not edit.\n"
swift += "enum EmbeddedKernels {\n    static let sources: [String: String] = [\n"
for path in arguments.dropFirst(2) {
    let name = URL(fileURLWithPath: path).lastPathComponent
    let text = try String(contentsOfFile: path, encoding: .utf8)
    // A raw string with a delimiter longer than any run of '#' in the text is always safe.
    var hashes = "#"
    while text.contains("\"" + hashes) { hashes += "#" }
    swift += "        \"\(name)\": \(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes),\n"
}
swift += "    ]\n}\n"
try swift.write(toFile: arguments[1], atomically: true, encoding: .utf8)
