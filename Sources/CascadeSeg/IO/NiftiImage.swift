import CNifti
import CZlib
import Foundation

/// A 3-D NIfTI volume (NIfTI-1 or NIfTI-2, `.nii` or `.nii.gz`) as float32 voxels plus the
/// geometry needed to write results with exactly the input's placement in space.
///
/// libnifti2 reads the header (and derives the qform matrix); the voxel bytes are read here
/// (`InflatingReader`), because libnifti silently replaces NaN and Inf voxels by 0 and, like
/// zlib's gzread, takes a gzip stream cut short after the voxels for a whole one. Writing
/// builds the header with libnifti, writes it and the voxels with zlib to a temporary file
/// beside the destination, reads that back, flushes it and renames it over the destination.
/// (libnifti's own `nifti_image_write` reports no errors, and in 3.0.1 cannot write NIfTI-2.)
///
/// Kept from the input header: the grid, pixdim, qform and sform with their codes, xyzt_units
/// and the NIfTI version. Not kept: intent, description, calibration range, slice timing,
/// toffset and extensions.
public struct NiftiImage: Sendable {
    /// On-disk voxel types this reader understands (the `NIFTI_TYPE_*` codes).
    public enum DataType: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case uint8 = 2, int16 = 4, int32 = 8, float32 = 16, float64 = 64, int8 = 256, uint16 = 512, uint32 = 768

        public var bytesPerVoxel: Int {
            switch self {
            case .uint8, .int8: return 1
            case .int16, .uint16: return 2
            case .int32, .uint32, .float32: return 4
            case .float64: return 8
            }
        }

