import CNifti

/// Where a NIfTI volume sits in space: its grid size, voxel spacing, and both of its transforms
/// (qform and sform) with their codes, kept as libnifti reports them so an output can be written
/// with exactly the geometry of its input.
///
/// Matrices are 4x4, row-major (`m[row][column]`), mapping voxel indices (i, j, k, 1) to
/// (x, y, z, 1) in millimetres (see `xyzUnits`).
public struct NiftiGeometry: Equatable, Sendable {
    /// Grid size; voxel (x, y, z) is element `x + nx * (y + ny * z)` of the data.
    public var nx: Int, ny: Int, nz: Int
    /// All eight `pixdim` entries: [0] is qfac as stored, [1...3] the voxel spacing, [4] the time step.
    public var pixdim: [Double]
    public var qformCode: Int32
    public var sformCode: Int32
    /// The qform's quaternion parameters; writing uses these (and pixdim), not `qtoXYZ`.
    public var quaternB: Double, quaternC: Double, quaternD: Double
    public var qoffsetX: Double, qoffsetY: Double, qoffsetZ: Double
    /// +1 or -1: the sign of the third column of the qform.
    public var qfac: Double
    /// The qform as a matrix, as libnifti derives it from the quaternion parameters on reading.
    public var qtoXYZ: [[Double]]
    /// The sform matrix (`srow_x`, `srow_y`, `srow_z` and the row 0 0 0 1).
    public var stoXYZ: [[Double]]
    /// `NIFTI_UNITS_*` codes, the two parts of the header's `xyzt_units`.
    public var xyzUnits: Int32
    public var timeUnits: Int32
    /// 1 or 2: the header format read, and the one written (NIfTI-2 keeps doubles, NIfTI-1 floats).
    public var niftiVersion: Int

    public init(nx: Int, ny: Int, nz: Int, pixdim: [Double], qformCode: Int32, sformCode: Int32,
                quaternB: Double, quaternC: Double, quaternD: Double,
                qoffsetX: Double, qoffsetY: Double, qoffsetZ: Double, qfac: Double,
                qtoXYZ: [[Double]], stoXYZ: [[Double]], xyzUnits: Int32, timeUnits: Int32, niftiVersion: Int) {
        self.nx = nx; self.ny = ny; self.nz = nz
        self.pixdim = pixdim
        self.qformCode = qformCode; self.sformCode = sformCode
        self.quaternB = quaternB; self.quaternC = quaternC; self.quaternD = quaternD
        self.qoffsetX = qoffsetX; self.qoffsetY = qoffsetY; self.qoffsetZ = qoffsetZ; self.qfac = qfac
        self.qtoXYZ = qtoXYZ; self.stoXYZ = stoXYZ
        self.xyzUnits = xyzUnits; self.timeUnits = timeUnits
        self.niftiVersion = niftiVersion
    }

