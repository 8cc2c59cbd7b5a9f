/// The geometry shared by the cascade's building blocks: a 3-D float volume with its grid size
/// and spacing, and axis-aligned boxes of voxels.
///
/// Conventions (the same as `NiftiImage`): vectors are in (x, y, z) order, voxel (x, y, z) is
/// element `x + nx * (y + ny * z)`, and spacings are in millimetres. The model file lists
/// `spacing_mm`, `min_roi_size` and `size_multiple` in array order (z, y, x): convert them with
/// `SIMD3(zyx:)`.

/// A 3-D float volume: grid size, voxel spacing and voxels (`voxels[x + nx * (y + ny * z)]`).
public struct Volume: Equatable, Sendable {
    /// (nx, ny, nz), each >= 1.
    public var size: SIMD3<Int>
    /// Voxel spacing along x, y and z in mm, each positive and finite.
    public var spacing: SIMD3<Double>
    public var voxels: [Float]

    /// `voxels.count` must be `size.x * size.y * size.z`.
    public init(size: SIMD3<Int>, spacing: SIMD3<Double> = SIMD3(repeating: 1), voxels: [Float]) {
        Volume.checkGrid(size, spacing)
        precondition(voxels.count == size.x * size.y * size.z, "\(voxels.count) voxels do not fill a \(size.x)x\(size.y)x\(size.z) grid")
        self.size = size
        self.spacing = spacing
        self.voxels = voxels
    }

    public init(size: SIMD3<Int>, spacing: SIMD3<Double> = SIMD3(repeating: 1), repeating value: Float = 0) {
        Volume.checkGrid(size, spacing)
        self.size = size
        self.spacing = spacing
        self.voxels = [Float](repeating: value, count: size.x * size.y * size.z)
    }

    /// The image's voxels and grid; spacing is pixdim[1...3] (positive: the reader checks it)
    /// in mm: converted from metres or microns when the header says so, taken as mm otherwise.
    public init(_ image: NiftiImage) {
        let s = image.spacing
        self.init(size: SIMD3(image.nx, image.ny, image.nz), spacing: SIMD3(s.x, s.y, s.z) * image.geometry.millimetresPerUnit,
                  voxels: image.voxels)
    }

    public var nx: Int { size.x }
    public var ny: Int { size.y }
    public var nz: Int { size.z }
    public var voxelCount: Int { size.x * size.y * size.z }

    @inline(__always) public func index(_ x: Int, _ y: Int, _ z: Int) -> Int { x + size.x * (y + size.y * z) }

    public subscript(x x: Int, y y: Int, z z: Int) -> Float {
        get { voxels[index(x, y, z)] }
        set { voxels[index(x, y, z)] = newValue }
    }

    /// The voxels of `box` (non-empty, inside the grid) as a volume of the same spacing.
    public func cropped(to box: VoxelBox) -> Volume {
        precondition(!box.isEmpty && box.clamped(to: size) == box, "box \(box) is not inside the \(size) grid")
        let s = box.size
        var out = [Float]()
        out.reserveCapacity(s.x * s.y * s.z)
        for z in box.lower.z..<box.upper.z {
            for y in box.lower.y..<box.upper.y {
                let row = index(box.lower.x, y, z)
                out.append(contentsOf: voxels[row..<(row + s.x)])
            }
        }
        return Volume(size: s, spacing: spacing, voxels: out)
    }

    static func checkGrid(_ size: SIMD3<Int>, _ spacing: SIMD3<Double>) {
        precondition(size.x >= 1 && size.y >= 1 && size.z >= 1, "a volume needs at least one voxel per axis, not \(size)")
        precondition(spacing.x > 0 && spacing.y > 0 && spacing.z > 0
                     && spacing.x.isFinite && spacing.y.isFinite && spacing.z.isFinite,
                     "voxel spacing must be positive and finite, not \(spacing)")
    }
}

/// An axis-aligned box of voxels, half-open: `lower` is the first voxel inside, `upper` the
/// first one past the end, per axis (x, y, z).
public struct VoxelBox: Hashable, Sendable, CustomStringConvertible {
    public var lower: SIMD3<Int>
    public var upper: SIMD3<Int>

    public init(lower: SIMD3<Int>, upper: SIMD3<Int>) {
        self.lower = lower
        self.upper = upper
    }

    /// The whole grid of the given size.
    public init(size: SIMD3<Int>) { self.init(lower: .zero, upper: size) }

    /// Voxels per axis (negative components read as empty).
    public var size: SIMD3<Int> { upper &- lower }
    public var isEmpty: Bool { upper.x <= lower.x || upper.y <= lower.y || upper.z <= lower.z }
    public var voxelCount: Int { isEmpty ? 0 : size.x * size.y * size.z }

    public func contains(_ other: VoxelBox) -> Bool {
        all(lower .<= other.lower) && all(other.upper .<= upper)
    }

    public func contains(x: Int, y: Int, z: Int) -> Bool {
        x >= lower.x && x < upper.x && y >= lower.y && y < upper.y && z >= lower.z && z < upper.z
    }

    /// The smallest box holding both.
    public func union(_ other: VoxelBox) -> VoxelBox {
        VoxelBox(lower: pointwiseMin(lower, other.lower), upper: pointwiseMax(upper, other.upper))
    }

    /// The common part, or nil when the boxes do not overlap.
    public func intersection(_ other: VoxelBox) -> VoxelBox? {
        let box = VoxelBox(lower: pointwiseMax(lower, other.lower), upper: pointwiseMin(upper, other.upper))
        return box.isEmpty ? nil : box
    }

    /// This box cut to `0 ..< size` on each axis (possibly empty).
    public func clamped(to size: SIMD3<Int>) -> VoxelBox {
        VoxelBox(lower: pointwiseMin(pointwiseMax(lower, .zero), size), upper: pointwiseMax(pointwiseMin(upper, size), .zero))
    }

    public var description: String {
        "[\(lower.x)..<\(upper.x), \(lower.y)..<\(upper.y), \(lower.z)..<\(upper.z)]"
    }
}

extension SIMD3 {
    /// A vector from three values in array order (z, y, x), as the model file lists spacings,
    /// ROI sizes and size multiples; the result is in (x, y, z) order.
    public init(zyx values: [Scalar]) {
        precondition(values.count == 3, "expected three values (z, y, x), got \(values.count)")
        self.init(values[2], values[1], values[0])
    }

    /// The values in array order (z, y, x).
    public var zyx: [Scalar] { [self.z, self.y, self.x] }
}
