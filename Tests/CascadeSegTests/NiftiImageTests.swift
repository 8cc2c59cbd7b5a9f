import CNifti
import CZlib
import Foundation
import XCTest
@testable import CascadeSeg

/// NIfTI reading and writing: real templates from Debian's mricron-data (`make test` installs it),
/// synthetic files written by libnifti itself, geometry round trips and the error paths.
final class NiftiImageTests: XCTestCase {
    static let templates = "/usr/share/mricron/templates"
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "nifti-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func template(_ name: String) throws -> String {
        let path = "\(Self.templates)/\(name)"
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("\(path) is missing: install Debian's mricron-data package (`make data-deps`)")
        }
        return path
    }

    /// The two 181x217x181 templates, read once for all tests (unoptimized test builds are slow).
    static var cache: [String: NiftiImage] = [:]
    func templateImage(_ name: String) throws -> NiftiImage {
        if let image = Self.cache[name] { return image }
        let image = try NiftiImage(contentsOf: try template(name))
        Self.cache[name] = image
        return image
    }

    /// Files in the test folder, so tests can see that no temporary file was left behind.
    func folderContents() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
    }

    func assertThrows(_ expression: @autoclosure () throws -> Any, mentioning words: [String],
                      file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expression()
            XCTFail("no error thrown; expected one mentioning \(words)", file: file, line: line)
        } catch {
            let text = "\(error)"
            for word in words where !text.contains(word) {
                XCTFail("error '\(text)' does not mention '\(word)'", file: file, line: line)
            }
        }
    }

    /// Writes a NIfTI-1 file with libnifti's own writer (`nifti_image_write`), independent of ours.
    func writeWithLibnifti(_ path: String, dims: [Int64], datatype: Int32, data: [UInt8],
                           slope: Double = 1, intercept: Double = 0, pixdim: [Double]? = nil) {
        var d = [Int64(dims.count)] + dims + [Int64](repeating: 1, count: 7 - dims.count)
        let nim = nifti_make_new_nim(&d, datatype, 0)!
        nim.pointee.scl_slope = slope
        nim.pointee.scl_inter = intercept
        if let pixdim {
            withUnsafeMutableBytes(of: &nim.pointee.pixdim) { raw in
                let p = raw.bindMemory(to: Double.self)
                for (i, v) in pixdim.enumerated() { p[i + 1] = v }
            }
            (nim.pointee.dx, nim.pointee.dy, nim.pointee.dz) = (pixdim[0], pixdim[1], pixdim[2])
        }
        nim.pointee.nifti_type = NIFTI_FTYPE_NIFTI1_1
        nim.pointee.fname = strdup(path)
        nim.pointee.iname = strdup(path)
        data.withUnsafeBytes { raw in
            nim.pointee.data = UnsafeMutableRawPointer(mutating: raw.baseAddress!)
            nifti_image_write(nim)
            nim.pointee.data = nil
        }
        nifti_image_free(nim)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path), "libnifti did not write \(path)")
    }

    /// A rotated (about all three axes), shifted, anisotropic 0.7 x 1.3 x 2.5 mm affine.
    func obliqueAffine() -> [[Double]] {
        let (a, b, c) = (0.3, -0.2, 0.45)
        let rx: [[Double]] = [[1, 0, 0], [0, cos(a), -sin(a)], [0, sin(a), cos(a)]]
        let ry: [[Double]] = [[cos(b), 0, sin(b)], [0, 1, 0], [-sin(b), 0, cos(b)]]
        let rz: [[Double]] = [[cos(c), -sin(c), 0], [sin(c), cos(c), 0], [0, 0, 1]]
        func mul(_ p: [[Double]], _ q: [[Double]]) -> [[Double]] {
            (0..<3).map { i in (0..<3).map { j in (0..<3).map { p[i][$0] * q[$0][j] }.reduce(0, +) } }
        }
        let r = mul(rz, mul(ry, rx))
        let spacing = [0.7, 1.3, 2.5], offset = [-41.25, 17.5, -60.125]
        return (0..<3).map { i in (0..<3).map { r[i][$0] * spacing[$0] } + [offset[i]] }
    }

    // MARK: - Real data

    func testReadsColinTemplate() throws {
        let image = try templateImage("ch2.nii.gz")
        XCTAssertEqual([image.nx, image.ny, image.nz], [181, 217, 181])
        XCTAssertEqual(image.voxels.count, 181 * 217 * 181)
        XCTAssertEqual(image.spacing.x, 1); XCTAssertEqual(image.spacing.y, 1); XCTAssertEqual(image.spacing.z, 1)
        XCTAssertEqual(image.datatype, .uint8)
        XCTAssertEqual(image.geometry.sformCode, NIFTI_XFORM_MNI_152)
        XCTAssertEqual(image.geometry.stoXYZ[0], [1, 0, 0, -90])
        XCTAssertEqual(image.sourcePath, "\(Self.templates)/ch2.nii.gz")
        XCTAssertEqual(image.nonFiniteCount, 0)
        var low = Float.infinity, high = -Float.infinity
        image.voxels.withUnsafeBufferPointer { v in for x in v { low = min(low, x); high = max(high, x) } }
        XCTAssertEqual(low, 0)
        XCTAssertTrue(high > 200 && high <= 255, "max \(high)")
        // Air around the head is dark, the middle of the brain is not.
        XCTAssertEqual(image.voxels[0], 0)
        XCTAssertGreaterThan(image.voxels[90 + 181 * (108 + 217 * 90)], 20)
    }

    func testReadsAALAtlasLabels() throws {
        let image = try templateImage("aal.nii.gz")
        XCTAssertEqual([image.nx, image.ny, image.nz], [181, 217, 181])
        var seen = [Bool](repeating: false, count: 256), others = 0
        image.voxels.withUnsafeBufferPointer { v in
            for x in v {
                if x >= 0, x <= 255, x == x.rounded() { seen[Int(x)] = true } else { others += 1 }
            }
        }
        XCTAssertEqual(others, 0)
        XCTAssertEqual(seen.lastIndex(of: true), 116)
        for label in [0, 1, 37, 38, 41, 42, 71, 90, 116] { XCTAssertTrue(seen[label], "label \(label) missing") }
    }

    // MARK: - Geometry round trips

    func testLabelMapLikeColinKeepsGeometryExactly() throws {
        // The AAL atlas's labels, written on the Colin template's grid.
        let reference = try templateImage("ch2.nii.gz"), atlas = try templateImage("aal.nii.gz")
        let labels = [Int32](unsafeUninitializedCapacity: atlas.voxels.count) { out, count in
            atlas.voxels.withUnsafeBufferPointer { v in for i in v.indices { out[i] = Int32(v[i]) } }
            count = atlas.voxels.count
        }
        let path = "\(folder)/labels.nii.gz"
        try NiftiImage.writeLabelMap(labels, like: reference, to: path)
        let back = try NiftiImage(contentsOf: path)
        XCTAssertEqual(back.geometry, reference.geometry)   // dims, pixdim, codes, matrices: exact
        XCTAssertEqual(back.datatype, .uint8)
        XCTAssertTrue(back.voxels == atlas.voxels)
        XCTAssertEqual(try folderContents(), ["labels.nii.gz"])
        // The header marks a label map and its label range.
        let nim = nifti_image_read(path, 0)!
        defer { nifti_image_free(nim) }
        XCTAssertEqual(nim.pointee.intent_code, NIFTI_INTENT_LABEL)
        XCTAssertEqual([nim.pointee.cal_min, nim.pointee.cal_max, nim.pointee.scl_slope, nim.pointee.scl_inter], [0, 116, 1, 0])
    }

    func testLabelMapKeepsQformAndUnits() throws {
        // Colin has no qform; this reference has both transforms, differing, with their own codes.
        var geometry = try NiftiGeometry(nx: 4, ny: 3, nz: 2, affine: obliqueAffine(), code: NIFTI_XFORM_SCANNER_ANAT)
        geometry.stoXYZ[1][3] += 10
        geometry.sformCode = NIFTI_XFORM_TALAIRACH
        geometry.timeUnits = NIFTI_UNITS_SEC
        geometry.pixdim[4] = 2.5
        let reference = try NiftiImage(voxels: [Float](repeating: 0, count: 24), geometry: geometry)
        for name in ["l.nii", "l.nii.gz"] {
            try NiftiImage.writeLabelMap((0..<24).map { UInt16($0 * 20) }, like: reference, to: "\(folder)/\(name)")
            let back = try NiftiImage(contentsOf: "\(folder)/\(name)")
            XCTAssertEqual(back.geometry, geometry)
            XCTAssertEqual(back.geometry.xyztUnits, NIFTI_UNITS_MM | NIFTI_UNITS_SEC)
            XCTAssertEqual(back.datatype, .int16)
            XCTAssertEqual(back.voxels, (0..<24).map { Float($0 * 20) })
        }
    }

    func testLabelMapUsesSmallestType() throws {
        let geometry = try NiftiGeometry(nx: 2, ny: 2, nz: 1, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let reference = try NiftiImage(voxels: [0, 0, 0, 0], geometry: geometry)
        let cases: [([Int], NiftiImage.DataType)] = [
            ([0, 1, 255, 3], .uint8), ([0, 256, 2, 32767], .int16), ([-1, 0, 1, 2], .int16),
            ([0, 32768, 5, 1], .int32), ([0, -40000, 70000, 1], .int32),
        ]
        for (labels, expected) in cases {
            let path = "\(folder)/l.nii"
            try NiftiImage.writeLabelMap(labels, like: reference, to: path)
            let back = try NiftiImage(contentsOf: path)
            XCTAssertEqual(back.datatype, expected, "\(labels)")
            XCTAssertEqual(back.voxels, labels.map(Float.init))
        }
        assertThrows(try NiftiImage.writeLabelMap([0, 1, 2, Int(Int32.max) + 1], like: reference, to: "\(folder)/l.nii"), mentioning: ["int32"])
        assertThrows(try NiftiImage.writeLabelMap([0, 1, 2], like: reference, to: "\(folder)/l.nii"), mentioning: ["3 labels"])
    }

    func testObliqueAnisotropicFloat32RoundTrip() throws {
        let geometry = try NiftiGeometry(nx: 5, ny: 4, nz: 3, affine: obliqueAffine(), code: NIFTI_XFORM_ALIGNED_ANAT)
        XCTAssertEqual(geometry.spacing.x, 0.7, accuracy: 1e-6)
        XCTAssertEqual(geometry.spacing.y, 1.3, accuracy: 1e-6)
        XCTAssertEqual(geometry.spacing.z, 2.5, accuracy: 1e-6)
        // The qform (a rotation plus spacing) reproduces this rotation-only affine.
        for r in 0..<4 { for c in 0..<4 { XCTAssertEqual(geometry.qtoXYZ[r][c], geometry.stoXYZ[r][c], accuracy: 1e-5) } }
        let voxels = (0..<60).map { Float($0) * 0.37 - 5.5 }
        let image = try NiftiImage(voxels: voxels, geometry: geometry)
        for name in ["oblique.nii", "oblique.nii.gz"] {
            try image.write(to: "\(folder)/\(name)")
            let back = try NiftiImage(contentsOf: "\(folder)/\(name)")
            XCTAssertEqual(back.geometry, geometry)
            XCTAssertEqual(back.datatype, .float32)
            XCTAssertEqual(back.voxels, voxels)
            // Voxel (x, y, z) is element x + nx * (y + ny * z).
            XCTAssertEqual(back.voxels[3 + 5 * (2 + 4 * 1)], voxels[33])
        }
    }

    func testNifti2RoundTripKeepsDoublePrecision() throws {
        var affine = obliqueAffine()
        affine[0][3] = -41.123456789012345   // not representable as float32
        let geometry = try NiftiGeometry(nx: 3, ny: 2, nz: 4, affine: affine, niftiVersion: 2)
        let image = try NiftiImage(voxels: (0..<24).map(Float.init), geometry: geometry)
        for name in ["v2.nii", "v2.nii.gz"] {
            let path = "\(folder)/\(name)"
            try image.write(to: path)
            let back = try NiftiImage(contentsOf: path)
            XCTAssertEqual(back.geometry.niftiVersion, 2)
            XCTAssertEqual(back.geometry, geometry)
            XCTAssertEqual(back.geometry.stoXYZ[0][3], -41.123456789012345)
            XCTAssertEqual(back.voxels, image.voxels)
        }
        // A standard single-file NIfTI-2 header: sizeof_hdr 540, magic "n+2\0\r\n\x1a\n", data at 544.
        let bytes = try AtomicFile.read("\(folder)/v2.nii")
        XCTAssertEqual(bytes.count, 544 + 24 * 4)
        XCTAssertEqual(Array(bytes[0..<4]), [0x1C, 0x02, 0, 0])
        XCTAssertEqual(Array(bytes[4..<12]), [0x6E, 0x2B, 0x32, 0x00, 0x0D, 0x0A, 0x1A, 0x0A])
        // libnifti reads it as NIfTI-2 (its nifti_type says 1 for NIfTI-2 files; the header version is right).
        var version: Int32 = 0
        let header = nifti_read_header("\(folder)/v2.nii", &version, 1)
        XCTAssertNotNil(header)
        XCTAssertEqual(version, 2)
        free(header)
    }

    // MARK: - Datatypes, scaling, byte order

    func testEveryDatatypeWithSlopeAndIntercept() throws {
        func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        let cases: [(Int32, NiftiImage.DataType, [UInt8], [Double])] = [
            (NIFTI_TYPE_UINT8, .uint8, bytes([UInt8]([0, 1, 200, 255])), [0, 1, 200, 255]),
            (NIFTI_TYPE_INT8, .int8, bytes([Int8]([-128, -1, 0, 127])), [-128, -1, 0, 127]),
            (NIFTI_TYPE_INT16, .int16, bytes([Int16]([-32768, -7, 300, 32767])), [-32768, -7, 300, 32767]),
            (NIFTI_TYPE_UINT16, .uint16, bytes([UInt16]([0, 7, 40000, 65535])), [0, 7, 40000, 65535]),
            (NIFTI_TYPE_INT32, .int32, bytes([Int32]([-100000, -1, 0, 1 << 20])), [-100000, -1, 0, 1_048_576]),
            (NIFTI_TYPE_UINT32, .uint32, bytes([UInt32]([0, 1, 3_000_000, 1 << 24])), [0, 1, 3_000_000, 16_777_216]),
            (NIFTI_TYPE_FLOAT32, .float32, bytes([Float]([-1.5, 0, 0.25, 1e6])), [-1.5, 0, 0.25, 1e6]),
            (NIFTI_TYPE_FLOAT64, .float64, bytes([Double]([-2.75, 0, 1e-3, 12345.5])), [-2.75, 0, 1e-3, 12345.5]),
        ]
        XCTAssertEqual(Set(cases.map(\.1)), Set(NiftiImage.DataType.allCases))
        for (code, type, data, values) in cases {
            for ext in [".nii", ".nii.gz"] {
                let path = "\(folder)/\(type)\(ext)"
                writeWithLibnifti(path, dims: [2, 2, 1], datatype: code, data: data, slope: 2, intercept: 3)
                let image = try NiftiImage(contentsOf: path)
                XCTAssertEqual(image.datatype, type)
                XCTAssertEqual(image.voxels, values.map { Float($0 * 2 + 3) }, "\(type)\(ext)")
                // Slope 0 means no scaling at all (the intercept is ignored too).
                writeWithLibnifti(path, dims: [2, 2, 1], datatype: code, data: data, slope: 0, intercept: 3)
                XCTAssertEqual(try NiftiImage(contentsOf: path).voxels, values.map { Float($0) }, "\(type)\(ext) unscaled")
            }
        }
    }

    func testBigEndianFile() throws {
        // A NIfTI-1 header made by libnifti and swapped by libnifti, followed by big-endian int16.
        var dims: [Int64] = [3, 2, 2, 1, 1, 1, 1, 1]
        let nim = nifti_make_new_nim(&dims, NIFTI_TYPE_INT16, 0)!
        nim.pointee.scl_slope = 0.5
        nim.pointee.iname_offset = 352
        withUnsafeMutableBytes(of: &nim.pointee.pixdim) { raw in
            let p = raw.bindMemory(to: Double.self)
            (p[1], p[2], p[3]) = (0.75, 1.5, 3)
        }
        (nim.pointee.dx, nim.pointee.dy, nim.pointee.dz) = (0.75, 1.5, 3)
        nim.pointee.sform_code = NIFTI_XFORM_SCANNER_ANAT
        nim.pointee.sto_xyz = NiftiGeometry.dmat44([[0, 0.75, 0, -12], [-1.5, 0, 0, 0], [0, 0, 3, 0]])
        var header = nifti_1_header()
        XCTAssertEqual(nifti_convert_nim2n1hdr(nim, &header), 0)
        nifti_image_free(nim)
        swap_nifti_header(&header, 1)
        var bytes = withUnsafeBytes(of: header) { Array($0) } + [0, 0, 0, 0]
        for v: Int16 in [-300, 2, 1000, -1] { withUnsafeBytes(of: v.bigEndian) { bytes += $0 } }
        let path = "\(folder)/big.nii"
        try AtomicFile.write(bytes, to: path)
        let image = try NiftiImage(contentsOf: path)
        XCTAssertEqual(image.voxels, [-150, 1, 500, -0.5])
        XCTAssertEqual(image.datatype, .int16)
        XCTAssertEqual(image.geometry.pixdim[1...3], [0.75, 1.5, 3])
        XCTAssertEqual(image.geometry.sformCode, NIFTI_XFORM_SCANNER_ANAT)
        XCTAssertEqual(image.geometry.stoXYZ[0], [0, 0.75, 0, -12])
        XCTAssertEqual(image.geometry.stoXYZ[1], [-1.5, 0, 0, 0])
    }

    func testNonFiniteVoxelsAreCountedNotHidden() throws {
        // libnifti's own reader replaces NaN and Inf by 0; this reader keeps them and counts them.
        let geometry = try NiftiGeometry(nx: 2, ny: 2, nz: 2, affine: [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]])
        let voxels: [Float] = [1, .nan, 3, .infinity, -.infinity, 6, 7, 8]
        try NiftiImage(voxels: voxels, geometry: geometry).write(to: "\(folder)/nan.nii.gz")
        let back = try NiftiImage(contentsOf: "\(folder)/nan.nii.gz")
        XCTAssertEqual(back.nonFiniteCount, 3)
        XCTAssertTrue(back.voxels[1].isNaN)
        XCTAssertEqual(back.voxels[3], .infinity)
    }

    func testConcatenatedGzipMembersAndTrailingBytes() throws {
        // `cat a.gz b.gz` (or pigz) output is one gzip file; bytes after the last member are ignored.
        let geometry = try NiftiGeometry(nx: 4, ny: 4, nz: 4, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let image = try NiftiImage(voxels: (0..<64).map { Float($0) / 4 }, geometry: geometry)
        try image.write(to: "\(folder)/plain.nii")
        let plain = try AtomicFile.read("\(folder)/plain.nii")
        let path = "\(folder)/members.nii.gz"
        for (part, mode) in [(plain[0..<500], "wb"), (plain[500...], "ab")] {
            let file = gzopen(path, mode)!
            _ = Array(part).withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
            XCTAssertEqual(gzclose(file), Z_OK)
        }
        XCTAssertEqual(try NiftiImage(contentsOf: path).voxels, image.voxels)
        try AtomicFile.write(try AtomicFile.read(path) + [0, 0, 0, 0, 7], to: path)
        XCTAssertEqual(try NiftiImage(contentsOf: path).voxels, image.voxels)
    }

    func testFourDWithOneVolumeIsAccepted() throws {
        let path = "\(folder)/one-volume.nii"
        writeWithLibnifti(path, dims: [2, 3, 2, 1], datatype: NIFTI_TYPE_UINT8, data: Array(0..<12))
        let image = try NiftiImage(contentsOf: path)
        XCTAssertEqual([image.nx, image.ny, image.nz], [2, 3, 2])
        XCTAssertEqual(image.voxels, (0..<12).map(Float.init))
    }

    // MARK: - Errors

    func testTruncatedFilesAreErrors() throws {
        let whole = try AtomicFile.read(try template("ch2.nii.gz"))
        let gz = "\(folder)/half.nii.gz"
        try AtomicFile.write(Array(whole[0..<(whole.count / 2)]), to: gz)
        assertThrows(try NiftiImage(contentsOf: gz), mentioning: ["half.nii.gz", "truncated"])
        // Only the gzip trailer (CRC and length) missing: the voxels are all there, but the file is cut.
        try AtomicFile.write(Array(whole[0..<(whole.count - 4)]), to: gz)
        assertThrows(try NiftiImage(contentsOf: gz), mentioning: ["truncated"])
        // A corrupted byte in the compressed stream.
        var flipped = whole
        flipped[whole.count / 2] ^= 0x5A
        try AtomicFile.write(flipped, to: gz)
        assertThrows(try NiftiImage(contentsOf: gz), mentioning: ["corrupt"])

        let nii = "\(folder)/short.nii"
        writeWithLibnifti(nii, dims: [4, 4, 4], datatype: NIFTI_TYPE_INT16, data: [UInt8](repeating: 7, count: 128))
        let full = try AtomicFile.read(nii)
        try AtomicFile.write(Array(full[0..<(full.count - 10)]), to: nii)
        assertThrows(try NiftiImage(contentsOf: nii), mentioning: ["short.nii", "truncated", "118", "128"])
    }

    func testNotNiftiIsAnError() throws {
        var rng = SystemRandomNumberGenerator()
        let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for name in ["noise.nii", "noise.nii.gz"] {
            try AtomicFile.write(noise, to: "\(folder)/\(name)")
            assertThrows(try NiftiImage(contentsOf: "\(folder)/\(name)"), mentioning: [name, "not a readable NIfTI"])
        }
        try AtomicFile.write([], to: "\(folder)/empty.nii")
        assertThrows(try NiftiImage(contentsOf: "\(folder)/empty.nii"), mentioning: ["not a readable NIfTI"])
        assertThrows(try NiftiImage(contentsOf: "\(folder)/image.hdr"), mentioning: [".nii or .nii.gz"])
        assertThrows(try NiftiImage(contentsOf: folder + "/"), mentioning: [".nii or .nii.gz"])
    }

    func testMissingFileIsAnError() {
        assertThrows(try NiftiImage(contentsOf: "\(folder)/missing.nii.gz"), mentioning: ["missing.nii.gz", "No such file"])
        // libnifti would quietly open "present.nii.gz" when asked for "present.nii"; this reader does not.
        writeWithLibnifti("\(folder)/present.nii.gz", dims: [2, 2, 2], datatype: NIFTI_TYPE_UINT8, data: Array(0..<8))
        assertThrows(try NiftiImage(contentsOf: "\(folder)/present.nii"), mentioning: ["No such file"])
    }

    func testWrongDimensionalityIsAnError() throws {
        let cases: [([Int64], [String])] = [
            ([4, 3], ["2-D", "4x3"]),
            ([4, 3, 2, 3], ["3 volumes", "4x3x2x3"]),
            ([2, 2, 2, 1, 2], ["5-D", "2x2x2x1x2"]),
        ]
        for (dims, words) in cases {
            let path = "\(folder)/d\(dims.count).nii"
            writeWithLibnifti(path, dims: dims, datatype: NIFTI_TYPE_UINT8, data: [UInt8](repeating: 1, count: Int(dims.reduce(1, *))))
            assertThrows(try NiftiImage(contentsOf: path), mentioning: words)
        }
    }

    func testHugeDimensionsAreRefusedBeforeReading() throws {
        // Headers claiming far more voxels than the file holds (NIfTI-1: 32767^3; NIfTI-2: 2^40 x 2^40 x 2).
        writeWithLibnifti("\(folder)/huge1.nii", dims: [2, 2, 2], datatype: NIFTI_TYPE_UINT8, data: Array(0..<8))
        var bytes = try AtomicFile.read("\(folder)/huge1.nii")
        for axis in 1...3 { withUnsafeBytes(of: Int16(32767)) { bytes.replaceSubrange((40 + 2 * axis)..<(42 + 2 * axis), with: $0) } }
        try AtomicFile.write(bytes, to: "\(folder)/huge1.nii")
        assertThrows(try NiftiImage(contentsOf: "\(folder)/huge1.nii"), mentioning: ["32767x32767x32767", "more than"])

        let geometry = try NiftiGeometry(nx: 2, ny: 2, nz: 2, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], niftiVersion: 2)
        try NiftiImage(voxels: [Float](repeating: 1, count: 8), geometry: geometry).write(to: "\(folder)/huge2.nii.gz")
        try AtomicFile.write(try AtomicFile.read("\(folder)/huge2.nii.gz"), to: "\(folder)/copy.nii.gz")
        let reader = try InflatingReader(path: "\(folder)/huge2.nii.gz")
        var plain = [UInt8](repeating: 0, count: 1024)
        let n = try plain.withUnsafeMutableBytes { try reader.read(into: $0) }
        plain.removeSubrange(n...)
        XCTAssertEqual(n, 544 + 32)
        for axis in 1...2 { withUnsafeBytes(of: Int64(1) << 40) { plain.replaceSubrange((16 + 8 * axis)..<(24 + 8 * axis), with: $0) } }
        try AtomicFile.write(plain, to: "\(folder)/huge2.nii")
        assertThrows(try NiftiImage(contentsOf: "\(folder)/huge2.nii"), mentioning: ["huge2.nii"])

        // Within the limit but far beyond a small compressed file's contents: 1024^3 float32.
        writeWithLibnifti("\(folder)/claims.nii", dims: [2, 2, 2], datatype: NIFTI_TYPE_FLOAT32, data: [UInt8](repeating: 0, count: 32))
        bytes = try AtomicFile.read("\(folder)/claims.nii")
        for axis in 1...3 { withUnsafeBytes(of: Int16(1024)) { bytes.replaceSubrange((40 + 2 * axis)..<(42 + 2 * axis), with: $0) } }
        let file = gzopen("\(folder)/claims.nii.gz", "wb")!
        _ = bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
        XCTAssertEqual(gzclose(file), Z_OK)
        assertThrows(try NiftiImage(contentsOf: "\(folder)/claims.nii.gz"), mentioning: ["truncated", "32 of the 4294967296 bytes"])
    }

    func testUnsupportedDatatypesAreErrors() {
        let cases: [(Int32, Int, String)] = [(NIFTI_TYPE_RGB24, 3, "RGB24"), (NIFTI_TYPE_COMPLEX64, 8, "COMPLEX64"),
                                             (NIFTI_TYPE_INT64, 8, "INT64")]
        for (code, size, name) in cases {
            let path = "\(folder)/\(name).nii"
            writeWithLibnifti(path, dims: [2, 2, 2], datatype: code, data: [UInt8](repeating: 0, count: 8 * size))
            assertThrows(try NiftiImage(contentsOf: path), mentioning: [name, "not supported"])
        }
    }

    func testWorldCoordinatesPreferSformThenQformThenSpacing() throws {
        var g = try NiftiGeometry(nx: 4, ny: 4, nz: 4, affine: [[-2, 0, 0, 10], [0, 3, 0, -5], [0, 0, 1, 7]])
        g.stoXYZ[0][3] = 11   // the sform and qform now differ in the x offset
        XCTAssertEqual(g.worldMM(ofVoxel: SIMD3(1, 2, 3)), SIMD3(9, 1, 10), "sform")
        g.sformCode = 0
        XCTAssertEqual(g.worldMM(ofVoxel: SIMD3(1, 2, 3)), SIMD3(8, 1, 10), "qform")
        g.qformCode = 0
        XCTAssertEqual(g.worldMM(ofVoxel: SIMD3(1, 2, 3)), SIMD3(2, 6, 3), "index x spacing")
        g.xyzUnits = NIFTI_UNITS_METER
        XCTAssertEqual(g.worldMM(ofVoxel: SIMD3(1, 2, 3)), SIMD3(2000, 6000, 3000), "metres to mm")
    }

    func testBadSpacingIsAnError() throws {
        // libnifti writes |pixdim| and reads a zero or NaN spacing as 1, so the header is patched here.
        for (name, axis, value) in [("zero", 2, Float(0)), ("negative", 3, -2), ("nan", 1, .nan)] {
            let path = "\(folder)/\(name).nii"
            writeWithLibnifti(path, dims: [2, 2, 2], datatype: NIFTI_TYPE_UINT8, data: Array(0..<8))
            var bytes = try AtomicFile.read(path)
            withUnsafeBytes(of: value) { bytes.replaceSubrange((76 + 4 * axis)..<(80 + 4 * axis), with: $0) }
            try AtomicFile.write(bytes, to: path)
            assertThrows(try NiftiImage(contentsOf: path), mentioning: ["spacing", "positive", name == "nan" ? "nan" : "\(value)"])
        }
    }

    // MARK: - Writing safely

    func testWritingOverTheInputIsRefused() throws {
        let input = "\(folder)/input.nii"
        writeWithLibnifti(input, dims: [2, 2, 2], datatype: NIFTI_TYPE_INT16, data: [UInt8](repeating: 1, count: 16))
        let before = try AtomicFile.read(input)
        let image = try NiftiImage(contentsOf: input)
        let labels = [Int](repeating: 1, count: 8)
        // The same file under another spelling, and through a symbolic link.
        try FileManager.default.createSymbolicLink(atPath: "\(folder)/link.nii", withDestinationPath: input)
        for path in [input, "\(folder)/../\((folder as NSString).lastPathComponent)/input.nii", "\(folder)/link.nii"] {
            assertThrows(try NiftiImage.writeLabelMap(labels, like: image, to: path), mentioning: ["refusing", "input"])
            assertThrows(try image.write(to: path), mentioning: ["refusing"])
        }
        XCTAssertEqual(try AtomicFile.read(input), before)
        XCTAssertEqual(try folderContents(), ["input.nii", "link.nii"])
        // Any other name is fine, and replacing an existing output is too.
        try NiftiImage.writeLabelMap(labels, like: image, to: "\(folder)/out.nii")
        try NiftiImage.writeLabelMap(labels.map { $0 + 1 }, like: image, to: "\(folder)/out.nii")
        XCTAssertEqual(try NiftiImage(contentsOf: "\(folder)/out.nii").voxels, [Float](repeating: 2, count: 8))
    }

    func testFailedWritesLeaveNothingBehind() throws {
        let geometry = try NiftiGeometry(nx: 2, ny: 2, nz: 2, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        let image = try NiftiImage(voxels: (0..<8).map(Float.init), geometry: geometry)
        assertThrows(try image.write(to: "\(folder)/no/such/folder/out.nii.gz"), mentioning: ["out.nii.gz", "No such file"])
        assertThrows(try image.write(to: "\(folder)/out.img"), mentioning: [".nii or .nii.gz"])
        try FileManager.default.createDirectory(atPath: "\(folder)/dir.nii", withIntermediateDirectories: false)
        assertThrows(try image.write(to: "\(folder)/dir.nii"), mentioning: ["folder"])
        XCTAssertEqual(try folderContents(), ["dir.nii"])

        // A failed write leaves an existing output as it was.
        try image.write(to: "\(folder)/out.nii.gz")
        let before = try AtomicFile.read("\(folder)/out.nii.gz")
        var broken = image
        broken.voxels.removeLast()
        assertThrows(try broken.write(to: "\(folder)/out.nii.gz"), mentioning: ["7 voxels"])
        assertThrows(try NiftiImage.writeLabelMap([1, 2], like: image, to: "\(folder)/out.nii.gz"), mentioning: ["2 labels"])
        XCTAssertEqual(try AtomicFile.read("\(folder)/out.nii.gz"), before)
        XCTAssertEqual(try folderContents(), ["dir.nii", "out.nii.gz"])

        // The temporary file sits beside the destination, hidden, with the destination's extension.
        let temporary = NiftiImage.temporaryName(for: "relative.NII.GZ")
        XCTAssertTrue(temporary.hasPrefix(".relative.partial-") && temporary.hasSuffix(".NII.GZ") && !temporary.contains("/"), temporary)
        let nested = NiftiImage.temporaryName(for: "/a/b.c/out.nii")
        XCTAssertTrue(nested.hasPrefix("/a/b.c/.out.partial-") && nested.hasSuffix(".nii"), nested)
    }

    func testGeometryValidation() {
        XCTAssertThrowsError(try NiftiGeometry(nx: 0, ny: 1, nz: 1, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
        XCTAssertThrowsError(try NiftiGeometry(nx: 1, ny: 1, nz: 1, affine: [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
        XCTAssertThrowsError(try NiftiGeometry(nx: 1, ny: 1, nz: 1, affine: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
        let geometry = try? NiftiGeometry(nx: 2, ny: 1, nz: 1, affine: [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        XCTAssertNotNil(geometry)
        if let geometry { XCTAssertThrowsError(try NiftiImage(voxels: [1], geometry: geometry)) }
    }
}
