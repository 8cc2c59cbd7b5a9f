// The C API declared in include/cascadeseg.h: `@_cdecl` functions over the Swift API
// (`Segmenter`). Only C types cross the boundary; handles are retained Swift objects passed as
// opaque pointers; every error becomes a status code plus a thread-local message.
import CascadeSeg
import Foundation

/// The version `cseg_version()` reports (and include/cascadeseg.h's CSEG_VERSION).
public let cascadeSegVersion = "0.1.0"

// MARK: - Status codes (include/cascadeseg.h)

let CSEG_OK: Int32 = 0
let CSEG_ERROR_ARGUMENT: Int32 = 1
let CSEG_ERROR_MODEL: Int32 = 2
let CSEG_ERROR_INPUT: Int32 = 3
let CSEG_ERROR_DEVICE: Int32 = 4
let CSEG_ERROR_OPENCL: Int32 = 5
let CSEG_ERROR_BUDGET: Int32 = 6
let CSEG_ERROR_IO: Int32 = 7
let CSEG_ERROR_CANCELLED: Int32 = 8
let CSEG_ERROR_BUFFER_TOO_SMALL: Int32 = 9
let CSEG_ERROR_INTERNAL: Int32 = 10

/// A C string per thread (freed with the thread, or when replaced): the last error and report.
final class ThreadLocalCString: @unchecked Sendable {
    private var key = pthread_key_t()

    init() {
        pthread_key_create(&key) { free($0) }
    }

    /// The current thread's string, "" when none was set.
    var pointer: UnsafePointer<CChar> {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        return UnsafePointer(CAPIState.empty)
    }

    var isSet: Bool { pthread_getspecific(key) != nil }

    func set(_ text: String) {
        free(pthread_getspecific(key))
        pthread_setspecific(key, strdup(text))
    }
}

enum CAPIState {
    static let lastError = ThreadLocalCString()
    static let lastReport = ThreadLocalCString()
    nonisolated(unsafe) static let empty: UnsafeMutablePointer<CChar> = strdup("")!
    nonisolated(unsafe) static let version: UnsafeMutablePointer<CChar> = strdup(cascadeSegVersion)!
}

/// Records `error` as the thread's last error and returns its status code.
func fail(_ error: Error) -> Int32 {
    let (code, message): (Int32, String)
    switch error as? CascadeSegError {
    case .invalidModel?, .invalidGraph?: code = CSEG_ERROR_MODEL
    case .invalidInput?: code = CSEG_ERROR_INPUT
    case .noDevice?: code = CSEG_ERROR_DEVICE
    case .openCL?, .kernelBuild?: code = CSEG_ERROR_OPENCL
    case .budget?: code = CSEG_ERROR_BUDGET
    case .io?: code = CSEG_ERROR_IO
    case .cancelled?: code = CSEG_ERROR_CANCELLED
    case .usage?: code = CSEG_ERROR_ARGUMENT
    case nil: code = CSEG_ERROR_INTERNAL
    }
    message = "\(error)"
    CAPIState.lastError.set(message)
    return code
}

func fail(_ code: Int32, _ message: String) -> Int32 {
    CAPIState.lastError.set(message)
    return code
}

/// Runs `body`, turning a thrown error into its status code.
func guarded(_ body: () throws -> Int32) -> Int32 {
    do { return try body() } catch { return fail(error) }
}

