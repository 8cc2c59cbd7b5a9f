import CascadeSeg
import Foundation

/// `cascadeseg bench kernels`: throughput of the convolution kernels against the device's
/// measured FMA peak. Numbers, never assertions: benchmarks are not tests.
enum BenchCommand {
    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["device", "kb", "xv", "xn", "repeat"], flags: ["quick"])
        guard args.positionals == ["kernels"] else { throw CascadeSegError.usage("usage: cascadeseg bench kernels [--device D] [--quick]") }
        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        var tuning = DeviceTuning.preferred(for: device)
        tuning.convKB = try args.int("kb", default: tuning.convKB)
        tuning.convXV = try args.int("xv", default: tuning.convXV)
        tuning.convXN = try args.int("xn", default: tuning.convXN)
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
        ]) + [
            .init(name: "conv 1x1x1 head 32->4", c: 32, k: 4, size: 128, kernel: 1, stride: 1),
            .init(name: "conv 3x3x3 stride 2 32->64", c: 32, k: 64, size: 128, kernel: 3, stride: 2),
            .init(name: "conv transpose 2x2x2 s2 64->32", c: 64, k: 32, size: 64, kernel: 2, stride: 2, transposed: true),
        ]
        for bench in cases {
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

