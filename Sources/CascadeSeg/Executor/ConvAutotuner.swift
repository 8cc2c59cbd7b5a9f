import Foundation

/// A short search over the convolution kernel's block sizes for one device, timed on a
/// representative 3x3x3 convolution. The winner is cached per device in
/// `~/.cache/cascadeseg/` (or `$CASCADESEG_CACHE_DIR`) and used by every later `Network`.
public enum ConvAutotuner {
    public struct Trial: Sendable {
        public var tuning: DeviceTuning
        public var seconds: Double
    }

    static var cacheDirectory: URL {
        if let dir = ProcessInfo.processInfo.environment["CASCADESEG_CACHE_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        let home = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"].map { URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return home.appendingPathComponent("cascadeseg")
    }

    static func cacheFile(for device: ComputeDevice) -> URL {
        let key = "\(device.platformName)-\(device.name)-\(device.openCLCVersion)-cu\(device.computeUnits)"
            .map { $0.isLetter || $0.isNumber ? $0 : "_" }
        return cacheDirectory.appendingPathComponent("tuning-v2-\(String(key)).json")
    }

    /// The cached tuning of `device`, if a valid one exists.
    public static func cached(for device: ComputeDevice) -> DeviceTuning? {
        guard let data = try? Data(contentsOf: cacheFile(for: device)),
              let tuning = try? JSONDecoder().decode(DeviceTuning.self, from: data), tuning.isValid else { return nil }
        return tuning
    }

    /// Candidate block sizes around the device defaults.
    static func candidates(for device: ComputeDevice) -> [DeviceTuning] {
        let base = DeviceTuning.defaults(for: device)
        var out: [DeviceTuning] = []
        let widths = device.isCPU ? [base.convXV] : [4, 8]
        let blocks = device.isCPU ? [(4, 2), (8, 1), (6, 2)] : [(4, 1), (8, 1), (4, 2)]
        let tiles = device.isCPU ? [(8, 8), (1, 1 << 20), (4, 16), (16, 4)] : [(1, 1 << 20)]
        let locals = device.isCPU ? [[1, 1, 1]] : [[8, 8, 1], [16, 4, 1], [32, 2, 1]]
        for xv in widths {
            for (kb, xn) in blocks {
                for (tx, cc) in tiles {
                    for local in locals {
                        var t = base
                        t.convXV = xv; t.convKB = kb; t.convXN = xn; t.convLocal = local
                        t.convTileBlocks = tx; t.convChannelChunk = cc
                        out.append(t)
                    }
                }
            }
        }
        if !out.contains(base) { out.insert(base, at: 0) }
        return out
    }

    /// Times every candidate (best of `repeats` after a warm-up) and caches the fastest.
    /// Returns the trials, fastest first; the defaults are always among them.
    public static func tune(context: ComputeContext, size: Int = 64, channels: Int = 64, repeats: Int = 2,
                            log: (String) -> Void = { _ in }) throws -> [Trial] {
        var rng = SplitMixRandom(seed: 7)
        let weights: [String: Tensor] = [
            "w": Tensor(shape: [channels / 2, channels, 3, 3, 3], data: (0..<(channels / 2 * channels * 27)).map { _ in rng.nextSigned() * 0.1 }),
            "b": Tensor(shape: [channels / 2], data: (0..<channels / 2).map { _ in rng.nextSigned() }),
        ]
        let graph = Graph(name: "tune", inputs: [ValueInfo(name: "x", shape: [.fixed(1), .fixed(channels), .symbol("D"), .symbol("H"), .symbol("W")])],
                          outputs: [ValueInfo(name: "y", shape: [])],
                          nodes: [Node(name: "conv", op: .conv, inputs: ["x", "w", "b"], outputs: ["y"],
                                       attributes: ["pads": .ints([1, 1, 1, 1, 1, 1])])])
        let x = Tensor(shape: [1, channels, size, size, size], data: (0..<(channels * size * size * size)).map { _ in rng.nextSigned() })
        var trials: [Trial] = []
        for candidate in candidates(for: context.device) {
            do {
                let network = try Network(graph: graph, weights: weights, context: context, tuning: candidate)
                var best = Double.infinity
                for _ in 0..<(repeats + 1) { best = min(best, try network.run(x, profile: true).profile[0].seconds) }
                trials.append(Trial(tuning: candidate, seconds: best))
                log(String(format: "  %@: %.2f ms", "\(candidate)", best * 1000))
            } catch {
                log("  KB=\(candidate.convKB) XV=\(candidate.convXV) XN=\(candidate.convXN) local=\(candidate.convLocal): failed (\(error))")
            }
        }
        trials.sort { $0.seconds < $1.seconds }
        guard let winner = trials.first else { throw CascadeSegError.invalidGraph("no convolution configuration ran on \(context.device.name)") }
        let file = cacheFile(for: context.device)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write([UInt8](try encoder.encode(winner.tuning)), to: file.path)
        return trials
    }
}

/// A small deterministic generator (SplitMix64) for benchmark and tuning data.
public struct SplitMixRandom: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    public mutating func nextSigned() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
}