/// Copies `text` into a caller buffer: the (buffer, capacity, &length) convention.
func copyOut(_ text: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> Int32 {
    let utf8 = Array(text.utf8)
    length?.pointee = utf8.count
    if buffer == nil && capacity == 0 { return CSEG_OK }
    guard let buffer else { return fail(CSEG_ERROR_ARGUMENT, "the buffer is NULL but its capacity is \(capacity)") }
    guard capacity >= utf8.count + 1 else {
        return fail(CSEG_ERROR_BUFFER_TOO_SMALL, "the buffer holds \(capacity) bytes; \(utf8.count + 1) are needed (with the NUL)")
    }
    utf8.withUnsafeBufferPointer { src in
        buffer.withMemoryRebound(to: UInt8.self, capacity: capacity) { dst in
            dst.update(from: src.baseAddress!, count: src.count)
            dst[src.count] = 0
        }
    }
    return CSEG_OK
}

// MARK: - Handles

/// `cseg_model`: a model file and, per device, the `Segmenter` built on first use.
final class ModelHandle: @unchecked Sendable {
    let model: ModelFile
    private let lock = NSLock()
    private var segmenters: [Int: Segmenter] = [:]

    init(_ model: ModelFile) { self.model = model }

    func segmenter(device index: Int) throws -> Segmenter {
        let device = try ComputeDevice.select(index < 0 ? nil : String(index))
        return try lock.withLock {
            if let s = segmenters[device.index] { return s }
            let s = try Segmenter(model: model, device: device)
            segmenters[device.index] = s
            return s
        }
    }
}

/// `cseg_options`.
final class OptionsHandle: @unchecked Sendable {
    var memoryBudget: Int64 = 0
    var usePriors = true
    var device: Int32 = -1
    var mode: Int32 = 0
    var progress: (@convention(c) (UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Int32)? = nil
    var userData: UnsafeMutableRawPointer? = nil

    /// The Swift options, with the progress callback wired to a cancellation token.
    func segmentationOptions() throws -> SegmentationOptions {
        let mode: SegmentationMode?
        switch self.mode {
        case 0: mode = nil
        case 1: mode = .cascade
        case 2: mode = .singleStage
        case 3: mode = .stage1Only
        default: throw CascadeSegError.usage("mode \(self.mode) is not one of CSEG_MODE_AUTO, _CASCADE, _SINGLE_STAGE, _STAGE1_ONLY")
        }
        var options = SegmentationOptions(mode: mode, usePriors: usePriors, memoryBudget: memoryBudget > 0 ? Int(memoryBudget) : nil)
        if let progress {
            let token = CancellationToken()
            let user = UncheckedPointer(pointer: userData)
            options.cancellation = token
            options.progress = { line in
                if line.withCString({ progress($0, user.pointer) }) != 0 { token.cancel() }
            }
        }
        return options
    }
}

struct UncheckedPointer: @unchecked Sendable { var pointer: UnsafeMutableRawPointer? }

func model(_ handle: OpaquePointer?) throws -> ModelHandle {
    guard let handle else { throw CascadeSegError.usage("the model is NULL") }
    return Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

func options(_ handle: OpaquePointer?) -> OptionsHandle? {
    handle.map { Unmanaged<OptionsHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

func withOptions(_ handle: OpaquePointer?, _ body: (OptionsHandle) -> Void) -> Int32 {
    guard let o = options(handle) else { return fail(CSEG_ERROR_ARGUMENT, "the options are NULL") }
    body(o)
    return CSEG_OK
}

// MARK: - Functions

/// `cseg_version` (include/cascadeseg.h): The library's version string (static storage).
@_cdecl("cseg_version")
public func cseg_version() -> UnsafePointer<CChar> { UnsafePointer(CAPIState.version) }

/// `cseg_last_error` (include/cascadeseg.h): The calling thread's last failure message, or "".
@_cdecl("cseg_last_error")
public func cseg_last_error() -> UnsafePointer<CChar> { CAPIState.lastError.pointer }

/// `cseg_device_count` (include/cascadeseg.h): Stores the number of OpenCL devices in `count`.
@_cdecl("cseg_device_count")
public func cseg_device_count(_ count: UnsafeMutablePointer<Int32>?) -> Int32 {
    guard let count else { return fail(CSEG_ERROR_ARGUMENT, "count is NULL") }
    return guarded {
        count.pointee = Int32(try Segmenter.devices().count)
        return CSEG_OK
    }
}

/// `cseg_device_name` (include/cascadeseg.h): The name of device `index`, by the (buffer, capacity, &length) convention.
@_cdecl("cseg_device_name")
public func cseg_device_name(_ index: Int32, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                             _ length: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let devices = try Segmenter.devices()
        guard index >= 0, Int(index) < devices.count else {
            return fail(CSEG_ERROR_DEVICE, "device index \(index) does not exist (there are \(devices.count))")
        }
        return copyOut(devices[Int(index)].name, buffer, capacity, length)
    }
}

/// `cseg_model_load` (include/cascadeseg.h): Reads a `.cseg` file into a new model handle.
@_cdecl("cseg_model_load")
public func cseg_model_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let path, let out else { return fail(CSEG_ERROR_ARGUMENT, "path and model must not be NULL") }
    out.pointee = nil
    return guarded {
        let handle = ModelHandle(try ModelFile(contentsOf: String(cString: path)))
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return CSEG_OK
    }
}

/// `cseg_model_load_memory` (include/cascadeseg.h): Reads a `.cseg` model from `size` bytes at `bytes` (copied) into a new model handle.
@_cdecl("cseg_model_load_memory")
public func cseg_model_load_memory(_ bytes: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let bytes, let out else { return fail(CSEG_ERROR_ARGUMENT, "bytes and model must not be NULL") }
    out.pointee = nil
    return guarded {
        let copy = [UInt8](UnsafeRawBufferPointer(start: bytes, count: size))
        let handle = ModelHandle(try ModelFile(bytes: copy))
        out.pointee = OpaquePointer(Unmanaged.passRetained(handle).toOpaque())
        return CSEG_OK
    }
}

/// `cseg_model_free` (include/cascadeseg.h): Releases a model handle, its networks and their device memory (NULL: nothing).
@_cdecl("cseg_model_free")
public func cseg_model_free(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(handle)).release()
}

/// `cseg_options_create` (include/cascadeseg.h): A new options handle with the defaults.
@_cdecl("cseg_options_create")
public func cseg_options_create(_ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let out else { return fail(CSEG_ERROR_ARGUMENT, "options must not be NULL") }
    out.pointee = OpaquePointer(Unmanaged.passRetained(OptionsHandle()).toOpaque())
    return CSEG_OK
}

/// `cseg_options_free` (include/cascadeseg.h): Releases an options handle (NULL: nothing).
@_cdecl("cseg_options_free")
public func cseg_options_free(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<OptionsHandle>.fromOpaque(UnsafeRawPointer(handle)).release()
}

/// `cseg_options_set_memory_budget` (include/cascadeseg.h): The memory budget in bytes; 0 for none.
@_cdecl("cseg_options_set_memory_budget")
public func cseg_options_set_memory_budget(_ handle: OpaquePointer?, _ bytes: Int64) -> Int32 {
    guard bytes >= 0 else { return fail(CSEG_ERROR_ARGUMENT, "the memory budget must be 0 (none) or positive, got \(bytes)") }
    return withOptions(handle) { $0.memoryBudget = bytes }
}

/// `cseg_options_set_use_priors` (include/cascadeseg.h): Whether the cascade uses the model's prior boxes (non-zero: yes).
@_cdecl("cseg_options_set_use_priors")
public func cseg_options_set_use_priors(_ handle: OpaquePointer?, _ usePriors: Int32) -> Int32 {
    withOptions(handle) { $0.usePriors = usePriors != 0 }
}

/// `cseg_options_set_device` (include/cascadeseg.h): The device index, or -1 for the default device.
@_cdecl("cseg_options_set_device")
public func cseg_options_set_device(_ handle: OpaquePointer?, _ index: Int32) -> Int32 {
    guard index >= -1 else { return fail(CSEG_ERROR_ARGUMENT, "device index \(index): use -1 for the default or an index from 0") }
    return withOptions(handle) { $0.device = index }
}

/// `cseg_options_set_mode` (include/cascadeseg.h): One of CSEG_MODE_AUTO (0), _CASCADE, _SINGLE_STAGE, _STAGE1_ONLY.
@_cdecl("cseg_options_set_mode")
public func cseg_options_set_mode(_ handle: OpaquePointer?, _ mode: Int32) -> Int32 {
    guard (0...3).contains(mode) else { return fail(CSEG_ERROR_ARGUMENT, "mode \(mode) is not one of CSEG_MODE_* (0...3)") }
    return withOptions(handle) { $0.mode = mode }
}

/// `cseg_options_set_progress` (include/cascadeseg.h): The progress callback (NULL: none); a non-zero return cancels.
@_cdecl("cseg_options_set_progress")
public func cseg_options_set_progress(_ handle: OpaquePointer?,
                                      _ callback: (@convention(c) (UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Int32)?,
                                      _ userData: UnsafeMutableRawPointer?) -> Int32 {
    withOptions(handle) { $0.progress = callback; $0.userData = userData }
}

/// `cseg_segment_volume` (include/cascadeseg.h): Segments voxels held in memory into the caller's int32 label buffer.
@_cdecl("cseg_segment_volume")
public func cseg_segment_volume(_ handle: OpaquePointer?, _ voxels: UnsafePointer<Float>?, _ dims: UnsafePointer<Int64>?,
                                _ spacing: UnsafePointer<Double>?, _ affine: UnsafePointer<Double>?, _ optionsHandle: OpaquePointer?,
                                _ labels: UnsafeMutablePointer<Int32>?, _ capacity: Int) -> Int32 {
    guarded {
        let m = try model(handle)
        guard let voxels, let dims, let spacing, let labels else {
            return fail(CSEG_ERROR_ARGUMENT, "voxels, dims, spacing and labels must not be NULL")
        }
        let size = SIMD3(Int(dims[0]), Int(dims[1]), Int(dims[2]))
        guard size.x >= 1, size.y >= 1, size.z >= 1, size.x <= 1 << 20, size.y <= 1 << 20, size.z <= 1 << 20 else {
            return fail(CSEG_ERROR_ARGUMENT, "dims \(dims[0]) x \(dims[1]) x \(dims[2]) must each be at least 1")
        }
        let (count, overflow) = size.x.multipliedReportingOverflow(by: size.y * size.z)
        guard !overflow, count <= NiftiImage.maximumVoxelCount else { return fail(CSEG_ERROR_ARGUMENT, "the volume has too many voxels") }
        guard capacity >= count else {
            return fail(CSEG_ERROR_BUFFER_TOO_SMALL, "the labels buffer holds \(capacity) values; the volume has \(count) voxels")
        }
        let o = options(optionsHandle) ?? OptionsHandle()
        let segmenter = try m.segmenter(device: Int(o.device))
        let matrix = affine.map { a in (0..<4).map { r in (0..<4).map { c in a[4 * r + c] } } }
        let result = try segmenter.segment(voxels: Array(UnsafeBufferPointer(start: voxels, count: count)), size: size,
                                           spacing: SIMD3(spacing[0], spacing[1], spacing[2]), affine: matrix,
                                           options: try o.segmentationOptions())
        result.labels.withUnsafeBufferPointer { labels.update(from: $0.baseAddress!, count: count) }
        CAPIState.lastReport.set(String(decoding: try result.reportJSON(), as: UTF8.self))
        return CSEG_OK
    }
}

/// `cseg_segment_file` (include/cascadeseg.h): Segments a NIfTI file and writes the label map, atomically.
@_cdecl("cseg_segment_file")
public func cseg_segment_file(_ handle: OpaquePointer?, _ input: UnsafePointer<CChar>?, _ output: UnsafePointer<CChar>?,
                              _ optionsHandle: OpaquePointer?) -> Int32 {
    guarded {
        let m = try model(handle)
        guard let input, let output else { return fail(CSEG_ERROR_ARGUMENT, "the input and output paths must not be NULL") }
        let o = options(optionsHandle) ?? OptionsHandle()
        let segmenter = try m.segmenter(device: Int(o.device))
        let result = try segmenter.segment(file: String(cString: input), writingLabelsTo: String(cString: output),
                                           options: try o.segmentationOptions())
        CAPIState.lastReport.set(String(decoding: try result.reportJSON(), as: UTF8.self))
        return CSEG_OK
    }
}

/// `cseg_last_report` (include/cascadeseg.h): The JSON report of the calling thread's last successful segmentation.
@_cdecl("cseg_last_report")
public func cseg_last_report(_ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> Int32 {
    guard CAPIState.lastReport.isSet else { return fail(CSEG_ERROR_ARGUMENT, "this thread has not segmented anything yet") }
    return copyOut(String(cString: CAPIState.lastReport.pointer), buffer, capacity, length)
}
