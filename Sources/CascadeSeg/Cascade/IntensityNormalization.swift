/// The intensity normalization of `metadata.input.normalization` (docs/FORMAT.md), applied to
/// the full-resolution image before it is resampled for stage 1.
///
/// Rules (all statistics in Double; std is the population standard deviation, numpy's default
/// `ddof = 0`, computed in two passes: the mean, then the mean of squared deviations; a std below
/// 1e-8 is replaced by 1e-8, as nnU-Net does, so a constant region maps to 0 and never to NaN):
///
/// - `none`: the voxels are returned unchanged.
/// - `zscore`: `x' = (x - mean) / std` over the foreground. `foreground: "nonzero"` (also the
///   default when the key is absent) uses the voxels `x != 0`, normalizes only those and leaves
///   the zero voxels at 0 (as nnU-Net with `use_mask_for_norm`, except that nnU-Net's mask is the
///   hole-filled nonzero mask of its crop). `foreground: "all"` uses and normalizes every voxel.
///   An image without foreground voxels (all zero under "nonzero") is returned unchanged: all
///   zeros, no NaN. An all-zero image under "all" has mean 0 and std 0, so it stays all zeros.
/// - `ct`: every voxel is clipped to `clip = [lo, hi]`, then `x' = (x - mean) / std` with the
///   model's `mean` and `std` (nnU-Net's CTNormalization). `foreground` is ignored.
/// - `percentile`: `lower` and `upper` are percents in 0...100 (as numpy.percentile, e.g. 0.5 and
///   99.5). Over the foreground voxels (chosen as for zscore: "nonzero" unless the model says
///   "all"), `p_lo` and `p_hi` are the image's percentiles, computed as numpy's default
///   ("linear") method: with `q = p / 100 * (n - 1)`, `k = floor(q)`, `t = q - k` and `a`, `b`
///   the values of ranks `k` and `k + 1` of the sorted foreground, `a + (b - a) * t` (numpy
///   computes `b - (b - a) * (1 - t)` when `t >= 0.5`; so does this). The foreground voxels are
///   clipped to `[p_lo, p_hi]` (rounded to float), then z-scored with the mean and std of the
///   clipped foreground; under "nonzero" the zero voxels stay 0. The ranks are found by an exact
///   radix selection (one pass histogramming the top 16 bits of an order-preserving key, one
///   pass histogramming the low 16 bits within the bins hit), so the step is O(n), no sorting.
///
/// The output is `Float((Double(clip(x)) - mean) * (1 / std))`.
///
/// Every voxel must be finite (NIfTI allows NaN and infinities; replacing them is the caller's
/// decision): a non-finite voxel is refused with `invalidInput` before anything is computed.
/// Invalid or missing parameters are refused with `invalidModel`.
public enum IntensityNormalization {
    /// The smallest standard deviation divided by (nnU-Net's `max(std, 1e-8)`).
    public static let minimumStd = 1e-8

    /// A normalized copy of `volume`.
    public static func apply(_ normalization: ModelMetadata.Normalization, to volume: Volume) throws -> Volume {
        var out = volume
        try apply(normalization, to: &out.voxels)
        return out
    }

    /// Normalizes `voxels` in place (the grid does not matter to any of the schemes).
    public static func apply(_ normalization: ModelMetadata.Normalization, to voxels: inout [Float]) throws {
        func bad(_ m: String) -> CascadeSegError { .invalidModel("normalization '\(normalization.kind)': \(m)") }
        func foregroundIsNonzero(default value: Bool) throws -> Bool {
            switch normalization.foreground {
            case nil: return value
            case "nonzero": return true
            case "all": return false
            case let other?: throw bad("foreground must be \"nonzero\" or \"all\", not \"\(other)\"")
            }
        }
        switch normalization.kind {
        case "none":
            return
        case "zscore":
            let nonzero = try foregroundIsNonzero(default: true)
            try checkFinite(voxels)
            voxels.withUnsafeMutableBufferPointer { v in
                let all = UnsafeBufferPointer(v)
                guard let (mean, std) = moments(all, nonzeroOnly: nonzero, lo: -.infinity, hi: .infinity) else { return }
                affine(v, nonzeroOnly: nonzero, lo: -.infinity, hi: .infinity, mean: mean, std: std)
            }
        case "ct":
            guard let clip = normalization.clip, clip.count == 2, clip[0].isFinite, clip[1].isFinite, clip[0] <= clip[1] else {
                throw bad("clip must be two finite numbers [lo, hi] with lo <= hi")
            }
            guard let mean = normalization.mean, mean.isFinite else { throw bad("mean must be a finite number") }
            guard let std = normalization.std, std.isFinite, std > 0 else { throw bad("std must be a positive finite number") }
            try checkFinite(voxels)
            voxels.withUnsafeMutableBufferPointer { v in
                affine(v, nonzeroOnly: false, lo: Float(clip[0]), hi: Float(clip[1]), mean: mean, std: std)
            }
        case "percentile":
            guard let lower = normalization.lower, let upper = normalization.upper,
                  lower >= 0, upper <= 100, lower <= upper else {
                throw bad("lower and upper must be percents with 0 <= lower <= upper <= 100")
            }
            let nonzero = try foregroundIsNonzero(default: true)
            try checkFinite(voxels)
            voxels.withUnsafeMutableBufferPointer { v in
                let all = UnsafeBufferPointer(v)
                guard let p = percentiles(all, nonzeroOnly: nonzero, [lower, upper]) else { return }
                let lo = Float(p[0]), hi = Float(p[1])
                guard let (mean, std) = moments(all, nonzeroOnly: nonzero, lo: lo, hi: hi) else { return }
                affine(v, nonzeroOnly: nonzero, lo: lo, hi: hi, mean: mean, std: std)
            }
        default:
            throw CascadeSegError.invalidModel("unknown normalization '\(normalization.kind)'")
        }
    }

