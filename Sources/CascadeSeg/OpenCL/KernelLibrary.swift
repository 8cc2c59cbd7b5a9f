/// The OpenCL C sources from `Kernels/`, embedded at build time. `#include "common.h"` lines are
/// expanded here because a program built from a string has no include path.
enum KernelLibrary {
    static func source(_ file: String) throws -> String {
        guard let text = EmbeddedKernels.sources[file] else {
            throw CascadeSegError.invalidGraph("kernel source '\(file)' is not embedded in this build")
        }
        var expanded = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#include \""), let name = line.split(separator: "\"").dropFirst().first,
               let included = EmbeddedKernels.sources[String(name)] {
                expanded += included + "\n"
            } else {
                expanded += line + "\n"
            }
        }
        return expanded
    }
}
