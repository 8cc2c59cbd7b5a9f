import CascadeSeg
import Foundation

/// `cascadeseg bench cascade MODEL IMAGE`: the cascade against its single-stage baseline on the
/// same image in one process, with and without a memory budget: wall time, peak device memory,
/// their ratios against single-stage, whether a budget changed any label, and (with
/// `--reference`) Dice, IoU and HD95 per label for each mode. Numbers only, never assertions.
enum BenchCascade {
    static let usage = "usage: cascadeseg bench cascade MODEL.cseg IMAGE.nii.gz [--memory-budget BYTES] [--reference LABELS.nii.gz] [--labels 1,2,...] [--json OUT.json] [--device D] [--skip-single-stage]"

    struct Row {
        var mode: String
        var seconds: Double
        var peakBytes: Int
        var tiles: Int
        var labels: [Int32]
        var rois: Int
    }

    static func run(_ args: Arguments) throws {
        guard args.positionals.count == 3 else { throw CascadeSegError.usage(usage) }
        let model = try ModelFile(contentsOf: args.positionals[1])
        let image = try NiftiImage(contentsOf: args.positionals[2])
        let context = try ComputeContext.shared(for: try ComputeDevice.select(args["device"]))
        let (one, two) = try CascadeSegmentation.stageIndices(of: model)
        let budget = try args.bytes("memory-budget")
        print("device: \(context.device.name)")
        print("model: \(model.metadata.name); image \(image.nx)x\(image.ny)x\(image.nz) at \(String(format: "%.2fx%.2fx%.2f", image.spacing.x, image.spacing.y, image.spacing.z)) mm")

        // Compile every kernel once on a small input, so that no row pays for compilation.
        for stage in Set([one, two]) {
            let network = try Network(model: model, stage: stage, context: context)
            let m = network.graph.sizeMultiple
            _ = try network.run(Tensor(zeros: [1, model.metadata.input.channels] + m.map { max($0, 8) }))
        }

        func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
            let start = DispatchTime.now()
            let value = try body()
            return (value, start.secondsElapsed)
        }
        func singleStage(_ budget: Int?) throws -> Row {
            let network = try Network(model: model, stage: two, context: context, residentWeights: budget == nil)
            context.memory.resetPeak()
            let (r, seconds) = try timed { try WholeVolumeSegmentation.segment(image, model: model, stageIndex: two, network: network, memoryBudget: budget) }
            return Row(mode: budget == nil ? "single-stage" : "single-stage, budget", seconds: seconds,
                       peakBytes: max(r.run.peakDeviceBytes, context.memory.peakBytes), tiles: r.run.tiles, labels: r.labels, rois: 0)
        }
        func cascade(_ budget: Int?) throws -> Row {
            let stage1 = try Network(model: model, stage: one, context: context, residentWeights: budget == nil)
            let stage2 = try Network(model: model, stage: two, context: context, residentWeights: budget == nil)
            context.memory.resetPeak()
            let (r, seconds) = try timed { try CascadeSegmentation.segment(image, model: model, stage1: stage1, stage2: stage2,
                                                                          options: .init(memoryBudget: budget)) }
            return Row(mode: budget == nil ? "cascade" : "cascade, budget", seconds: seconds,
                       peakBytes: max(r.peakDeviceBytes, context.memory.peakBytes), tiles: r.stages.map(\.tiles).max() ?? 1,
                       labels: r.labels, rois: r.rois.count)
        }

        var rows: [Row] = []
        if !args.has("skip-single-stage") { rows.append(try singleStage(nil)) }
        rows.append(try cascade(nil))
        if let budget {
            rows.append(try cascade(budget))
            if !args.has("skip-single-stage") { rows.append(try singleStage(budget)) }
        }

