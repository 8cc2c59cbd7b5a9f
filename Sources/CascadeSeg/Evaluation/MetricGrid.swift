/// The grid a segmentation metric is computed on: its size in voxels and its voxel spacing in
/// millimetres. Voxel (x, y, z) is element `x + nx * (y + ny * z)` of a mask, as in `NiftiImage`.
public struct MetricGrid: Equatable, Sendable, CustomStringConvertible {
    public var nx: Int, ny: Int, nz: Int
    /// Distance between neighbouring voxel centres along x, y and z, in mm.
    public var spacing: (x: Double, y: Double, z: Double)

    public init(nx: Int, ny: Int, nz: Int, spacing: (x: Double, y: Double, z: Double) = (1, 1, 1)) {
        precondition(nx >= 1 && ny >= 1 && nz >= 1, "grid \(nx)x\(ny)x\(nz) has an empty dimension")
        precondition([spacing.x, spacing.y, spacing.z].allSatisfy { $0 > 0 && $0.isFinite },
                     "voxel spacing must be positive and finite")
        self.nx = nx; self.ny = ny; self.nz = nz
        self.spacing = spacing
    }

    public var voxelCount: Int { nx * ny * nz }
    /// The volume of one voxel in mm^3.
    public var voxelVolume: Double { spacing.x * spacing.y * spacing.z }

    public var description: String { "\(nx)x\(ny)x\(nz) voxels of \(spacing.x) x \(spacing.y) x \(spacing.z) mm" }

    public static func == (a: MetricGrid, b: MetricGrid) -> Bool {
        a.nx == b.nx && a.ny == b.ny && a.nz == b.nz
            && a.spacing.x == b.spacing.x && a.spacing.y == b.spacing.y && a.spacing.z == b.spacing.z
    }
}
