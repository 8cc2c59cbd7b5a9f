import Foundation
import COpenCL

/// One OpenCL device as the user sees it in `cascadeseg devices`.
public struct ComputeDevice: Sendable, CustomStringConvertible {
    public var index: Int
    public var name: String
    public var vendor: String
    public var platformName: String
    public var type: String
    public var globalMemoryBytes: UInt64
    public var maxAllocationBytes: UInt64
    public var openCLCVersion: String
    public var supportsFP16: Bool
    public var supportsFP64: Bool
    public var computeUnits: Int
    public var maxWorkGroupSize: Int
    public var baseAddressAlignBytes: Int
    public var preferredFloatVectorWidth: Int
    public var localMemoryBytes: UInt64
    nonisolated(unsafe) let id: cl_device_id
    nonisolated(unsafe) let platform: cl_platform_id

    public var isCPU: Bool { type == "CPU" }
    public var isGPU: Bool { type == "GPU" }

    public var description: String {
        let gib = { (b: UInt64) in String(format: "%.1f GiB", Double(b) / 1073741824) }
        return "[\(index)] \(name) (\(vendor), \(type)) global \(gib(globalMemoryBytes)), max alloc \(gib(maxAllocationBytes)), \(openCLCVersion), fp16 \(supportsFP16 ? "yes" : "no")"
    }

    /// Every device of every platform, numbered in platform order.
    public static func all() throws -> [ComputeDevice] {
        var platformCount: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &platformCount)
        if status == -1001 || platformCount == 0 {
            throw CascadeSegError.noDevice("no OpenCL platform is installed (on Debian: apt-get install pocl-opencl-icd for the CPU, or your GPU vendor's OpenCL driver)")
        }
        try CLStatus.check(status, "listing OpenCL platforms")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try CLStatus.check(clGetPlatformIDs(platformCount, &platforms, nil), "listing OpenCL platforms")
        var devices: [ComputeDevice] = []
        for case let platform? in platforms {
            var count: cl_uint = 0
            let s = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &count)
            if s == CL_DEVICE_NOT_FOUND || count == 0 { continue }
            try CLStatus.check(s, "listing devices")
            var ids = [cl_device_id?](repeating: nil, count: Int(count))
            try CLStatus.check(clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), count, &ids, nil), "listing devices")
            for case let id? in ids {
                devices.append(try ComputeDevice(index: devices.count, id: id, platform: platform))
            }
        }
        guard !devices.isEmpty else { throw CascadeSegError.noDevice("OpenCL platforms exist but report no devices") }
        return devices
    }

    /// Picks a device by `INDEX`, `cpu`, `gpu` or a case-insensitive name substring; nil picks
    /// the first GPU, or else the first device.
    public static func select(_ spec: String?) throws -> ComputeDevice {
        let devices = try all()
        guard let spec, !spec.isEmpty else { return devices.first(where: \.isGPU) ?? devices[0] }
        if let index = Int(spec) {
            guard index >= 0, index < devices.count else {
                throw CascadeSegError.noDevice("device index \(index) does not exist (there are \(devices.count); see `cascadeseg devices`)")
            }
            return devices[index]
        }
        switch spec.lowercased() {
        case "cpu", "gpu":
            guard let d = devices.first(where: { $0.type == spec.uppercased() }) else {
                throw CascadeSegError.noDevice("no \(spec.uppercased()) device (see `cascadeseg devices`)")
            }
            return d
        default:
            guard let d = devices.first(where: { $0.name.lowercased().contains(spec.lowercased()) }) else {
                throw CascadeSegError.noDevice("no device name contains '\(spec)' (see `cascadeseg devices`)")
            }
            return d
        }
    }

    init(index: Int, id: cl_device_id, platform: cl_platform_id) throws {
        self.index = index
        self.id = id
        self.platform = platform
        func string(_ param: cl_device_info) throws -> String {
            var size = 0
            try CLStatus.check(clGetDeviceInfo(id, param, 0, nil, &size), "querying a device")
            var buffer = [CChar](repeating: 0, count: size + 1)
            try CLStatus.check(clGetDeviceInfo(id, param, size, &buffer, nil), "querying a device")
            return String(cString: buffer).trimmingCharacters(in: .whitespaces)
        }
        func value<T: FixedWidthInteger>(_ param: cl_device_info, _ type: T.Type) throws -> T {
            var v: T = 0
            try CLStatus.check(clGetDeviceInfo(id, param, MemoryLayout<T>.size, &v, nil), "querying a device")
            return v
        }
        name = try string(cl_device_info(CL_DEVICE_NAME))
        vendor = try string(cl_device_info(CL_DEVICE_VENDOR))
        openCLCVersion = try string(cl_device_info(CL_DEVICE_OPENCL_C_VERSION))
        let extensions = try string(cl_device_info(CL_DEVICE_EXTENSIONS))
        supportsFP16 = extensions.contains("cl_khr_fp16")
        supportsFP64 = extensions.contains("cl_khr_fp64")
        let t = try value(cl_device_info(CL_DEVICE_TYPE), cl_device_type.self)
        type = t & cl_device_type(CL_DEVICE_TYPE_GPU) != 0 ? "GPU" : t & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 ? "CPU"
            : t & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 ? "accelerator" : "other"
        globalMemoryBytes = try value(cl_device_info(CL_DEVICE_GLOBAL_MEM_SIZE), cl_ulong.self)
        maxAllocationBytes = try value(cl_device_info(CL_DEVICE_MAX_MEM_ALLOC_SIZE), cl_ulong.self)
        localMemoryBytes = try value(cl_device_info(CL_DEVICE_LOCAL_MEM_SIZE), cl_ulong.self)
        computeUnits = Int(try value(cl_device_info(CL_DEVICE_MAX_COMPUTE_UNITS), cl_uint.self))
        maxWorkGroupSize = Int(try value(cl_device_info(CL_DEVICE_MAX_WORK_GROUP_SIZE), Int.self))
        baseAddressAlignBytes = max(Int(try value(cl_device_info(CL_DEVICE_MEM_BASE_ADDR_ALIGN), cl_uint.self)) / 8, 4)
        preferredFloatVectorWidth = max(Int(try value(cl_device_info(CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT), cl_uint.self)), 1)
        var platformName = [CChar](repeating: 0, count: 256)
        _ = clGetPlatformInfo(platform, cl_platform_info(CL_PLATFORM_NAME), 255, &platformName, nil)
        self.platformName = String(cString: platformName)
    }
}
