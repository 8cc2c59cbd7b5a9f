import CascadeSeg
import Foundation

/// `cascadeseg bench kernels`: throughput of the convolution kernels against the device's
/// measured FMA peak. Numbers, never assertions: benchmarks are not tests.
enum BenchCommand {
    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["device", "kb", "xv", "xn", "tx", "cc", "repeat", "base", "size", "save", "input", "only",
                                                "memory-budget", "reference", "labels", "json", "single-stage-model"],
                                 flags: ["quick", "profile", "skip-single-stage"])
        switch args.positionals.first {
        case "kernels" where args.positionals.count == 1: try kernels(args)
        case "unet" where args.positionals.count == 1: try unet(args)
        case "cascade": try BenchCascade.run(args)
        default: throw CascadeSegError.usage("usage: cascadeseg bench kernels [--device D] [--quick] | bench unet [--base 32] [--size D[xHxW] | --input X.nii.gz|X.npy] [--memory-budget BYTES] [--profile] [--save FILE.cseg] | " + BenchCascade.usage.dropFirst("usage: cascadeseg ".count))
        }
    }

    /// The device's tuning with any `--kb --xv --xn --tx --cc` overrides (for experiments).
    static func tuningOverrides(_ args: Arguments, device: ComputeDevice) throws -> DeviceTuning {
        var tuning = DeviceTuning.preferred(for: device)
        tuning.convKB = try args.int("kb", default: tuning.convKB)
        tuning.convXV = try args.int("xv", default: tuning.convXV)
        tuning.convXN = try args.int("xn", default: tuning.convXN)
        tuning.convTileBlocks = try args.int("tx", default: tuning.convTileBlocks)
        tuning.convChannelChunk = try args.int("cc", default: tuning.convChannelChunk)
        return tuning
    }

    /// Parses `128` or `160x192x160`.
    static func parseSize(_ text: String) throws -> [Int] {
        let parts = text.split(separator: "x").compactMap { Int($0) }
        guard (parts.count == 1 || parts.count == 3), parts.allSatisfy({ $0 > 0 }) else {
            throw CascadeSegError.usage("--size must be N or DxHxW, got '\(text)'")
        }
        return parts.count == 1 ? [parts[0], parts[0], parts[0]] : parts
    }

    /// A whole nnU-Net-like U-Net with random weights: time and peak device memory.
    static func unet(_ args: Arguments) throws {
        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        let config = UNetBuilder.Configuration(base: try args.int("base", default: 32))
        let (graph, weights) = UNetBuilder.plainConvUNet(config)
        if let path = args["save"] {
            let model = ModelFile(metadata: ModelMetadata(name: "unet-random", description: "nnU-Net-like PlainConvUNet with random weights",
                                                          labels: [ModelMetadata.Label(id: 0, name: "background")],
                                                          input: .init(channels: 1, normalization: .none),
                                                          stages: [.init(graph: graph.name, spacingMM: [1, 1, 1])]),
                                  graphs: [graph], weights: weights)
            try model.write(to: path)
        }
        let x: Tensor
        let inputDescription: String
        if let path = args["input"] {
            (x, inputDescription) = try VolumeInput.load(path, multiple: graph.sizeMultiple)
        } else {
            let size = try parseSize(args["size"] ?? "128")
            var rng = SplitMixRandom(seed: 5)
            x = Tensor(shape: [1, 1] + size, data: (0..<size.reduce(1, *)).map { _ in rng.nextSigned() })
            inputDescription = "random \(size.map(String.init).joined(separator: "x"))"
        }
        let budget = try args.bytes("memory-budget")
        let network = try Network(graph: graph, weights: weights, context: context, tuning: try tuningOverrides(args, device: device),
                                  residentWeights: budget == nil)
        print("device: \(device.name)")
        print("network: nnU-Net-like 3D U-Net, features \(config.features), \(network.parameterCount) parameters (random weights)")
        print("input: \(inputDescription)")
        _ = try network.run(x, memoryBudget: budget)  // warm-up: kernel compilation
        var times: [Double] = []
        var last: RunResult? = nil
        for _ in 0..<max(try args.int("repeat", default: 3), 1) {
            let r = try network.run(x, memoryBudget: budget, profile: args.has("profile"))
            times.append(r.seconds)
            last = r
        }
        times.sort()
        print(String(format: "forward: median %.3f s (min %.3f s) over %d runs; peak device memory %.1f MiB (weights %.1f MiB, planned %.1f MiB), %d tile(s) at most per node",
                     times[times.count / 2], times[0], times.count, Double(last!.peakDeviceBytes) / 1048576,
                     Double(network.weightBytes) / 1048576, Double(last!.plannedPeakBytes) / 1048576, last!.tiles))
        if args.has("profile"), let r = last {
            var byOp: [OpType: (Int, Double)] = [:]
            for e in r.profile { byOp[e.op, default: (0, 0)].0 += 1; byOp[e.op, default: (0, 0)].1 += e.seconds }
            for (op, (n, s)) in byOp.sorted(by: { $0.value.1 > $1.value.1 }) {
                print(String(format: "  %-22@ %4d nodes %9.4f s", op.rawValue, n, s))
            }
            print("slowest nodes:")
            for e in r.profile.sorted(by: { $0.seconds > $1.seconds }).prefix(12) {
                print(String(format: "  %-28@ %-22@ %9.4f s", e.node, e.op.rawValue, e.seconds))
            }
        }
    }

    static func kernels(_ args: Arguments) throws {
        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        let tuning = try tuningOverrides(args, device: device)
        let repeats = try args.int("repeat", default: 3)
        let peak = try DevicePeak.measureGFLOPS(context: context, vectorWidth: tuning.convXV)
        print("device: \(device.name) (\(device.type), \(device.computeUnits) compute units)")
        print("tuning: \(tuning)")
        print(String(format: "measured FMA peak: %.1f GFLOP/s", peak))
        print("| case | shape | ms | GFLOP/s | of peak |")
        print("|---|---|---:|---:|---:|")
        let quick = args.has("quick")
        let cases: [ConvBenchCase] = [
            .init(name: "conv 3x3x3 16->16", c: 16, k: 16, size: 64, kernel: 3, stride: 1),
            .init(name: "conv 3x3x3 32->32", c: 32, k: 32, size: 64, kernel: 3, stride: 1),
        ] + (quick ? [] : [
            .init(name: "conv 3x3x3 16->16", c: 16, k: 16, size: 128, kernel: 3, stride: 1),
            .init(name: "conv 3x3x3 32->32", c: 32, k: 32, size: 128, kernel: 3, stride: 1),
            .init(name: "conv 3x3x3 64->32 (U-Net decoder)", c: 64, k: 32, size: 128, kernel: 3, stride: 1),
        ]) + [
            .init(name: "conv 1x1x1 head 32->4", c: 32, k: 4, size: 128, kernel: 1, stride: 1),
            .init(name: "conv 3x3x3 stride 2 32->64", c: 32, k: 64, size: 128, kernel: 3, stride: 2),
            .init(name: "conv transpose 2x2x2 s2 64->32", c: 64, k: 32, size: 64, kernel: 2, stride: 2, transposed: true),
        ]
        for bench in cases where args["only"].map({ bench.name.contains($0) }) ?? true {
            let (seconds, flops) = try bench.measure(context: context, tuning: tuning, repeats: repeats)
            let gflops = flops / seconds / 1e9
            print(String(format: "| %@ | %d^3 | %.1f | %.1f | %.0f%% |", bench.name, bench.size, seconds * 1000, gflops, 100 * gflops / peak))
        }
    }
}

