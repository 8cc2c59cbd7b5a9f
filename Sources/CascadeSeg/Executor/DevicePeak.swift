import Foundation

/// Measures a device's float32 FMA throughput, the reference for "fraction of peak" figures.
public enum DevicePeak {
    /// Best of a few runs, in GFLOP/s (one FMA counts as two operations).
    public static func measureGFLOPS(context: ComputeContext, vectorWidth: Int) throws -> Double {
        let chains = 12, iterations = 400_000
        let items = max(context.device.computeUnits, 1) * (context.device.isCPU ? 16 : 4096)
        let program = try context.program("peak.cl", defines: ["XV": "\(vectorWidth)", "CHAINS": "\(chains)"])
        let out = try context.allocate(bytes: items * 4, label: "peak measurement")
        var best = 0.0
        for _ in 0..<6 {
            let start = DispatchTime.now()
            try context.launch(program, "fma_peak", global: [items], local: [1],
                               [.buffer(out), .int(Int32(iterations)), .float(0.999), .float(0.001)])
            try context.finish()
            let seconds = start.secondsElapsed
            best = max(best, Double(items * chains * vectorWidth * iterations * 2) / seconds / 1e9)
        }
        return best
    }
}
