/// Surface distances between two binary masks and the robust (percentile) Hausdorff distance.
///
/// Convention (that of MONAI's `compute_hausdorff_distance(percentile=p, directed=False)`):
/// the surfaces are `MaskSurface`'s (surface voxels, distances between voxel centres in mm);
/// the directed distances from A to B are, for every surface voxel of A, the distance to the
/// nearest surface voxel of B; the symmetric robust Hausdorff distance is the larger of the two
/// directed p-th percentiles, each with linear interpolation (`Percentile.linear`, as
/// `torch.quantile`). It is not the percentile of the union of both directed sets (medpy's
/// `hd95`), and not DeepMind surface-distance's `compute_robust_hausdorff`, which places the
/// surface on voxel corners and weights each distance by its surfel's area (docs/METRICS.md).
public enum HausdorffDistance {
    /// For every surface voxel of `from` (given as a surface mask, in voxel order), the distance
    /// in mm from its centre to the nearest centre of a surface voxel of `to`. Empty when `from`
    /// has no surface voxel; all +infinity when `to` has none.
    public static func directedSurfaceDistances(from: [Bool], to: [Bool], in grid: MetricGrid) -> [Double] {
        precondition(from.count == grid.voxelCount && to.count == grid.voxelCount)
        let count = from.reduce(0) { $0 + ($1 ? 1 : 0) }
        guard count > 0 else { return [] }
        let squared = DistanceTransform.squaredDistances(toFeatures: to, in: grid)
        var out = [Double]()
        out.reserveCapacity(count)
        for i in from.indices where from[i] { out.append(squared[i].squareRoot()) }
        return out
    }

    /// The symmetric robust Hausdorff distance in mm between two masks (see the type's
    /// convention): NaN when both are empty, +infinity when exactly one is.
    public static func robust(prediction: [Bool], reference: [Bool], in grid: MetricGrid, percent: Double = 95) -> Double {
        let p = MaskSurface.voxels(of: prediction, in: grid)
        let r = MaskSurface.voxels(of: reference, in: grid)
        let hasP = p.contains(true), hasR = r.contains(true)
        if !hasP && !hasR { return .nan }
        if !hasP || !hasR { return .infinity }
        let forward = Percentile.linear(directedSurfaceDistances(from: p, to: r, in: grid), percent: percent)
        let backward = Percentile.linear(directedSurfaceDistances(from: r, to: p, in: grid), percent: percent)
        return max(forward, backward)
    }
}