/// One convolution timed alone on the device (best of several runs, after a warm-up).
struct ConvBenchCase {
    var name: String
    var c: Int, k: Int, size: Int, kernel: Int, stride: Int
    var transposed = false

    func measure(context: ComputeContext, tuning: DeviceTuning, repeats: Int) throws -> (seconds: Double, flops: Double) {
        var rng = SplitMixRandom(seed: 42)
        let wShape = transposed ? [c, k, kernel, kernel, kernel] : [k, c, kernel, kernel, kernel]
        let weights: [String: Tensor] = [
            "w": Tensor(shape: wShape, data: (0..<wShape.reduce(1, *)).map { _ in rng.nextSigned() * 0.1 }),
            "b": Tensor(shape: [k], data: (0..<k).map { _ in rng.nextSigned() }),
        ]
        let pad = transposed || kernel == 1 ? 0 : kernel / 2
        let node = Node(name: name, op: transposed ? .convTranspose : .conv, inputs: ["x", "w", "b"], outputs: ["y"],
                        attributes: ["strides": .ints([stride, stride, stride]), "pads": .ints(Array(repeating: pad, count: 6))])
        let graph = Graph(name: name, inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(c), .symbol("D"), .symbol("H"), .symbol("W")])],
                          outputs: [ValueInfo(name: "y", shape: [])], nodes: [node])
        let network = try Network(graph: graph, weights: weights, context: context, tuning: tuning)
        let x = Tensor(shape: [1, c, size, size, size], data: (0..<(c * size * size * size)).map { _ in rng.nextSigned() })
        var best = Double.infinity
        var outVoxels = 0
        for _ in 0..<(repeats + 1) {
            let result = try network.run(x, profile: true)
            best = min(best, result.profile[0].seconds)
            outVoxels = result.outputs["y"]!.count / k
        }
        let macsPerOutput = Double(c * kernel * kernel * kernel) / (transposed ? Double(stride * stride * stride) : 1)
        return (best, 2 * Double(outVoxels * k) * macsPerOutput)
    }
}

