import Foundation

/// Resampling of volumes between voxel grids that cover the same physical extent.
///
/// Grid mapping (per axis, input size `n`, output size `m`): voxel centres are aligned so that
/// the physical extent is preserved, as skimage's `resize` (and so nnU-Net) does. Output voxel
/// `i` samples the input at the continuous coordinate
///
///     c(i) = (i + 0.5) * n / m - 0.5,   clamped to [0, n - 1].
///
/// When resampling to a spacing, `m = max(1, round(n * old / new))` (half to even, as numpy), so
/// `n / m` is `new / old` up to that rounding of the size; the output grid's spacing is recorded
/// as `old * n / m`, the spacing that makes the extents equal.
///
/// - Trilinear: `out(i) = (1 - t) in(floor c) + t in(floor c + 1)` per axis with `t = c - floor c`
///   (the second index clamped to `n - 1`), applied separably along x, then y, then z.
/// - Anti-aliasing, when an axis shrinks (`factor = n / m > 1`) and `antiAliasing` is on: before
///   sampling, the volume is filtered along that axis with a Gaussian of
///   `sigma = (factor - 1) / 2` input voxels (skimage's `anti_aliasing_sigma`), truncated at
///   `radius = Int(4 * sigma + 0.5)` (scipy's `truncate = 4`), weights normalized to sum 1, edge
///   voxels replicated beyond the border (scipy mode "nearest"). Filter and interpolation are
///   both linear and separable, so each axis is one pass with the two composed into one sparse
///   weight row per output voxel: O(n * taps) work, taps = 2 + 2 * radius. (nnU-Net itself
///   resizes with `anti_aliasing=False`; pass `antiAliasing: false` to match it.)
/// - Nearest neighbour (label maps): output voxel `i` takes input voxel
///   `min(n - 1, floor((i + 0.5) * n / m))` = `floor(c(i) + 0.5)`, i.e. the nearest centre with
///   ties going up, computed in integers as `((2i + 1) * n) / (2m)`.
///
/// Identity (same size) axes are skipped, so resampling to the same grid returns the same voxels.
public enum Resampler {
    /// The continuous input coordinate sampled by output voxel `i` (clamped to `[0, n - 1]`).
    public static func sourceCoordinate(_ i: Int, inputSize n: Int, outputSize m: Int) -> Double {
        let c = (Double(i) + 0.5) * Double(n) / Double(m) - 0.5
        return min(max(c, 0), Double(n - 1))
    }

    /// The input voxel that nearest-neighbour resampling copies into output voxel `i`.
    @inlinable
    public static func nearestSourceIndex(_ i: Int, inputSize n: Int, outputSize m: Int) -> Int {
        min(n - 1, ((2 * i + 1) * n) / (2 * m))
    }

    /// The Gaussian sigma (input voxels) used before shrinking an axis by `factor = n / m`; 0
    /// when the axis does not shrink.
    public static func antiAliasingSigma(inputSize n: Int, outputSize m: Int) -> Double {
        max(0, (Double(n) / Double(m) - 1) / 2)
    }

    /// The size of a grid of `size` voxels of `spacing` resampled to `newSpacing`:
    /// `max(1, round(n * spacing / newSpacing))` per axis, rounding half to even as numpy (and so
    /// nnU-Net) does.
    public static func resampledSize(_ size: SIMD3<Int>, spacing: SIMD3<Double>, to newSpacing: SIMD3<Double>) -> SIMD3<Int> {
        var out = SIMD3<Int>()
        for a in 0..<3 {
            let n = (Double(size[a]) * spacing[a] / newSpacing[a]).rounded(.toNearestOrEven)
            out[a] = n.isFinite ? max(1, Int(min(n, Double(Int32.max)))) : 1
        }
        return out
    }

    /// The spacing of `newSize` voxels over the extent of `size` voxels of `spacing`:
    /// `spacing * size / newSize` per axis.
    public static func resampledSpacing(_ size: SIMD3<Int>, spacing: SIMD3<Double>, to newSize: SIMD3<Int>) -> SIMD3<Double> {
        var s = SIMD3<Double>()
        for a in 0..<3 { s[a] = spacing[a] * (Double(size[a]) / Double(newSize[a])) }
        return s
    }

    /// Trilinear resampling to a new spacing: output size `resampledSize`, output spacing
    /// `resampledSpacing` (the requested spacing up to the rounding of the size).
    public static func resample(_ volume: Volume, toSpacing spacing: SIMD3<Double>, antiAliasing: Bool = true) -> Volume {
        resample(volume, toSize: resampledSize(volume.size, spacing: volume.spacing, to: spacing), antiAliasing: antiAliasing)
    }

    /// Trilinear resampling to `size` voxels over the same physical extent (e.g. stage-1
    /// probabilities back to the image grid, one channel at a time).
    public static func resample(_ volume: Volume, toSize size: SIMD3<Int>, antiAliasing: Bool = true) -> Volume {
        precondition(size.x >= 1 && size.y >= 1 && size.z >= 1, "empty target size \(size)")
        let n = volume.size
        var current = volume.voxels
        var shape = n
        for axis in 0..<3 where n[axis] != size[axis] {
            let weights = AxisWeights(inputSize: n[axis], outputSize: size[axis], antiAliasing: antiAliasing)
            var next = shape
            next[axis] = size[axis]
            current = pass(current, shape: shape, axis: axis, weights: weights)
            shape = next
        }
        return Volume(size: size, spacing: resampledSpacing(n, spacing: volume.spacing, to: size), voxels: current)
    }

