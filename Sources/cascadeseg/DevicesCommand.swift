import CascadeSeg
import Foundation

/// `cascadeseg devices`: one line per OpenCL device.
enum DevicesCommand {
    static func run(_ raw: [String]) throws {
        _ = try Arguments(raw, options: [], flags: [])
        let devices = try ComputeDevice.all()
        let gib = { (b: UInt64) in String(format: "%.1f GiB", Double(b) / 1073741824) }
        print("index  name | vendor | type | global memory | max allocation | OpenCL C | fp16")
        for d in devices {
            print("\(d.index)  \(d.name) | \(d.vendor) | \(d.type) | \(gib(d.globalMemoryBytes)) | \(gib(d.maxAllocationBytes)) | \(d.openCLCVersion) | \(d.supportsFP16 ? "yes" : "no")")
        }
    }
}
