/// Percentiles with linear interpolation between order statistics: numpy's default
/// (`np.percentile(..., method="linear")`, Hyndman and Fan's type 7) and `torch.quantile`'s.
public enum Percentile {
    /// The `percent` (0...100) percentile of `values`: with the values sorted as v[0...n-1] and
    /// h = (n - 1) * percent / 100, it is v[floor h] + (h - floor h) * (v[ceil h] - v[floor h]).
    /// NaN for no values. +infinity values sort last; a result that would interpolate towards
    /// one is +infinity (the value itself when the weight is 0).
    public static func linear(_ values: [Double], percent: Double) -> Double {
        precondition(percent >= 0 && percent <= 100, "a percentile must be in 0...100, not \(percent)")
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let h = percent / 100 * Double(sorted.count - 1)
        let lower = Int(h.rounded(.down))
        let upper = min(sorted.count - 1, lower + 1)
        let weight = h - Double(lower)
        let (a, b) = (sorted[lower], sorted[upper])
        if weight == 0 || a == b { return a }
        if b == .infinity { return b }
        // numpy's `_lerp`: from the nearer end, so the result stays within [a, b].
        return weight < 0.5 ? a + (b - a) * weight : b - (b - a) * (1 - weight)
    }
}
