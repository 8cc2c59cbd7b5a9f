/// The surface of a binary mask, as surface-distance metrics use it.
///
/// Definition: a voxel is a *surface voxel* when it belongs to the mask and at least one of its
/// six face neighbours (x +- 1, y +- 1, z +- 1) is outside the mask or outside the image. So a
/// mask touching the image border has a surface there, a mask one voxel thick is all surface,
/// and an empty mask has no surface. This is `mask & ~binary_erosion(mask)` with scipy's default
/// structuring element (the 6-neighbour cross) and border value 0, which is the edge MONAI's
/// `get_mask_edges` computes (`binary_erosion(seg) ^ seg`) when it is given no spacing, as in
/// `compute_hausdorff_distance`. Distances are then measured between voxel centres.
public enum MaskSurface {
    /// True at the surface voxels of `mask` (see the type's definition).
    public static func voxels(of mask: [Bool], in grid: MetricGrid) -> [Bool] {
        precondition(mask.count == grid.voxelCount, "\(mask.count) mask values do not fill a \(grid) grid")
        let (nx, ny, nz) = (grid.nx, grid.ny, grid.nz)
        let plane = nx * ny
        var surface = [Bool](repeating: false, count: mask.count)
        mask.withUnsafeBufferPointer { m in
            surface.withUnsafeMutableBufferPointer { s in
                for z in 0..<nz {
                    for y in 0..<ny {
                        let row = nx * (y + ny * z)
                        for x in 0..<nx where m[row + x] {
                            let i = row + x
                            s[i] = x == 0 || x == nx - 1 || y == 0 || y == ny - 1 || z == 0 || z == nz - 1
                                || !m[i - 1] || !m[i + 1] || !m[i - nx] || !m[i + nx] || !m[i - plane] || !m[i + plane]
                        }
                    }
                }
            }
        }
        return surface
    }
}
