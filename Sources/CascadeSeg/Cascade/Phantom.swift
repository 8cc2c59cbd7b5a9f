/// A deterministic synthetic scan for testing the cascade: a large ellipsoidal body with small
/// structures at known places — spheres, a tube and a thin spherical shell — each with its own
/// label and intensity, plus seeded noise. Same parameters, same voxels, on every platform.
public struct Phantom: Sendable {
    public var image: Volume
    /// Ground-truth labels (0 background and body, 1... structures), index x + nx * (y + ny * z).
    public var labels: [Int32]
    /// Label ids and names of the structures, in label order.
    public var structures: [(id: Int32, name: String)]

    /// `size` in voxels (x, y, z), `spacing` in mm.
    public init(size: SIMD3<Int> = SIMD3(96, 96, 80), spacing: SIMD3<Double> = SIMD3(1, 1, 1), seed: UInt64 = 1, noise: Float = 0.05) {
        var rng = SplitMixRandom(seed: seed)
        var voxels = [Float](repeating: 0, count: size.x * size.y * size.z)
        var labels = [Int32](repeating: 0, count: voxels.count)
        // Physical positions in mm from the volume's centre.
        let extent = SIMD3<Double>(Double(size.x), Double(size.y), Double(size.z)) * spacing
        func position(_ x: Int, _ y: Int, _ z: Int) -> SIMD3<Double> {
            (SIMD3<Double>(Double(x), Double(y), Double(z)) + 0.5) * spacing - extent / 2
        }
        let body = extent * 0.42                              // ellipsoid radii
        let r = min(extent.x, extent.y, extent.z)
        let sphereA = (center: SIMD3<Double>(-0.15, 0.1, 0.05) * extent, radius: 0.05 * r)
        let sphereB = (center: SIMD3<Double>(0.18, -0.12, -0.1) * extent, radius: 0.035 * r)
        let tube = (a: SIMD3<Double>(-0.2, -0.2, -0.15) * extent, b: SIMD3<Double>(0.05, 0.2, 0.15) * extent, radius: 0.02 * r)
        let shell = (center: SIMD3<Double>(0.12, 0.15, 0.1) * extent, radius: 0.08 * r, thickness: max(spacing.x, spacing.y, spacing.z) * 1.5)
        func distanceToSegment(_ p: SIMD3<Double>) -> Double {
            let ab = tube.b - tube.a
            let t = max(0, min(1, ((p - tube.a) * ab).sum() / (ab * ab).sum()))
            let d = p - (tube.a + t * ab)
            return (d * d).sum().squareRoot()
        }
        for z in 0..<size.z {
            for y in 0..<size.y {
                for x in 0..<size.x {
                    let p = position(x, y, z)
                    let i = x + size.x * (y + size.y * z)
                    let q = p / body
                    guard (q * q).sum() <= 1 else { continue }
                    var value: Float = 0.5
                    let da = p - sphereA.center, db = p - sphereB.center, ds = p - shell.center
                    let dShell = abs((ds * ds).sum().squareRoot() - shell.radius)
                    if (da * da).sum() <= sphereA.radius * sphereA.radius { labels[i] = 1; value = 0.9 }
                    else if (db * db).sum() <= sphereB.radius * sphereB.radius { labels[i] = 2; value = 0.2 }
                    else if distanceToSegment(p) <= tube.radius { labels[i] = 3; value = 1.0 }
                    else if dShell <= shell.thickness / 2 { labels[i] = 4; value = 0.75 }
                    voxels[i] = value
                }
            }
        }
        for i in voxels.indices where voxels[i] != 0 { voxels[i] += noise * rng.nextSigned() }
        self.image = Volume(size: size, spacing: spacing, voxels: voxels)
        self.labels = labels
        self.structures = [(1, "sphere_large"), (2, "sphere_small"), (3, "tube"), (4, "shell")]
    }
}
