import PackagePlugin
import Foundation

/// Embeds every OpenCL C source in the package's top-level `Kernels/` folder into the
/// target as a generated Swift file, so a built binary needs no resource folder beside it.
@main
struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let kernelsDir = context.package.directoryURL.appendingPathComponent("Kernels")
        let sources = try FileManager.default.contentsOfDirectory(atPath: kernelsDir.path)
            .filter { $0.hasSuffix(".cl") || $0.hasSuffix(".h") }
            .sorted()
            .map { kernelsDir.appendingPathComponent($0) }
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("EmbeddedKernels.swift")
        return [.buildCommand(
            displayName: "Embedding \(sources.count) OpenCL kernel sources",
            executable: try context.tool(named: "KernelEmbedder").url,
            arguments: [output.path] + sources.map(\.path),
            inputFiles: sources,
            outputFiles: [output])]
    }
}
