import CascadeSeg
import Foundation

/// `cascadeseg run`: one network of a model on one .npy tensor.
enum RunCommand {
    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["input", "output", "stage", "device", "memory-budget"], flags: ["profile"])
        guard args.positionals.count == 1 else {
            throw CascadeSegError.usage("usage: cascadeseg run MODEL.cseg --input X.npy --output Y.npy [--stage 1|2] [--memory-budget BYTES] [--device D] [--profile]")
        }
        let inputPath = try args.require("input"), outputPath = try args.require("output")
        guard URL(fileURLWithPath: inputPath).standardized.path != URL(fileURLWithPath: outputPath).standardized.path else {
            throw CascadeSegError.usage("--output must differ from --input (inputs are never overwritten)")
        }
        let model = try ModelFile(contentsOf: args.positionals[0])
        let graph = try model.stageGraph(try args.int("stage", default: 1))
        let input = try VolumeInput.load(inputPath, multiple: graph.sizeMultiple).tensor
        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        let budget = try args.bytes("memory-budget")
        let network = try Network(model: model, stage: try args.int("stage", default: 1), context: context, residentWeights: budget == nil)
        let result = try network.run(input, memoryBudget: budget, profile: args.has("profile"))
        let output = result.outputs[network.graph.outputs[0].name]!
        try NpyFile.write(output, to: outputPath)
        standardError(String(format: "%@: %@ -> %@ in %.3f s, peak device memory %.1f MiB (weights %.1f MiB), %d tile(s) at most per node",
                             device.name, "\(input.shape)", "\(output.shape)", result.seconds,
                             Double(result.peakDeviceBytes) / 1048576, Double(network.weightBytes) / 1048576, result.tiles))
        if args.has("profile") {
            var byOp: [OpType: (Int, Double)] = [:]
            for entry in result.profile { byOp[entry.op, default: (0, 0)].0 += 1; byOp[entry.op, default: (0, 0)].1 += entry.seconds }
            standardError("per-op time (each op waits for the device):")
            for (op, (n, s)) in byOp.sorted(by: { $0.value.1 > $1.value.1 }) {
                standardError(String(format: "  %-22@ %4d nodes %9.4f s", op.rawValue, n, s))
            }
            standardError("slowest nodes:")
            for entry in result.profile.sorted(by: { $0.seconds > $1.seconds }).prefix(10) {
                standardError(String(format: "  %-40@ %-20@ %9.4f s", entry.node, entry.op.rawValue, entry.seconds))
            }
        }
    }
}
