import Foundation

/// The exact Euclidean distance transform of a 3-D binary image with anisotropic voxel spacing.
///
/// For every voxel it gives the distance in mm from its centre to the nearest centre of a
/// *feature* voxel (one whose mask value is true). It is Felzenszwalb and Huttenlocher's
/// separable algorithm ("Distance Transforms of Sampled Functions", Theory of Computing 8, 2012):
/// the squared distance is `min over features of (sx*dx)^2 + (sy*dy)^2 + (sz*dz)^2`, which splits
/// into three one-dimensional passes, along x, then y, then z. Each pass replaces every line `f`
/// by `d(p) = min_q (s * (p - q))^2 + f(q)`, the lower envelope of parabolas rooted at the
/// finite samples of `f`, in O(n) per line. Everything is in Double, so the result is exact up
/// to rounding (each value is a sum of three squared products, as a brute-force search computes
/// it). Lines are processed in parallel on large images.
public enum DistanceTransform {
    /// Squared distances in mm^2 from each voxel centre to the nearest feature voxel centre
    /// (0 on the features); +infinity everywhere when there is no feature voxel.
    public static func squaredDistances(toFeatures features: [Bool], in grid: MetricGrid) -> [Double] {
        precondition(features.count == grid.voxelCount, "\(features.count) mask values do not fill a \(grid) grid")
        var result = features.map { $0 ? 0.0 : Double.infinity }
        let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz)
        result.withUnsafeMutableBufferPointer { buffer in
            let data = SharedPointer(base: buffer.baseAddress!)
            // Along x: line (y, z) starts at nx * (y + ny * z), stride 1.
            transformLines(data, length: nx, stride: 1, spacing: grid.spacing.x, lineCount: ny * nz) { $0 * nx }
            // Along y: line (x, z) starts at x + nx * ny * z, stride nx.
            transformLines(data, length: ny, stride: nx, spacing: grid.spacing.y, lineCount: nx * nz) {
                ($0 % nx) + nx * ny * ($0 / nx)
            }
            // Along z: line (x, y) starts at x + nx * y, stride nx * ny.
            transformLines(data, length: nz, stride: nx * ny, spacing: grid.spacing.z, lineCount: nx * ny) { $0 }
        }
        return result
    }

    /// Distances in mm from each voxel centre to the nearest feature voxel centre; +infinity
    /// everywhere when there is no feature voxel.
    public static func distances(toFeatures features: [Bool], in grid: MetricGrid) -> [Double] {
        var d = squaredDistances(toFeatures: features, in: grid)
        d.withUnsafeMutableBufferPointer { v in
            for i in v.indices { v[i] = v[i].squareRoot() }
        }
        return d
    }

    // MARK: - One dimension

    /// The one-dimensional transform of `f` (finite samples and +infinity) with sample spacing
    /// `spacing`, written to `d`: `d[p] = min_q (spacing * (p - q))^2 + f[q]`, +infinity when no
    /// sample is finite. `roots` needs `f.count` entries and `bounds` `f.count + 1`.
    static func lowerEnvelope(_ f: UnsafePointer<Double>, count n: Int, spacing: Double,
                              into d: UnsafeMutablePointer<Double>,
                              roots: UnsafeMutablePointer<Int>, bounds: UnsafeMutablePointer<Double>) {
        let s2 = spacing * spacing
        // roots[0...k]: the parabolas of the lower envelope, left to right; parabola j is the
        // lowest on [bounds[j], bounds[j + 1]] (in sample units).
        var k = -1
        for q in 0..<n where f[q] < .infinity {
            let fq = f[q] + s2 * Double(q) * Double(q)
            var boundary = -Double.infinity
            while k >= 0 {
                let p = roots[k]
                // Where the parabolas rooted at p and q (p < q) meet.
                boundary = (fq - (f[p] + s2 * Double(p) * Double(p))) / (2 * s2 * Double(q - p))
                if boundary > bounds[k] { break }
                k -= 1  // parabola p is nowhere the lowest
            }
            k += 1
            roots[k] = q
            bounds[k] = k == 0 ? -.infinity : boundary
            bounds[k + 1] = .infinity
        }
        guard k >= 0 else {
            for p in 0..<n { d[p] = .infinity }
            return
        }
        var j = 0
        for p in 0..<n {
            while bounds[j + 1] < Double(p) { j += 1 }
            let r = roots[j]
            let offset = spacing * Double(p - r)
            d[p] = offset * offset + f[r]
        }
    }

    /// Applies `lowerEnvelope` in place to `lineCount` lines of `length` samples `stride` apart,
    /// line i starting at `start(i)`; in parallel chunks when there is enough work.
    private static func transformLines(_ data: SharedPointer, length: Int, stride: Int, spacing: Double,
                                       lineCount: Int, start: @escaping (Int) -> Int) {
        let work = lineCount * length
        let chunks = work < 1 << 16 ? 1 : min(lineCount, ProcessInfo.processInfo.activeProcessorCount * 4)
        let perChunk = (lineCount + chunks - 1) / chunks
        let body = { (chunk: Int) in
            let f = UnsafeMutablePointer<Double>.allocate(capacity: length)
            let d = UnsafeMutablePointer<Double>.allocate(capacity: length)
            let roots = UnsafeMutablePointer<Int>.allocate(capacity: length)
            let bounds = UnsafeMutablePointer<Double>.allocate(capacity: length + 1)
            defer { f.deallocate(); d.deallocate(); roots.deallocate(); bounds.deallocate() }
            let base = data.base
            for line in (chunk * perChunk)..<min(lineCount, (chunk + 1) * perChunk) {
                let first = start(line)
                for i in 0..<length { f[i] = base[first + i * stride] }
                lowerEnvelope(f, count: length, spacing: spacing, into: d, roots: roots, bounds: bounds)
                for i in 0..<length { base[first + i * stride] = d[i] }
            }
        }
        if chunks == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: chunks, execute: body) }
    }

    /// The result buffer, shared by the chunks of one pass; each writes only its own lines.
    private struct SharedPointer: @unchecked Sendable {
        let base: UnsafeMutablePointer<Double>
    }
}
