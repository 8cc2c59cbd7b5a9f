import CascadeSeg
import Foundation

/// `cascadeseg tune`: measures the convolution block sizes on a device and caches the best.
enum TuneCommand {
    static func run(_ raw: [String]) throws {
        let args = try Arguments(raw, options: ["device"], flags: [])
        let device = try ComputeDevice.select(args["device"])
        let context = try ComputeContext.shared(for: device)
        let defaults = DeviceTuning.defaults(for: device)
        print("tuning the convolution kernels on \(device.name) (64 -> 32 channels, 3x3x3, 64^3):")
        let trials = try ConvAutotuner.tune(context: context, log: { print($0) })
        let best = trials[0]
        let baseline = trials.first { $0.tuning == defaults }?.seconds
        print("best: \(best.tuning)")
        if let baseline {
            print(String(format: "speed-up over the built-in defaults: %.2fx", baseline / best.seconds))
        }
    }
}
