import COpenCL
import Foundation

/// An argument of a kernel launch.
public enum KernelArgument {
    case buffer(DeviceBuffer)
    case int(Int32)
    case long(Int64)
    case float(Float)
}

/// A compiled OpenCL program and its kernels, built once per device per process.
final class CompiledProgram: @unchecked Sendable {
    nonisolated(unsafe) let program: cl_program
    private var kernels: [String: cl_kernel] = [:]
    let name: String

    init(program: cl_program, name: String) {
        self.program = program
        self.name = name
    }

    func kernel(_ kernelName: String) throws -> cl_kernel {
        if let k = kernels[kernelName] { return k }
        var status: cl_int = 0
        guard let k = clCreateKernel(program, kernelName, &status), status == CL_SUCCESS else {
            throw CascadeSegError.openCL(operation: "creating kernel '\(kernelName)' of program '\(name)'", code: status,
                                         codeName: CLStatus.name(status))
        }
        kernels[kernelName] = k
        return k
    }

    deinit {
        for k in kernels.values { clReleaseKernel(k) }
        clReleaseProgram(program)
    }
}

/// The engine's handle on one device: its context, an in-order queue, compiled programs and
/// the exact accounting of device memory. One instance per device per process (`shared(for:)`),
/// so that programs are compiled once. Launches are serialized by a lock: a context may be
/// used from several threads.
public final class ComputeContext: @unchecked Sendable {
    public let device: ComputeDevice
    public let memory = MemoryAccounting()
    nonisolated(unsafe) let context: cl_context
    nonisolated(unsafe) let queue: cl_command_queue
    private var programs: [String: CompiledProgram] = [:]
    let lock = Lock()

    private static let registryLock = Lock()
    nonisolated(unsafe) private static var registry: [Int: ComputeContext] = [:]

    /// The process-wide context of `device`.
    public static func shared(for device: ComputeDevice) throws -> ComputeContext {
        try registryLock.locked {
            if let c = registry[device.index] { return c }
            let c = try ComputeContext(device: device)
            registry[device.index] = c
            return c
        }
    }

    private init(device: ComputeDevice) throws {
        self.device = device
        var status: cl_int = 0
        var deviceID: cl_device_id? = device.id
        guard let ctx = clCreateContext(nil, 1, &deviceID, nil, nil, &status), status == CL_SUCCESS else {
            throw CascadeSegError.openCL(operation: "creating a context on \(device.name)", code: status, codeName: CLStatus.name(status))
        }
        context = ctx
        guard let q = clCreateCommandQueue(ctx, device.id, 0, &status), status == CL_SUCCESS else {
            clReleaseContext(ctx)
            throw CascadeSegError.openCL(operation: "creating a command queue on \(device.name)", code: status, codeName: CLStatus.name(status))
        }
        queue = q
    }

    deinit {
        programs.removeAll()
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    // MARK: Programs

    /// The program built from `Kernels/<file>` with `defines`, compiled on first use.
    func program(_ file: String, defines: [String: String] = [:]) throws -> CompiledProgram {
        let options = (["-cl-std=CL1.2"] + defines.keys.sorted().map { "-D\($0)=\(defines[$0]!)" }).joined(separator: " ")
        let key = file + "|" + options
        return try lock.locked {
            if let p = programs[key] { return p }
            let source = try KernelLibrary.source(file)
            var status: cl_int = 0
            let program: cl_program? = source.withCString { cString in
                var pointer: UnsafePointer<CChar>? = cString
                var length = strlen(cString)
                return clCreateProgramWithSource(context, 1, &pointer, &length, &status)
            }
            guard let program, status == CL_SUCCESS else {
                throw CascadeSegError.openCL(operation: "creating program '\(file)'", code: status, codeName: CLStatus.name(status))
            }
            var deviceID: cl_device_id? = device.id
            let build = clBuildProgram(program, 1, &deviceID, options, nil, nil)
            if build != CL_SUCCESS {
                var size = 0
                clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
                var log = [CChar](repeating: 0, count: size + 1)
                clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &log, nil)
                clReleaseProgram(program)
                throw CascadeSegError.kernelBuild(program: "\(file) [\(options)] (\(CLStatus.name(build)))", log: String(cString: log))
            }
            let compiled = CompiledProgram(program: program, name: file)
            programs[key] = compiled
            return compiled
        }
    }

    // MARK: Buffers