    /// A geometry whose sform is `affine` (3 or 4 rows of 4) and whose qform is the nearest
    /// rotation-plus-spacing to it, both with `code` (a `NIFTI_XFORM_*` code; 1 is scanner
    /// anatomical); spacing is the affine's column lengths, units mm.
    /// With `niftiVersion` 1 every value is rounded to what a NIfTI-1 header stores (float32), so
    /// writing this geometry and reading it back gives an equal geometry.
    public init(nx: Int, ny: Int, nz: Int, affine: [[Double]], code: Int32 = 1,
                niftiVersion: Int = 1) throws {
        guard nx >= 1, ny >= 1, nz >= 1 else { throw CascadeSegError.invalidInput("grid \(nx)x\(ny)x\(nz) has an empty dimension") }
        guard niftiVersion == 1 || niftiVersion == 2 else { throw CascadeSegError.invalidInput("NIfTI version must be 1 or 2, not \(niftiVersion)") }
        guard affine.count == 3 || affine.count == 4, affine.allSatisfy({ $0.count == 4 && $0.allSatisfy(\.isFinite) }) else {
            throw CascadeSegError.invalidInput("an affine needs 3 or 4 rows of 4 finite numbers")
        }
        let stored: (Double) -> Double = niftiVersion == 1 ? { Double(Float($0)) } : { $0 }
        var rows = affine.prefix(3).map { $0.map(stored) }
        rows.append([0, 0, 0, 1])
        let spacing = (0..<3).map { c in (0..<3).map { rows[$0][c] * rows[$0][c] }.reduce(0, +).squareRoot() }
        guard spacing.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw CascadeSegError.invalidInput("affine \(rows) has a zero column, so no voxel spacing")
        }
        var qb = 0.0, qc = 0.0, qd = 0.0, qx = 0.0, qy = 0.0, qz = 0.0, dx = 0.0, dy = 0.0, dz = 0.0, qf = 0.0
        nifti_dmat44_to_quatern(NiftiGeometry.dmat44(rows), &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qf)
        (qb, qc, qd, qx, qy, qz) = (stored(qb), stored(qc), stored(qd), stored(qx), stored(qy), stored(qz))
        (dx, dy, dz) = (stored(dx), stored(dy), stored(dz))
        let qto = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, dx, dy, dz, qf)
        self.init(nx: nx, ny: ny, nz: nz, pixdim: [qf, dx, dy, dz, 1, 1, 1, 1], qformCode: code, sformCode: code,
                  quaternB: qb, quaternC: qc, quaternD: qd, qoffsetX: qx, qoffsetY: qy, qoffsetZ: qz, qfac: qf,
                  qtoXYZ: NiftiGeometry.rows(qto), stoXYZ: rows,
                  xyzUnits: NIFTI_UNITS_MM, timeUnits: NIFTI_UNITS_UNKNOWN, niftiVersion: niftiVersion)
    }

    /// Voxel spacing along x, y and z (pixdim[1...3]).
    public var spacing: (x: Double, y: Double, z: Double) { (pixdim[1], pixdim[2], pixdim[3]) }

    public var voxelCount: Int { nx * ny * nz }

    /// The header's `xyzt_units` byte.
    public var xyztUnits: Int32 { (xyzUnits & 0x07) | (timeUnits & 0x38) }

    /// Millimetres per spatial unit of the header: 1000 for metres, 0.001 for microns, and 1
    /// otherwise (millimetres, or unknown units, which in practice are millimetres).
    public var millimetresPerUnit: Double {
        switch xyzUnits {
        case NIFTI_UNITS_METER: return 1000
        case NIFTI_UNITS_MICRON: return 0.001
        default: return 1
        }
    }

    /// The voxel-to-world matrix readers use (nibabel's order): the sform when its code is set,
    /// else the qform when its code is set, else the voxel index times the spacing (NIfTI's
    /// "method 1", no rotation, no offset). In the header's units.
    public var voxelToWorld: [[Double]] {
        if sformCode > 0 { return stoXYZ }
        if qformCode > 0 { return qtoXYZ }
        return [[pixdim[1], 0, 0, 0], [0, pixdim[2], 0, 0], [0, 0, pixdim[3], 0], [0, 0, 0, 1]]
    }

    /// World (scanner) coordinates in mm of the centre of voxel `(i, j, k)` (fractional
    /// indices allowed), by `voxelToWorld`.
    public func worldMM(ofVoxel v: SIMD3<Double>) -> SIMD3<Double> {
        let m = voxelToWorld
        var out = SIMD3<Double>()
        for r in 0..<3 { out[r] = m[r][0] * v.x + m[r][1] * v.y + m[r][2] * v.z + m[r][3] }
        return out * millimetresPerUnit
    }

    /// Nil when the geometry can be written, else what is wrong with it.
    func problem() -> String? {
        guard nx >= 1, ny >= 1, nz >= 1 else { return "grid \(nx)x\(ny)x\(nz) has an empty dimension" }
        guard nx <= Int(Int32.max), ny <= Int(Int32.max), nz <= Int(Int32.max),
              !nx.multipliedReportingOverflow(by: ny).overflow,
              !(nx * ny).multipliedReportingOverflow(by: nz).overflow else { return "grid \(nx)x\(ny)x\(nz) is too large" }
        guard pixdim.count == 8 else { return "pixdim has \(pixdim.count) entries, not 8" }
        let s = [pixdim[1], pixdim[2], pixdim[3]]
        guard s.allSatisfy({ $0 > 0 && $0.isFinite }) else { return "voxel spacing \(s) is not positive and finite" }
        guard qtoXYZ.count == 4, stoXYZ.count == 4, (qtoXYZ + stoXYZ).allSatisfy({ $0.count == 4 }) else {
            return "qform and sform matrices must be 4x4"
        }
        guard niftiVersion == 1 || niftiVersion == 2 else { return "NIfTI version \(niftiVersion) is neither 1 nor 2" }
        return nil
    }

    // MARK: - Bridging to libnifti's nifti_image

    /// The geometry of an image libnifti has read.
    init(_ nim: nifti_image, niftiVersion: Int) {
        let pixdim = withUnsafeBytes(of: nim.pixdim) { Array($0.bindMemory(to: Double.self)) }
        self.init(nx: Int(nim.nx), ny: Int(nim.ny), nz: Int(nim.nz), pixdim: pixdim,
                  qformCode: nim.qform_code, sformCode: nim.sform_code,
                  quaternB: nim.quatern_b, quaternC: nim.quatern_c, quaternD: nim.quatern_d,
                  qoffsetX: nim.qoffset_x, qoffsetY: nim.qoffset_y, qoffsetZ: nim.qoffset_z, qfac: nim.qfac,
                  qtoXYZ: NiftiGeometry.rows(nim.qto_xyz), stoXYZ: NiftiGeometry.rows(nim.sto_xyz),
                  xyzUnits: nim.xyz_units, timeUnits: nim.time_units, niftiVersion: niftiVersion)
    }

    /// Copies this geometry into a libnifti image made by `nifti_make_new_nim` for a 3-D grid.
    func apply(to nim: inout nifti_image) {
        withUnsafeMutableBytes(of: &nim.pixdim) { raw in
            let p = raw.bindMemory(to: Double.self)
            for i in 0..<8 { p[i] = pixdim[i] }
        }
        (nim.dx, nim.dy, nim.dz) = (pixdim[1], pixdim[2], pixdim[3])
        (nim.dt, nim.du, nim.dv, nim.dw) = (pixdim[4], pixdim[5], pixdim[6], pixdim[7])
        nim.qform_code = qformCode
        nim.sform_code = sformCode
        (nim.quatern_b, nim.quatern_c, nim.quatern_d) = (quaternB, quaternC, quaternD)
        (nim.qoffset_x, nim.qoffset_y, nim.qoffset_z) = (qoffsetX, qoffsetY, qoffsetZ)
        nim.qfac = qfac
        nim.qto_xyz = NiftiGeometry.dmat44(qtoXYZ)
        nim.qto_ijk = nifti_dmat44_inverse(nim.qto_xyz)
        nim.sto_xyz = NiftiGeometry.dmat44(stoXYZ)
        nim.sto_ijk = nifti_dmat44_inverse(nim.sto_xyz)
        nim.xyz_units = xyzUnits
        nim.time_units = timeUnits
    }

    static func rows(_ m: nifti_dmat44) -> [[Double]] {
        withUnsafeBytes(of: m.m) { raw in
            let p = raw.bindMemory(to: Double.self)
            return (0..<4).map { r in (0..<4).map { p[4 * r + $0] } }
        }
    }

    static func dmat44(_ rows: [[Double]]) -> nifti_dmat44 {
        var m = nifti_dmat44()
        withUnsafeMutableBytes(of: &m.m) { raw in
            let p = raw.bindMemory(to: Double.self)
            for r in 0..<4 { for c in 0..<4 { p[4 * r + c] = r < rows.count && c < rows[r].count ? rows[r][c] : (r == c ? 1 : 0) } }
        }
        return m
    }
}