    /// The `p`-th percentile (p in 0...100) of finite `values`, numpy's "linear" method; NaN when
    /// `values` is empty. Exact: the two ranks are found by radix selection, O(n).
    public static func percentile(_ values: UnsafeBufferPointer<Float>, _ p: Double) -> Double {
        percentiles(values, nonzeroOnly: false, [p])?[0] ?? .nan
    }

    /// The value of rank `rank` (0-based) among finite `values`, as if they were sorted
    /// ascending (-0 before +0).
    public static func orderStatistic(_ values: UnsafeBufferPointer<Float>, rank: Int) -> Float {
        precondition(rank >= 0 && rank < values.count, "rank \(rank) outside 0..<\(values.count)")
        return orderStatistics(values, nonzeroOnly: false, ranks: [rank])[0]
    }

    // MARK: - Internals

    static func checkFinite(_ voxels: [Float]) throws {
        var bad = 0
        voxels.withUnsafeBufferPointer { v in
            for x in v { bad &+= x.bitPattern & 0x7F80_0000 == 0x7F80_0000 ? 1 : 0 }
        }
        if bad > 0 {
            throw CascadeSegError.invalidInput("the image has \(bad) NaN or infinite voxels; replace them before normalizing")
        }
    }

    /// Percentiles (numpy "linear", each `p` in 0...100) of the voxels, or of the nonzero ones;
    /// nil when there are none. numpy's interpolation between the ranks `k = floor(q)` and
    /// `k + 1`, `q = p / 100 * (n - 1)`: `a + (b - a) * t` for `t < 0.5`, `b - (b - a) * (1 - t)`
    /// otherwise.
    static func percentiles(_ v: UnsafeBufferPointer<Float>, nonzeroOnly: Bool, _ ps: [Double]) -> [Double]? {
        var positions = [(k: Int, t: Double)]()
        var unique = [Int]()
        let (n, values) = orderStatistics(v, nonzeroOnly: nonzeroOnly) { n in
            var ranks = Set<Int>()
            for p in ps {
                let q = min(max(p, 0), 100) / 100 * Double(n - 1)
                let k = min(Int(q.rounded(.down)), n - 1)
                positions.append((k, q - Double(k)))
                ranks.insert(k)
                if k + 1 < n { ranks.insert(k + 1) }
            }
            unique = ranks.sorted()
            return unique
        }
        guard n > 0 else { return nil }
        func at(_ rank: Int) -> Double { Double(values[unique.firstIndex(of: rank)!]) }
        return positions.map { k, t in
            let a = at(k)
            guard t > 0, k + 1 < n else { return a }
            let b = at(k + 1), d = b - a
            return t < 0.5 ? a + d * t : b - d * (1 - t)
        }
    }

    static func orderStatistics(_ v: UnsafeBufferPointer<Float>, nonzeroOnly: Bool, ranks: [Int]) -> [Float] {
        orderStatistics(v, nonzeroOnly: nonzeroOnly) { _ in ranks }.values
    }

