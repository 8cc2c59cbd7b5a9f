import Foundation
@testable import CascadeSeg

/// SplitMix64: a tiny deterministic generator, so that every test sees the same "random" data
/// on every machine and every run.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    mutating func uniform(_ range: ClosedRange<Double>) -> Float {
        Float(range.lowerBound + (range.upperBound - range.lowerBound) * unit())
    }

    /// Standard normal (Box-Muller).
    mutating func normal(mean: Double = 0, std: Double = 1) -> Double {
        let u1 = max(unit(), 0x1p-60), u2 = unit()
        return mean + std * (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    mutating func tensor(_ shape: [Int], in range: ClosedRange<Double> = -1...1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in uniform(range) })
    }

    /// Small integers in `range` (as floats): exact values with many ties.
    mutating func integerTensor(_ shape: [Int], in range: ClosedRange<Int>) -> Tensor {
        let n = UInt64(range.count)
        return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float(range.lowerBound + Int(next() % n)) })
    }
}