    /// Allocates `byteCount` bytes of device memory (at least 4). Allocation is lazy on most
    /// drivers, so a zero-byte write forces it here and surfaces out-of-memory at this point.
    public func allocate(bytes byteCount: Int, label: String) throws -> DeviceBuffer {
        let size = max(byteCount, 4)
        guard UInt64(size) <= device.maxAllocationBytes else {
            throw CascadeSegError.budget("\(label) needs \(size) bytes in one buffer; \(device.name) allows at most \(device.maxAllocationBytes)")
        }
        var status: cl_int = 0
        guard let mem = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), size, nil, &status), status == CL_SUCCESS else {
            throw CascadeSegError.openCL(operation: "allocating \(size) bytes for \(label)", code: status, codeName: CLStatus.name(status))
        }
        return DeviceBuffer(mem: mem, byteCount: size, accounting: memory)
    }

    /// A view of `bytes` bytes at `offset` inside `parent` (which already holds the memory).
    func view(of parent: DeviceBuffer, offset: Int, bytes: Int) throws -> DeviceBuffer {
        if offset == 0 && bytes == parent.byteCount { return parent }
        var region = cl_buffer_region(origin: offset, size: max(bytes, 4))
        var status: cl_int = 0
        guard let mem = clCreateSubBuffer(parent.mem, cl_mem_flags(CL_MEM_READ_WRITE), cl_buffer_create_type(CL_BUFFER_CREATE_TYPE_REGION),
                                          &region, &status), status == CL_SUCCESS else {
            throw CascadeSegError.openCL(operation: "creating a view of \(bytes) bytes at offset \(offset)", code: status, codeName: CLStatus.name(status))
        }
        return DeviceBuffer(mem: mem, byteCount: bytes, accounting: memory, countsTowardsLive: false)
    }

    public func upload(_ values: [Float], to buffer: DeviceBuffer, offsetFloats: Int = 0) throws {
        precondition((offsetFloats + values.count) * 4 <= buffer.byteCount)
        guard !values.isEmpty else { return }
        try lock.locked {
            try CLStatus.check(values.withUnsafeBytes {
                clEnqueueWriteBuffer(queue, buffer.mem, cl_bool(CL_TRUE), offsetFloats * 4, $0.count, $0.baseAddress, 0, nil, nil)
            }, "uploading \(values.count * 4) bytes")
        }
    }

    /// Writes `bytes` bytes from host memory at `source` into `buffer` at `offsetBytes` (blocking).
    func upload(from source: UnsafeRawPointer, bytes: Int, to buffer: DeviceBuffer, offsetBytes: Int) throws {
        precondition(offsetBytes + bytes <= buffer.byteCount)
        guard bytes > 0 else { return }
        try lock.locked {
            try CLStatus.check(clEnqueueWriteBuffer(queue, buffer.mem, cl_bool(CL_TRUE), offsetBytes, bytes, source, 0, nil, nil),
                               "uploading \(bytes) bytes")
        }
    }

    /// Reads `bytes` bytes of `buffer` at `offsetBytes` into host memory at `destination` (blocking).
    func download(_ buffer: DeviceBuffer, offsetBytes: Int, bytes: Int, into destination: UnsafeMutableRawPointer) throws {
        precondition(offsetBytes + bytes <= buffer.byteCount)
        guard bytes > 0 else { return }
        try lock.locked {
            try CLStatus.check(clEnqueueReadBuffer(queue, buffer.mem, cl_bool(CL_TRUE), offsetBytes, bytes, destination, 0, nil, nil),
                               "downloading \(bytes) bytes")
        }
    }

    public func upload(_ values: [Float], label: String) throws -> DeviceBuffer {
        let buffer = try allocate(bytes: values.count * 4, label: label)
        try upload(values, to: buffer)
        return buffer
    }

    public func download(_ buffer: DeviceBuffer, count: Int, offsetFloats: Int = 0) throws -> [Float] {
        precondition((offsetFloats + count) * 4 <= buffer.byteCount)
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return values }
        try lock.locked {
            try CLStatus.check(values.withUnsafeMutableBytes {
                clEnqueueReadBuffer(queue, buffer.mem, cl_bool(CL_TRUE), offsetFloats * 4, $0.count, $0.baseAddress, 0, nil, nil)
            }, "downloading \(count * 4) bytes")
        }
        return values
    }

    func copy(from source: DeviceBuffer, sourceOffsetFloats: Int, to destination: DeviceBuffer, destinationOffsetFloats: Int, count: Int) throws {
        guard count > 0 else { return }
        try lock.locked {
            try CLStatus.check(clEnqueueCopyBuffer(queue, source.mem, destination.mem, sourceOffsetFloats * 4,
                                                   destinationOffsetFloats * 4, count * 4, 0, nil, nil), "copying \(count * 4) bytes")
        }
    }

    func fill(_ buffer: DeviceBuffer, value: Float, count: Int) throws {
        guard count > 0 else { return }
        var pattern = value
        try lock.locked {
            try CLStatus.check(clEnqueueFillBuffer(queue, buffer.mem, &pattern, 4, 0, count * 4, 0, nil, nil), "filling a buffer")
        }
    }

    // MARK: Launches

    /// Enqueues `kernelName` of `program` over `global` work-items (rounded up to multiples of
    /// `local`, which is always explicit: some drivers pick unusable sizes when left to choose).
    func launch(_ program: CompiledProgram, _ kernelName: String, global: [Int], local: [Int], _ arguments: [KernelArgument]) throws {
        precondition(global.count == local.count && (1...3).contains(global.count))
        try lock.locked {
            let kernel = try program.kernel(kernelName)
            for (i, argument) in arguments.enumerated() {
                let status: cl_int
                switch argument {
                case .buffer(let b):
                    var mem: cl_mem? = b.mem
                    status = clSetKernelArg(kernel, cl_uint(i), MemoryLayout<cl_mem>.size, &mem)
                case .int(var v): status = clSetKernelArg(kernel, cl_uint(i), 4, &v)
                case .long(var v): status = clSetKernelArg(kernel, cl_uint(i), 8, &v)
                case .float(var v): status = clSetKernelArg(kernel, cl_uint(i), 4, &v)
                }
                try CLStatus.check(status, "setting argument \(i) of kernel '\(kernelName)'")
            }
            var rounded = zip(global, local).map { g, l in (max(g, 1) + l - 1) / l * l }
            var localSizes = local
            try CLStatus.check(clEnqueueNDRangeKernel(queue, kernel, cl_uint(global.count), nil, &rounded, &localSizes, 0, nil, nil),
                               "launching kernel '\(kernelName)' over \(global) in groups of \(local)")
        }
    }

    /// Waits until every queued command has finished.
    public func finish() throws {
        try lock.locked { try CLStatus.check(clFinish(queue), "waiting for the device") }
    }
}