        public var description: String {
            switch self {
            case .uint8: return "uint8"
            case .int8: return "int8"
            case .int16: return "int16"
            case .uint16: return "uint16"
            case .int32: return "int32"
            case .uint32: return "uint32"
            case .float32: return "float32"
            case .float64: return "float64"
            }
        }
    }

    /// Voxel values with scl_slope/scl_inter applied; index = x + nx * (y + ny * z).
    public var voxels: [Float]
    public var geometry: NiftiGeometry
    /// The datatype stored in the file read (float32 for images made in memory).
    public private(set) var datatype: DataType
    /// The file this image was read from (made absolute); writes refuse to replace it.
    public private(set) var sourcePath: String?

    /// Larger volumes are refused (8 GiB of float32), so a hostile header cannot ask for more.
    public static let maximumVoxelCount = 1 << 31

    public var nx: Int { geometry.nx }
    public var ny: Int { geometry.ny }
    public var nz: Int { geometry.nz }
    /// Voxel spacing in `geometry.xyzUnits` (normally millimetres).
    public var spacing: (x: Double, y: Double, z: Double) { geometry.spacing }

    /// How many voxels are NaN or infinite (counted on each call). NIfTI allows them in float
    /// data; whether to reject or replace them is the caller's decision.
    public var nonFiniteCount: Int {
        voxels.withUnsafeBufferPointer { v in
            var n = 0
            for x in v where !x.isFinite { n += 1 }
            return n
        }
    }

    /// An image made in memory, e.g. a resampled volume; `voxels.count` must match the grid.
    public init(voxels: [Float], geometry: NiftiGeometry) throws {
        if let problem = geometry.problem() { throw CascadeSegError.invalidInput("NIfTI geometry: \(problem)") }
        guard voxels.count == geometry.voxelCount else {
            throw CascadeSegError.invalidInput("\(voxels.count) voxels do not fill a \(geometry.nx)x\(geometry.ny)x\(geometry.nz) grid")
        }
        self.voxels = voxels
        self.geometry = geometry
        self.datatype = .float32
        self.sourcePath = nil
    }

    /// Reads a 3-D `.nii` or `.nii.gz` file (a 4-D file with one volume is accepted), converting
    /// uint8, int8, int16, uint16, int32, uint32, float32 and float64 voxels to Float with
    /// scl_slope/scl_inter applied (a slope of 0 means no scaling).
    public init(contentsOf path: String) throws {
        let compressed = try NiftiImage.checkedExtension(path)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw CascadeSegError.io("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw CascadeSegError.io("'\(path)' is not a regular file") }
        guard access(path, R_OK) == 0 else {
            throw CascadeSegError.io("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        let header = try Header(path: path)
        func fail(_ m: String) -> CascadeSegError { .invalidInput("'\(path)' \(m)") }

        guard let type = DataType(rawValue: header.datatype) else {
            let name = String(cString: nifti_datatype_string(header.datatype))
            throw fail("has datatype \(name) (\(header.datatype)), which is not supported; one of \(DataType.allCases.map(\.description).joined(separator: ", ")) is needed")
        }
        let ndim = Int(header.dim[0])
        let shown = header.dim[1...max(1, min(ndim, 7))].map(String.init).joined(separator: "x")
        guard ndim >= 3 else { throw fail("is a \(ndim)-D image (dims \(shown)); a 3-D volume is needed") }
        guard ndim <= 7, header.dim[1...3].allSatisfy({ $0 >= 1 }) else { throw fail("has invalid dims \(shown)") }
        if ndim >= 4, header.dim[4...ndim].contains(where: { $0 != 1 }) {
            throw fail(ndim == 4 || header.dim[5...ndim].allSatisfy({ $0 == 1 })
                ? "holds \(header.dim[4]) volumes (dims \(shown)); a single 3-D volume is needed"
                : "is a \(ndim)-D image (dims \(shown)); a 3-D volume is needed")
        }
        let geometry = header.geometry
        let s = [geometry.pixdim[1], geometry.pixdim[2], geometry.pixdim[3]]
        guard s.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw fail("has voxel spacing (pixdim 1-3) \(s.map { String($0) }.joined(separator: " x ")); it must be positive and finite")
        }
        let plane = geometry.nx.multipliedReportingOverflow(by: geometry.ny)
        let volume = plane.partialValue.multipliedReportingOverflow(by: geometry.nz)
        let count = volume.partialValue
        guard !plane.overflow, !volume.overflow, count <= NiftiImage.maximumVoxelCount else {
            throw fail("has \(shown) voxels, more than the \(NiftiImage.maximumVoxelCount) this reader accepts")
        }
        let byteCount = count * type.bytesPerVoxel
        if !compressed, Int(info.st_size) < header.offset + byteCount {
            throw fail("is truncated: it holds \(max(0, Int(info.st_size) - header.offset)) of the \(byteCount) bytes of voxel data its header describes")
        }

        let slope = header.slope != 0 && header.slope.isFinite ? header.slope : nil
        let intercept = slope == nil ? 0 : header.intercept
        // The array grows with the data actually read, so a compressed file whose header claims
        // billions of voxels fails at its end instead of reserving memory for all of them first.
        var voxels = [Float]()
        voxels.reserveCapacity(compressed ? min(count, 1 << 26) : count)
        var converted = [Float](repeating: 0, count: NiftiImage.chunkBytes / type.bytesPerVoxel)
        try NiftiImage.readVoxelBytes(path: path, offset: header.offset, byteCount: byteCount) { chunk in
            if header.swapped, type.bytesPerVoxel > 1 {
                nifti_swap_Nbytes(Int64(chunk.count / type.bytesPerVoxel), Int32(type.bytesPerVoxel), chunk.baseAddress!)
            }
            let n = chunk.count / type.bytesPerVoxel
            converted.withUnsafeMutableBufferPointer { out in
                NiftiImage.convert(UnsafeRawBufferPointer(chunk), type, into: out.baseAddress!, slope: slope, intercept: intercept)
                voxels.append(contentsOf: UnsafeBufferPointer(rebasing: out[0..<n]))
            }
        }
        self.voxels = voxels
        self.geometry = geometry
        self.datatype = type
        self.sourcePath = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    // MARK: - Writing

    /// Writes the voxels as float32 with this image's geometry, to `.nii` or `.nii.gz` (by the
    /// extension), atomically. Refuses to replace the file the image was read from.
    public func write(to path: String) throws {
        guard voxels.count == geometry.voxelCount else {
            throw CascadeSegError.invalidInput("\(voxels.count) voxels do not fill a \(nx)x\(ny)x\(nz) grid")
        }
        try voxels.withUnsafeBytes { raw in
            try NiftiImage.writeVolume(raw, datatype: .float32, geometry: geometry, intent: NIFTI_INTENT_NONE,
                                       calibration: (0, 0), description: "", to: path, protecting: sourcePath)
        }
    }

    /// Writes a label map (one label per voxel, in the reference's voxel order) with exactly the
    /// reference's geometry, in the smallest type that holds the labels: uint8 for 0...255, else
    /// int16, else int32. The header says NIFTI_INTENT_LABEL, slope 1, intercept 0, and
    /// cal_min/cal_max the label range. Atomic, like `write(to:)`; refuses to replace the
    /// reference's source file.
    public static func writeLabelMap<Label: BinaryInteger>(_ labels: [Label], like reference: NiftiImage, to path: String) throws {
        let geometry = reference.geometry
        guard labels.count == geometry.voxelCount else {
            throw CascadeSegError.invalidInput("\(labels.count) labels do not fill the reference's \(geometry.nx)x\(geometry.ny)x\(geometry.nz) grid")
        }
        // One generic pass to Int32, then plain loops.
        var outOfRange: Label? = nil
        let values = [Int32](unsafeUninitializedCapacity: labels.count) { out, initialized in
            labels.withUnsafeBufferPointer { source in
                for i in source.indices {
                    guard let v = Int32(exactly: source[i]) else { outOfRange = source[i]; return }
                    out[i] = v
                }
                initialized = source.count
            }
        }
        if let outOfRange { throw CascadeSegError.invalidInput("label \(outOfRange) does not fit in int32") }
        var lowest = Int32.max, highest = Int32.min
        values.withUnsafeBufferPointer { v in
            for x in v {
                if x < lowest { lowest = x }
                if x > highest { highest = x }
            }
        }
        func write(_ type: DataType, _ raw: UnsafeRawBufferPointer) throws {
            try writeVolume(raw, datatype: type, geometry: geometry, intent: NIFTI_INTENT_LABEL,
                            calibration: (Double(lowest), Double(highest)), description: "CascadeSeg label map",
                            to: path, protecting: reference.sourcePath)
        }
        if lowest >= 0 && highest <= 255 {
            let stored = [UInt8](unsafeUninitializedCapacity: values.count) { out, initialized in
                values.withUnsafeBufferPointer { v in for i in v.indices { out[i] = UInt8(truncatingIfNeeded: v[i]) } }
                initialized = values.count
            }
            try stored.withUnsafeBytes { try write(.uint8, $0) }
        } else if lowest >= -32768 && highest <= 32767 {
            let stored = [Int16](unsafeUninitializedCapacity: values.count) { out, initialized in
                values.withUnsafeBufferPointer { v in for i in v.indices { out[i] = Int16(truncatingIfNeeded: v[i]) } }
                initialized = values.count
            }
            try stored.withUnsafeBytes { try write(.int16, $0) }
        } else {
            try values.withUnsafeBytes { try write(.int32, $0) }
        }
    }

    // MARK: - Internals

    /// What the reader needs from a header, copied out of libnifti's image struct.
    struct Header {
        var dim: [Int64]
        var datatype: Int32
        var offset: Int
        var swapped: Bool
        var slope: Double
        var intercept: Double
        var geometry: NiftiGeometry

        init(path: String) throws {
            guard let nim = nifti_image_read(path, 0) else {
                throw CascadeSegError.invalidInput("'\(path)' is not a readable NIfTI file (libnifti could not read its header)")
            }
            defer { nifti_image_free(nim) }
            // libnifti 3.0.1 reports NIfTI-2 files as nifti_type 1; the header version comes below.
            switch nim.pointee.nifti_type {
            case NIFTI_FTYPE_NIFTI1_1, NIFTI_FTYPE_NIFTI2_1: break
            case NIFTI_FTYPE_ANALYZE:
                throw CascadeSegError.invalidInput("'\(path)' has an ANALYZE 7.5 header without the NIfTI magic; it is not NIfTI")
            case let other:
                throw CascadeSegError.invalidInput("'\(path)' is a \(other == NIFTI_FTYPE_ASCII ? "NIfTI-ASCII" : "two-file (.hdr/.img)") NIfTI file; single-file .nii or .nii.gz is needed")
            }
            dim = withUnsafeBytes(of: nim.pointee.dim) { Array($0.bindMemory(to: Int64.self)) }
            datatype = nim.pointee.datatype
            offset = Int(nim.pointee.iname_offset)
            swapped = nim.pointee.byteorder != nifti_short_order()
            slope = nim.pointee.scl_slope
            intercept = nim.pointee.scl_inter
            // libnifti reports a zero or NaN spacing as 1 and leaves pixdim[0] out, so pixdim
            // comes from the header as stored.
            var headerVersion: Int32 = 0
            guard let stored = nifti_read_header(path, &headerVersion, 0) else {
                throw CascadeSegError.invalidInput("'\(path)' is not a readable NIfTI file (libnifti could not read its header)")
            }
            defer { free(stored) }
            guard headerVersion == 1 || headerVersion == 2 else {
                throw CascadeSegError.invalidInput("'\(path)' has a NIfTI header of unknown version \(headerVersion)")
            }
            // nifti_read_header does not byte-swap; a foreign-order header shows in sizeof_hdr.
            let sizeofHeader = stored.load(as: Int32.self)
            if sizeofHeader != (headerVersion == 2 ? 540 : 348) { swap_nifti_header(stored, headerVersion) }
            let pixdim: [Double]
            if headerVersion == 2 {
                pixdim = withUnsafeBytes(of: stored.assumingMemoryBound(to: nifti_2_header.self).pointee.pixdim) {
                    Array($0.bindMemory(to: Double.self))
                }
            } else {
                pixdim = withUnsafeBytes(of: stored.assumingMemoryBound(to: nifti_1_header.self).pointee.pixdim) {
                    $0.bindMemory(to: Float.self).map(Double.init)
                }
            }
            let version = Int(headerVersion)
            geometry = NiftiGeometry(nim.pointee, niftiVersion: version)
            geometry.pixdim = pixdim
            guard offset >= (version == 1 ? 348 : 540) else {
                throw CascadeSegError.invalidInput("'\(path)' puts its voxel data at offset \(offset), inside its header")
            }
        }
    }

    /// Voxel bytes are read and converted this many at a time (a multiple of every voxel size).
    static let chunkBytes = 1 << 22

    /// Returns whether the name ends in `.nii.gz` (compressed) or `.nii`; throws for anything else.
    static func checkedExtension(_ path: String) throws -> Bool {
        let lower = path.lowercased()
        if lower.hasSuffix(".nii.gz") { return true }
        if lower.hasSuffix(".nii") { return false }
        throw CascadeSegError.invalidInput("'\(path)': a NIfTI file name must end in .nii or .nii.gz")
    }

    /// Streams exactly `byteCount` voxel bytes starting at `offset` to `body`, in chunks of whole
    /// voxels, then reads to the end of a gzip stream so that its checksum is verified. Throws if
    /// the file holds fewer bytes or its compressed data is corrupt.
    static func readVoxelBytes(path: String, offset: Int, byteCount: Int,
                               _ body: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        let reader = try InflatingReader(path: path)
        func truncated(_ held: Int) -> CascadeSegError {
            .invalidInput("'\(path)' is truncated: it holds \(held) of the \(byteCount) bytes of voxel data its header describes")
        }
        guard try reader.skip(offset) == offset else { throw truncated(0) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: min(max(byteCount, 1), chunkBytes), alignment: 16)
        defer { buffer.deallocate() }
        var done = 0
        while done < byteCount {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, byteCount - done)])
            let got = try reader.read(into: chunk)
            guard got == chunk.count else { throw truncated(done + got) }
            try body(chunk)
            done += got
        }
        try reader.finish()
    }

    /// Converts one chunk of native-order voxels to Float, scaling when `slope` is given. One plain
    /// loop per type (no closures), so that unoptimized builds stay quick too.
    static func convert(_ raw: UnsafeRawBufferPointer, _ type: DataType, into out: UnsafeMutablePointer<Float>,
                        slope: Double?, intercept: Double) {
        let a = slope ?? 1, b = slope == nil ? 0 : intercept
        switch type {
        case .uint8:
            let s = raw.bindMemory(to: UInt8.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .int8:
            let s = raw.bindMemory(to: Int8.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .int16:
            let s = raw.bindMemory(to: Int16.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .uint16:
            let s = raw.bindMemory(to: UInt16.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .int32:
            let s = raw.bindMemory(to: Int32.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .uint32:
            let s = raw.bindMemory(to: UInt32.self)
            for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
        case .float64:
            let s = raw.bindMemory(to: Double.self)
            for i in s.indices { out[i] = Float(s[i] * a + b) }
        case .float32:
            let s = raw.bindMemory(to: Float.self)
            if slope == nil {
                out.update(from: s.baseAddress!, count: s.count)
            } else {
                for i in s.indices { out[i] = Float(Double(s[i]) * a + b) }
            }
        }
    }

    /// Writes one volume of raw voxel bytes with `geometry`: header made by libnifti, file written
    /// through znzlib to a temporary name beside `path`, read back and compared, flushed, renamed.
    static func writeVolume(_ raw: UnsafeRawBufferPointer, datatype: DataType, geometry: NiftiGeometry, intent: Int32,
                            calibration: (Double, Double), description: String,
                            to path: String, protecting source: String?) throws {
        let compressed = try checkedExtension(path)
        if let problem = geometry.problem() { throw CascadeSegError.invalidInput("cannot write '\(path)': \(problem)") }
        guard raw.count == geometry.voxelCount * datatype.bytesPerVoxel else {
            throw CascadeSegError.invalidInput("cannot write '\(path)': \(raw.count) bytes of voxel data for a \(geometry.nx)x\(geometry.ny)x\(geometry.nz) \(datatype) grid")
        }
        if let source, sameFile(source, path) {
            throw CascadeSegError.io("refusing to write '\(path)': it is the input image '\(source)'")
        }
        var existing = stat()
        if stat(path, &existing) == 0, existing.st_mode & S_IFMT == S_IFDIR {
            throw CascadeSegError.io("cannot write '\(path)': it is a folder")
        }

        let header = try makeHeader(datatype: datatype, geometry: geometry, intent: intent,
                                    calibration: calibration, description: description)

        let temporary = temporaryName(for: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else {
            throw CascadeSegError.io("cannot write '\(path)': cannot create '\(temporary)': \(String(cString: strerror(errno)))")
        }
        close(fd)
        var finished = false
        defer { if !finished { unlink(temporary) } }

        // Header, the 4-byte extension marker (no extensions), voxels: gzip level 6, or plain ("T").
        guard let file = gzopen(temporary, compressed ? "wb6" : "wbT") else {
            throw CascadeSegError.io("cannot write '\(temporary)': \(String(cString: strerror(errno)))")
        }
        var failure: String? = nil
        func put(_ bytes: UnsafeRawBufferPointer) {
            var done = 0
            while failure == nil, done < bytes.count {
                let n = min(1 << 24, bytes.count - done)
                if gzwrite(file, bytes.baseAddress! + done, UInt32(n)) != n {
                    let systemError = String(cString: strerror(errno))
                    var code: Int32 = 0
                    let message = String(cString: gzerror(file, &code))
                    failure = "write failed: " + (code == Z_ERRNO ? systemError : message)
                }
                done += n
            }
        }
        header.withUnsafeBytes(put)
        [UInt8](repeating: 0, count: 4).withUnsafeBytes(put)
        if raw.count > 0 { put(raw) }
        let closed = gzclose(file)
        if closed != Z_OK, failure == nil {
            failure = "closing failed: " + (closed == Z_ERRNO ? String(cString: strerror(errno)) : "zlib error \(closed)")
        }
        if let failure { throw CascadeSegError.io("writing '\(path)' (as '\(temporary)'): \(failure)") }

        // Read back what landed on disk before it replaces anything.
        let written = try Header(path: temporary)
        guard written.datatype == datatype.rawValue,
              Array(written.dim[0...3]) == [3, Int64(geometry.nx), Int64(geometry.ny), Int64(geometry.nz)] else {
            throw CascadeSegError.io("writing '\(path)': the header read back from '\(temporary)' does not match what was written")
        }
        var compared = 0, same = true
        try readVoxelBytes(path: temporary, offset: written.offset, byteCount: raw.count) { chunk in
            if same, memcmp(chunk.baseAddress!, raw.baseAddress! + compared, chunk.count) != 0 { same = false }
            compared += chunk.count
        }
        guard same else { throw CascadeSegError.io("writing '\(path)': the voxels read back from '\(temporary)' differ from those written") }

        let syncFD = open(temporary, O_RDONLY)
        guard syncFD >= 0, fsync(syncFD) == 0 else {
            let message = String(cString: strerror(errno))
            if syncFD >= 0 { close(syncFD) }
            throw CascadeSegError.io("writing '\(path)': flushing '\(temporary)' failed: \(message)")
        }
        close(syncFD)
        guard rename(temporary, path) == 0 else {
            throw CascadeSegError.io("cannot move the finished file to '\(path)': \(String(cString: strerror(errno)))")
        }
        finished = true
    }

    /// A hidden name beside `path`, unique to this process and call, with `path`'s extension
    /// (`.nii` or `.nii.gz`, as spelled there).
    static func temporaryName(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let extensionLength = name.lowercased().hasSuffix(".nii.gz") ? 7 : name.lowercased().hasSuffix(".nii") ? 4 : 0
        return "\(folder).\(name.dropLast(extensionLength)).partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))\(name.suffix(extensionLength))"
    }

    /// The on-disk header bytes (348 for NIfTI-1, 540 for NIfTI-2), converted by libnifti.
    static func makeHeader(datatype: DataType, geometry: NiftiGeometry, intent: Int32,
                           calibration: (Double, Double), description: String) throws -> [UInt8] {
        // NIfTI-1 stores dims as int16; larger grids need NIfTI-2.
        let fitsVersion1 = [geometry.nx, geometry.ny, geometry.nz].allSatisfy { $0 <= Int(Int16.max) }
        let version = fitsVersion1 ? geometry.niftiVersion : 2
        // pixdim is written as stored in the geometry (libnifti would write |dx| and qfac), except
        // that pixdim[0] must carry the qform's qfac when there is a qform.
        var pixdim = geometry.pixdim
        if geometry.qformCode > 0, (pixdim[0] < 0) != (geometry.qfac < 0) { pixdim[0] = geometry.qfac < 0 ? -1 : 1 }
        var dims: [Int64] = [3, Int64(geometry.nx), Int64(geometry.ny), Int64(geometry.nz), 1, 1, 1, 1]
        guard let nim = nifti_make_new_nim(&dims, datatype.rawValue, 0) else {
            throw CascadeSegError.invalidInput("libnifti refused a \(geometry.nx)x\(geometry.ny)x\(geometry.nz) \(datatype) image")
        }
        defer { nifti_image_free(nim) }
        geometry.apply(to: &nim.pointee)
        nim.pointee.scl_slope = 1
        nim.pointee.scl_inter = 0
        nim.pointee.cal_min = calibration.0
        nim.pointee.cal_max = calibration.1
        nim.pointee.intent_code = intent
        withUnsafeMutableBytes(of: &nim.pointee.descrip) { field in
            field.initializeMemory(as: UInt8.self, repeating: 0)
            for (i, byte) in description.utf8.prefix(field.count - 1).enumerated() { field[i] = byte }
        }
        nim.pointee.byteorder = nifti_short_order()
        if version == 1 {
            nim.pointee.nifti_type = NIFTI_FTYPE_NIFTI1_1
            nim.pointee.iname_offset = 352
            var header = nifti_1_header()
            guard MemoryLayout<nifti_1_header>.size == 348, nifti_convert_nim2n1hdr(nim, &header) == 0 else {
                throw CascadeSegError.invalidInput("libnifti could not make a NIfTI-1 header for this image")
            }
            withUnsafeMutableBytes(of: &header.pixdim) { field in
                for (i, v) in pixdim.enumerated() { field.storeBytes(of: Float(v), toByteOffset: 4 * i, as: Float.self) }
            }
            return withUnsafeBytes(of: header) { Array($0) }
        } else {
            nim.pointee.nifti_type = NIFTI_FTYPE_NIFTI2_1
            nim.pointee.iname_offset = 544
            var header = nifti_2_header()
            guard MemoryLayout<nifti_2_header>.size == 540, nifti_convert_nim2n2hdr(nim, &header) == 0 else {
                throw CascadeSegError.invalidInput("libnifti could not make a NIfTI-2 header for this image")
            }
            withUnsafeMutableBytes(of: &header.pixdim) { field in
                for (i, v) in pixdim.enumerated() { field.storeBytes(of: v, toByteOffset: 8 * i, as: Double.self) }
            }
            // libnifti 3.0.1 leaves the magic as "ni2" (the two-file form) without its 4 check bytes.
            withUnsafeMutableBytes(of: &header.magic) { magic in
                for (i, byte) in [0x6E, 0x2B, 0x32, 0x00, 0x0D, 0x0A, 0x1A, 0x0A].enumerated() { magic[i] = UInt8(byte) }
            }
            header.vox_offset = 544
            return withUnsafeBytes(of: header) { Array($0) }
        }
    }

    /// Whether two paths name the same existing file (same device and inode).
    static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}