    /// Nearest-neighbour resampling of a label map (any element type) from a grid of `from`
    /// voxels to one of `to` voxels over the same extent. Same size returns the same map.
    @inlinable
    public static func resampleLabelsToShape<T>(_ labels: [T], from: SIMD3<Int>, to: SIMD3<Int>) -> [T] {
        precondition(labels.count == from.x * from.y * from.z, "\(labels.count) labels do not fill a \(from) grid")
        precondition(to.x >= 1 && to.y >= 1 && to.z >= 1, "empty target shape \(to)")
        if from == to { return labels }
        let mapX = (0..<to.x).map { nearestSourceIndex($0, inputSize: from.x, outputSize: to.x) }
        let mapY = (0..<to.y).map { nearestSourceIndex($0, inputSize: from.y, outputSize: to.y) }
        let mapZ = (0..<to.z).map { nearestSourceIndex($0, inputSize: from.z, outputSize: to.z) }
        let count = to.x * to.y * to.z
        return [T](unsafeUninitializedCapacity: count) { out, initialized in
            labels.withUnsafeBufferPointer { src in
                mapX.withUnsafeBufferPointer { mx in
                    var o = out.baseAddress!
                    for z in 0..<to.z {
                        for y in 0..<to.y {
                            let row = src.baseAddress! + from.x * (mapY[y] + from.y * mapZ[z])
                            for x in 0..<to.x { (o + x).initialize(to: row[mx[x]]) }
                            o += to.x
                        }
                    }
                }
            }
            initialized = count
        }
    }

    // MARK: - Internals

    /// One sparse row of input weights per output voxel along one axis: the Gaussian (when the
    /// axis shrinks) composed with the two linear-interpolation taps, clamped to the axis.
    struct AxisWeights {
        /// First input index of each output voxel's row.
        var start: [Int]
        /// Row `i` is `weights[offset[i] ..< offset[i + 1]]`, for inputs `start[i] ...`.
        var offset: [Int]
        var weights: [Float]

        init(inputSize n: Int, outputSize m: Int, antiAliasing: Bool) {
            let sigma = antiAliasing ? Resampler.antiAliasingSigma(inputSize: n, outputSize: m) : 0
            var kernel: [Double] = [1]
            var radius = 0
            if sigma > 0 {
                radius = Int(4 * sigma + 0.5)
                kernel = (-radius...radius).map { r in exp(-0.5 * Double(r * r) / (sigma * sigma)) }
                let total = kernel.reduce(0, +)
                kernel = kernel.map { $0 / total }
            }
            start = []; offset = [0]; weights = []
            start.reserveCapacity(m); offset.reserveCapacity(m + 1)
            var row = [Double](repeating: 0, count: 2 * radius + 2)
            for i in 0..<m {
                let c = Resampler.sourceCoordinate(i, inputSize: n, outputSize: m)
                let i0 = Int(c.rounded(.down))
                let t = c - Double(i0)
                let lowest = max(0, i0 - radius), highest = min(n - 1, i0 + 1 + radius)
                for k in row.indices { row[k] = 0 }
                for (tap, linear) in [(i0, 1 - t), (min(i0 + 1, n - 1), t)] where linear != 0 {
                    for r in -radius...radius {
                        let k = min(max(tap + r, 0), n - 1)
                        row[k - lowest] += linear * kernel[r + radius]
                    }
                }
                start.append(lowest)
                for k in 0...(highest - lowest) { weights.append(Float(row[k])) }
                offset.append(weights.count)
            }
        }
    }

    /// One separable pass along `axis` (0 = x, 1 = y, 2 = z) of a volume of `shape`.
    static func pass(_ input: [Float], shape: SIMD3<Int>, axis: Int, weights w: AxisWeights) -> [Float] {
        let m = w.start.count
        var outShape = shape
        outShape[axis] = m
        let (nx, ny, nz) = (shape.x, shape.y, shape.z)
        let count = outShape.x * outShape.y * outShape.z
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            input.withUnsafeBufferPointer { src in
                w.weights.withUnsafeBufferPointer { wt in
                    w.offset.withUnsafeBufferPointer { off in
                        w.start.withUnsafeBufferPointer { st in
                            let o = out.baseAddress!, s = src.baseAddress!, k = wt.baseAddress!
                            switch axis {
                            case 0:
                                // Rows along x: out[j] = sum_t w_t * in[start + t].
                                for r in 0..<(ny * nz) {
                                    let inRow = s + r * nx, outRow = o + r * m
                                    for j in 0..<m {
                                        var acc: Float = 0
                                        let base = inRow + st[j]
                                        for t in 0..<(off[j + 1] - off[j]) { acc += k[off[j] + t] * base[t] }
                                        outRow[j] = acc
                                    }
                                }
                            default:
                                // Along y (lines of nx voxels) or z (planes of nx*ny voxels): whole
                                // lines are weighted and added, so the inner loop runs along x.
                                let line = axis == 1 ? nx : nx * ny
                                let outer = axis == 1 ? nz : 1
                                let n = shape[axis]
                                for q in 0..<outer {
                                    let inBase = s + q * n * line, outBase = o + q * m * line
                                    for j in 0..<m {
                                        let dst = outBase + j * line
                                        let row0 = off[j], taps = off[j + 1] - off[j]
                                        let first = inBase + st[j] * line
                                        let w0 = k[row0]
                                        for x in 0..<line { dst[x] = w0 * first[x] }
                                        if taps > 1 {
                                            for t in 1..<taps {
                                                let wt = k[row0 + t], srcLine = first + t * line
                                                for x in 0..<line { dst[x] += wt * srcLine[x] }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            initialized = count
        }
    }
}
