import CascadeSeg
import Foundation

/// `cascadeseg bench cascade MODEL IMAGE`: the cascade against its single-stage baseline on the
/// same image in one process, with and without a memory budget: wall time, peak device memory,
/// their ratios against single-stage, whether a budget changed any label, and (with
/// `--reference`) Dice, IoU and HD95 per label and per size group for each mode. Numbers only,
/// never assertions.
///
/// The single-stage rows run `--single-stage-model` (a network trained on the whole image, with
/// the same labels) when given, else the cascade's own stage-2 network over the whole image.
enum BenchCascade {
    static let usage = "usage: cascadeseg bench cascade MODEL.cseg IMAGE.nii.gz [--memory-budget BYTES] [--reference LABELS.nii.gz] [--labels 1,2,...] [--json OUT.json] [--device D] [--skip-single-stage] [--single-stage-model BASELINE.cseg]"

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
        let (baseline, baselineStage) = try args["single-stage-model"].map { try singleStageModel($0, like: model) } ?? (model, two)
        print("device: \(context.device.name)")
        print("model: \(model.metadata.name); image \(image.nx)x\(image.ny)x\(image.nz) at \(String(format: "%.2fx%.2fx%.2f", image.spacing.x, image.spacing.y, image.spacing.z)) mm")
        print("single-stage: \(args["single-stage-model"].map { "\(baseline.metadata.name) (\($0))" } ?? "the cascade's stage-2 network over the whole image")")

        // Compile every kernel once on a small input, so that no row pays for compilation.
        let warmUps = Set([one, two]).sorted().map { (model, $0) } + (args["single-stage-model"] != nil ? [(baseline, baselineStage)] : [])
        for (m, stage) in warmUps {
            let network = try Network(model: m, stage: stage, context: context)
            let multiple = network.graph.sizeMultiple
            _ = try network.run(Tensor(zeros: [1, m.metadata.input.channels] + multiple.map { max($0, 8) }))
        }

        func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
            let start = DispatchTime.now()
            let value = try body()
            return (value, start.secondsElapsed)
        }
        func singleStage(_ budget: Int?) throws -> Row {
            let network = try Network(model: baseline, stage: baselineStage, context: context, residentWeights: budget == nil)
            context.memory.resetPeak()
            let (r, seconds) = try timed { try WholeVolumeSegmentation.segment(image, model: baseline, stageIndex: baselineStage, network: network, memoryBudget: budget) }
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
            print("\nPer size group of the reference structure: mean Dice / IoU (mean HD95 mm over finite values; labels with none found):")
            print(left("group", 20) + evaluations.map { right($0.0, 30) }.joined())
            let groupsPerMode = evaluations.map { $0.1.sizeGroups() }
            for (g, group) in SizeGroup.brainStructures.enumerated() {
                print(left("\(group.name) [\(groupsPerMode.first?[g].labels.count ?? 0)]", 20) + groupsPerMode.map {
                    right(String(format: "%.3f / %.3f (%.2f; %d)", $0[g].meanDice, $0[g].meanIoU, $0[g].meanHD95, $0[g].infiniteHD95Count), 30)
                }.joined())
            }
            func number(_ x: Double) -> Any { x.isFinite ? x as Any : NSNull() }
            for ((mode, e), groups) in zip(evaluations, groupsPerMode) {
                metrics[mode] = ["mean_dice": e.meanDice, "mean_iou": e.meanIoU, "mean_hd95_mm": number(e.meanHD95),
                                 "labels": e.labels.map { ["label": $0.label, "dice": number($0.dice), "iou": number($0.iou),
                                                           "hd95_mm": number($0.hd95), "reference_mm3": $0.referenceVolume,
                                                           "predicted_mm3": $0.predictionVolume] },
                                 "size_groups": groups.map { ["name": $0.group.name, "lower_mm3": $0.group.lowerMM3,
                                                              "upper_mm3": number($0.group.upperMM3), "labels": $0.labels,
                                                              "mean_dice": number($0.meanDice), "mean_iou": number($0.meanIoU),
                                                              "mean_hd95_mm": number($0.meanHD95), "infinite_hd95": $0.infiniteHD95Count] }]
            }
            json["metrics"] = metrics
        }
        if let path = args["json"] {
            try AtomicFile.write([UInt8](try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])), to: path)
        }
    }

    /// The baseline model and the stage it runs: its only stage, which must give the cascade's
    /// labels from the same input channels (else the rows would not compare like with like).
    static func singleStageModel(_ path: String, like cascade: ModelFile) throws -> (ModelFile, Int) {
        let baseline = try ModelFile(contentsOf: path)
        guard baseline.metadata.stages.count == 1 else {
            throw CascadeSegError.usage("--single-stage-model \(path) has \(baseline.metadata.stages.count) stages; it must be a single-stage model")
        }
        let ids = { (m: ModelFile) in m.metadata.labels.map(\.id).sorted() }
        guard ids(baseline) == ids(cascade), baseline.metadata.input.channels == cascade.metadata.input.channels else {
            throw CascadeSegError.usage("--single-stage-model \(path) has labels \(ids(baseline)) and \(baseline.metadata.input.channels) input channel(s); the cascade has \(ids(cascade)) and \(cascade.metadata.input.channels)")
        }
        return (baseline, 1)
    }
}