        let base = rows.first { $0.mode == "single-stage" }
        print(left("mode", 22) + right("time (s)", 10) + right("peak (MiB)", 12) + right("time x", 8) + right("mem x", 8) + right("tiles", 7) + right("ROIs", 6))
        for row in rows {
            let speed = base.map { String(format: "%.2f", $0.seconds / row.seconds) } ?? "-"
            let memory = base.map { String(format: "%.2f", Double($0.peakBytes) / Double(row.peakBytes)) } ?? "-"
            print(left(row.mode, 22) + right(String(format: "%.2f", row.seconds), 10) + right(String(format: "%.1f", Double(row.peakBytes) / 1048576), 12)
                  + right(speed, 8) + right(memory, 8) + right("\(row.tiles)", 7) + right("\(row.rois)", 6))
        }
        print("(time x, mem x: single-stage divided by the row, higher is better)")
        if let budget { print(String(format: "budget: %d bytes (%.1f MiB)", budget, Double(budget) / 1048576)) }
        for (a, b) in [("cascade", "cascade, budget"), ("single-stage", "single-stage, budget")] {
            guard let x = rows.first(where: { $0.mode == a }), let y = rows.first(where: { $0.mode == b }) else { continue }
            let differing = zip(x.labels, y.labels).filter { $0 != $1 }.count
            print("\(b) vs \(a): \(differing) of \(x.labels.count) voxels differ")
        }

        func left(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count + 1), withPad: " ", startingAt: 0) }
        func right(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(1, n - s.count)) + s }
        var json: [String: Any] = [
            "device": context.device.name, "model": model.metadata.name, "image": args.positionals[2],
            "memory_budget_bytes": budget.map { $0 as Any } ?? NSNull(),
            "rows": rows.map { ["mode": $0.mode, "seconds": $0.seconds, "peak_device_bytes": $0.peakBytes, "tiles": $0.tiles, "rois": $0.rois] },
        ]
        if let referencePath = args["reference"] {
            let reference = try NiftiImage(contentsOf: referencePath)
            let wanted = try args["labels"].map { text in
                try text.split(separator: ",").map { s -> Int in
                    guard let v = Int(s.trimmingCharacters(in: .whitespaces)) else { throw CascadeSegError.usage("--labels must be integers, got '\(text)'") }
                    return v
                }
            } ?? model.metadata.labels.map(\.id).filter { $0 != 0 }.sorted()
            let names = Dictionary(model.metadata.labels.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
            var metrics: [String: Any] = [:]
            var evaluations: [(String, SegmentationEvaluation)] = []
            for row in rows {
                let prediction = try NiftiImage(voxels: row.labels.map(Float.init), geometry: image.geometry)
                evaluations.append((row.mode, try SegmentationEvaluation(prediction: prediction, reference: reference, labels: wanted)))
            }
            print("\nDice per label (HD95 mm) against \(referencePath):")
            print(left("label", 18) + evaluations.map { right($0.0, 23) }.joined())
            for (i, label) in wanted.enumerated() {
                print(left(names[label] ?? "label \(label)", 18) + evaluations.map {
                    right(String(format: "%.3f (%.2f)", $0.1.labels[i].dice, $0.1.labels[i].hd95), 23)
                }.joined())
            }
            print(left("mean", 18) + evaluations.map { right(String(format: "%.3f (%.2f)", $0.1.meanDice, $0.1.meanHD95), 23) }.joined())
            for (mode, e) in evaluations {
                metrics[mode] = ["mean_dice": e.meanDice, "mean_iou": e.meanIoU, "mean_hd95_mm": e.meanHD95.isFinite ? e.meanHD95 as Any : NSNull(),
                                 "labels": e.labels.map { ["label": $0.label, "dice": $0.dice, "iou": $0.iou,
                                                           "hd95_mm": $0.hd95.isFinite ? $0.hd95 as Any : NSNull()] }]
            }
            json["metrics"] = metrics
        }
        if let path = args["json"] {
            try AtomicFile.write([UInt8](try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])), to: path)
        }
    }
}