    /// The values of some ranks among the voxels (or the nonzero ones), as if sorted ascending:
    /// radix selection on an order-preserving 32-bit key, one pass histogramming the top 16 bits,
    /// one pass histogramming the low 16 bits within the bins the ranks fall in. `ranks` is
    /// called with the number of values (not called when there are none); returns that number
    /// and the values of the ranks (in `0 ..< n`), in the order given.
    static func orderStatistics(_ v: UnsafeBufferPointer<Float>, nonzeroOnly: Bool,
                                ranks: (Int) -> [Int]) -> (count: Int, values: [Float]) {
        @inline(__always) func key(_ f: Float) -> UInt32 {
            let b = f.bitPattern
            return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
        }
        var top = [UInt32](repeating: 0, count: 65536)
        top.withUnsafeMutableBufferPointer { h in
            if nonzeroOnly {
                for x in v where x != 0 { h[Int(key(x) >> 16)] &+= 1 }
            } else {
                for x in v { h[Int(key(x) >> 16)] &+= 1 }
            }
        }
        let n = nonzeroOnly ? top.reduce(0) { $0 + Int($1) } : v.count
        guard n > 0 else { return (0, []) }
        // The bin of each rank and its rank within the bin.
        var bins = [Int](), within = [Int]()
        for rank in ranks(n) {
            precondition(rank >= 0 && rank < n, "rank \(rank) outside 0..<\(n)")
            var remaining = rank, bin = 0
            while remaining >= Int(top[bin]) { remaining -= Int(top[bin]); bin += 1 }
            bins.append(bin); within.append(remaining)
        }
        let distinct = Array(Set(bins)).sorted()
        var slotOfBin = [Int8](repeating: -1, count: 65536)
        for (slot, bin) in distinct.enumerated() { slotOfBin[bin] = Int8(slot) }
        var low = [UInt32](repeating: 0, count: 65536 * distinct.count)
        low.withUnsafeMutableBufferPointer { h in
            slotOfBin.withUnsafeBufferPointer { slots in
                for x in v where !nonzeroOnly || x != 0 {
                    let k = key(x)
                    let slot = Int(slots[Int(k >> 16)])
                    if slot >= 0 { h[slot << 16 | Int(k & 0xFFFF)] &+= 1 }
                }
            }
        }
        return (n, zip(bins, within).map { bin, rank in
            let base = Int(slotOfBin[bin]) << 16
            var remaining = rank, l = 0
            while remaining >= Int(low[base + l]) { remaining -= Int(low[base + l]); l += 1 }
            let k = UInt32(bin) << 16 | UInt32(l)
            return Float(bitPattern: k & 0x8000_0000 != 0 ? k & 0x7FFF_FFFF : ~k)
        })
    }

    /// Mean and std (floored at `minimumStd`) of `clip(x, lo, hi)` over the voxels, or over the
    /// nonzero ones; nil when there are none. Two passes, Double sums in four lanes.
    static func moments(_ v: UnsafeBufferPointer<Float>, nonzeroOnly: Bool, lo: Float, hi: Float) -> (mean: Double, std: Double)? {
        let n = v.count
        var count = n
        let mean: Double
        if nonzeroOnly {
            // Sum and count in one pass, four lanes each.
            var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
            var c0 = 0, c1 = 0, c2 = 0, c3 = 0
            var i = 0
            @inline(__always) func term(_ x: Float) -> Double { x != 0 ? Double(min(max(x, lo), hi)) : 0 }
            while i + 4 <= n {
                let a = v[i], b = v[i + 1], c = v[i + 2], d = v[i + 3]
                s0 += term(a); s1 += term(b); s2 += term(c); s3 += term(d)
                c0 &+= a != 0 ? 1 : 0; c1 &+= b != 0 ? 1 : 0; c2 &+= c != 0 ? 1 : 0; c3 &+= d != 0 ? 1 : 0
                i += 4
            }
            while i < n { s0 += term(v[i]); c0 &+= v[i] != 0 ? 1 : 0; i += 1 }
            count = (c0 + c1) + (c2 + c3)
            guard count > 0 else { return nil }
            mean = ((s0 + s1) + (s2 + s3)) / Double(count)
        } else {
            guard count > 0 else { return nil }
            mean = sum(v) { x in Double(min(max(x, lo), hi)) } / Double(count)
        }
        let squares = nonzeroOnly
            ? sum(v) { x in
                let d = x != 0 ? Double(min(max(x, lo), hi)) - mean : 0
                return d * d
            }
            : sum(v) { x in
                let d = Double(min(max(x, lo), hi)) - mean
                return d * d
            }
        return (mean, max((squares / Double(count)).squareRoot(), minimumStd))
    }

    /// The sum of `term` over `v`, in Double, in four lanes.
    @inline(__always) static func sum(_ v: UnsafeBufferPointer<Float>, _ term: (Float) -> Double) -> Double {
        var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
        var i = 0
        let n = v.count
        while i + 4 <= n {
            s0 += term(v[i]); s1 += term(v[i + 1]); s2 += term(v[i + 2]); s3 += term(v[i + 3])
            i += 4
        }
        while i < n { s0 += term(v[i]); i += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    /// `x' = (clip(x, lo, hi) - mean) / std` (as `(.. - mean) * (1 / std)` in Double, rounded to
    /// float) for every voxel, or for the nonzero ones (zeros are kept).
    static func affine(_ v: UnsafeMutableBufferPointer<Float>, nonzeroOnly: Bool, lo: Float, hi: Float,
                       mean: Double, std: Double) {
        let inverse = 1 / std
        if nonzeroOnly {
            for i in v.indices {
                let x = v[i]
                let y = Float((Double(min(max(x, lo), hi)) - mean) * inverse)
                v[i] = x != 0 ? y : x
            }
        } else {
            for i in v.indices {
                v[i] = Float((Double(min(max(v[i], lo), hi)) - mean) * inverse)
            }
        }
    }
}
