import CascadeSeg
import Foundation

/// `cascadeseg segment MODEL.cseg --input-dir DIR --output-dir DIR [--shard I/N] [--devices 0,1]
/// [--memory-budget B] [--summary S.json]`: every `.nii` / `.nii.gz` of a folder, in sorted
/// order, each written to the output folder under its own name.
///
/// - The model is read and its networks built (kernels compiled, weights uploaded) once per
///   device; with several devices one worker thread per device takes cases from a shared queue.
/// - An output that exists already is skipped: outputs are written atomically, so one that
///   exists is complete, and a rerun after an interruption does only what is missing.
/// - `--shard I/N` (0-based I) takes cases I, I+N, I+2N, ... of the sorted list. Without it, a
///   SLURM array task takes shard (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
///   SLURM_ARRAY_TASK_COUNT, and a Kubernetes indexed Job pod takes JOB_COMPLETION_INDEX /
///   `--shard-count N`. The shard in use is printed on stderr.
/// - A case that fails (corrupt file, wrong dimensions, out of memory) is reported and the batch
///   goes on. The exit status is the number of failed cases (at most 125); 0 when all succeeded.
/// - `--summary S.json` lists every case of the shard: status (`ok`, `skipped`, `failed`),
///   seconds, peak device memory, device, error.
enum BatchSegmentation {
    struct Case {
        var name: String
        var input: String
        var output: String
    }

    struct CaseResult {
        var status = "pending"
        var seconds = 0.0
        var peakDeviceBytes: Int? = nil
        var device: String? = nil
        var labels: Int? = nil
        var error: String? = nil
    }

    /// The cases' indices handed out one at a time, and their results, shared by the workers.
    final class CaseQueue: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0
        private var done: [CaseResult]

        init(count: Int) { done = [CaseResult](repeating: CaseResult(), count: count) }

        /// The next case's index, nil when every case has been taken.
        func take() -> Int? {
            lock.withLock {
                guard next < done.count else { return nil }
                next += 1
                return next - 1
            }
        }

        func finish(_ index: Int, _ result: CaseResult) { lock.withLock { done[index] = result } }
        var results: [CaseResult] { lock.withLock { done } }
    }

    /// Runs the batch; returns the number of failed cases.
    static func run(_ args: Arguments) throws -> Int {
        guard args.positionals.count == 1 else {
            throw CascadeSegError.usage("batch mode takes the model and no input file\n\(SegmentCommand.usage)")
        }
        let inputDir = try args.require("input-dir"), outputDir = try args.require("output-dir")
        for single in ["output", "overlay", "report"] where args[single] != nil {
            throw CascadeSegError.usage("--\(single) applies to one image; batch mode names outputs after their inputs in --output-dir (use --summary for a report)")
        }
        if args["device"] != nil && args["devices"] != nil { throw CascadeSegError.usage("give --device or --devices, not both") }
        let quiet = args.has("quiet")
        let say: @Sendable (String) -> Void = { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        let (shard, shardCount, shardSource) = try self.shard(args, environment: ProcessInfo.processInfo.environment)

        let loadStart = DispatchTime.now()
        let model = try ModelFile(contentsOf: args.positionals[0])
        let options = try SegmentCommand.segmentationOptions(args, model: model)
        let all = try cases(in: inputDir, outputDir: outputDir)
        let mine = all.enumerated().filter { $0.offset % shardCount == shard }.map(\.element)
        let specs: [String?] = (args["devices"] ?? args["device"]).map { $0.split(separator: ",").map { String($0) } } ?? [nil]
        let devices = try specs.map { try ComputeDevice.select($0) }
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        // One segmenter per device, its networks built now: kernels compile once, not per case.
        let segmenters = try devices.map { device -> Segmenter in
            let s = try Segmenter(model: model, device: device)
            try s.prepare(residentWeights: options.memoryBudget == nil)
            return s
        }
        let loadSeconds = loadStart.secondsElapsed
        say("batch: \(mine.count) of \(all.count) image(s) in \(inputDir) (shard \(shard)/\(shardCount)\(shardSource)), "
            + "\(segmenters.count) device(s): \(devices.map(\.name).joined(separator: ", ")); model loaded in \(String(format: "%.2f", loadSeconds)) s")

        // The shared queue: each worker takes the next case until none is left.
        let queue = CaseQueue(count: mine.count)
        let batchStart = DispatchTime.now()
        let group = DispatchGroup()
        for segmenter in segmenters {
            group.enter()
            let worker = Thread {
                defer { group.leave() }
                while let index = queue.take() {
                    let c = mine[index]
                    let result = segment(c, with: segmenter, options: options)
                    queue.finish(index, result)
                    switch result.status {
                    case "ok":
                        say(String(format: "[%d/%d] %@: ok, %.2f s, peak %.1f MiB on %@", index + 1, mine.count, c.name, result.seconds,
                                   Double(result.peakDeviceBytes ?? 0) / 1048576, segmenter.device.name))
                    case "skipped": say("[\(index + 1)/\(mine.count)] \(c.name): skipped, \(c.output) exists")
                    default: say("[\(index + 1)/\(mine.count)] \(c.name): FAILED: \(result.error ?? "")")
                    }
                }
            }
            worker.stackSize = 16 << 20
            worker.start()
        }
        group.wait()
        let results = queue.results
        let wall = batchStart.secondsElapsed

        let count = { (status: String) in results.filter { $0.status == status }.count }
        let (ok, skipped, failed) = (count("ok"), count("skipped"), count("failed"))
        if let path = args["summary"] {
            let json: [String: Any] = [
                "model": args.positionals[0],
                "input_dir": inputDir,
                "output_dir": outputDir,
                "mode": options.mode?.rawValue ?? "",
                "memory_budget_bytes": options.memoryBudget.map { $0 as Any } ?? NSNull(),
                "shard": ["index": shard, "count": shardCount],
                "devices": devices.map { $0.name },
                "model_load_seconds": loadSeconds,
                "wall_seconds": wall,
                "counts": ["total": mine.count, "ok": ok, "skipped": skipped, "failed": failed],
                "cases": zip(mine, results).map { c, r -> [String: Any] in
                    var entry: [String: Any] = ["input": c.name, "output": c.output, "status": r.status, "seconds": r.seconds,
                                                "peak_device_bytes": r.peakDeviceBytes.map { $0 as Any } ?? NSNull()]
                    if let d = r.device { entry["device"] = d }
                    if let e = r.error { entry["error"] = e }
                    if let l = r.labels { entry["labels_found"] = l }
                    return entry
                },
            ]
            try AtomicFile.write([UInt8](try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])), to: path)
        }
        if !quiet {
            print(String(format: "batch: %d ok, %d skipped, %d failed of %d in %.2f s (model load %.2f s)", ok, skipped, failed, mine.count, wall, loadSeconds))
            for (c, r) in zip(mine, results) where r.status == "failed" { print("failed: \(c.name): \(r.error ?? "")") }
        }
        return failed
    }

    /// One case: skipped when its output exists, else segmented and written; errors are caught.
    static func segment(_ c: Case, with segmenter: Segmenter, options: SegmentationOptions) -> CaseResult {
        var r = CaseResult()
        if FileManager.default.fileExists(atPath: c.output) {
            r.status = "skipped"
            return r
        }
        let start = DispatchTime.now()
        r.device = segmenter.device.name
        do {
            let result = try segmenter.segment(file: c.input, writingLabelsTo: c.output, options: options)
            r.status = "ok"
            r.peakDeviceBytes = result.peakDeviceBytes
            r.labels = result.labelVoxelCounts.count
        } catch {
            r.status = "failed"
            r.error = "\(error)"
        }
        r.seconds = start.secondsElapsed
        return r
    }

    /// The `.nii` and `.nii.gz` files of `dir`, sorted by name, each with its output path.
    static func cases(in dir: String, outputDir: String) throws -> [Case] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir) } catch {
            throw CascadeSegError.io("cannot list --input-dir '\(dir)': \(error.localizedDescription)")
        }
        let base = URL(fileURLWithPath: dir), out = URL(fileURLWithPath: outputDir)
        return names.filter { ($0.hasSuffix(".nii") || $0.hasSuffix(".nii.gz")) && !$0.hasPrefix(".") }.sorted().map {
            Case(name: $0, input: base.appendingPathComponent($0).path, output: out.appendingPathComponent($0).path)
        }
    }

    /// The shard (0-based index, count) and where it came from: `--shard I/N`; else a SLURM array
    /// task (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT); else a
    /// Kubernetes indexed Job (JOB_COMPLETION_INDEX of `--shard-count N`); else 0/1.
    static func shard(_ args: Arguments, environment env: [String: String]) throws -> (Int, Int, String) {
        func parse(_ i: String, _ n: String, _ source: String) throws -> (Int, Int, String) {
            guard let index = Int(i), let count = Int(n), count >= 1, index >= 0, index < count else {
                throw CascadeSegError.usage("shard \(i)/\(n)\(source) is not I/N with 0 <= I < N")
            }
            return (index, count, source)
        }
        if let s = args["shard"] {
            let parts = s.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2 else { throw CascadeSegError.usage("--shard must be I/N (0-based I), e.g. 0/4; got '\(s)'") }
            return try parse(parts[0], parts[1], "")
        }
        if let id = env["SLURM_ARRAY_TASK_ID"], let count = env["SLURM_ARRAY_TASK_COUNT"] {
            let min = Int(env["SLURM_ARRAY_TASK_MIN"] ?? "0") ?? 0
            guard let i = Int(id) else { throw CascadeSegError.usage("SLURM_ARRAY_TASK_ID '\(id)' is not an integer") }
            return try parse(String(i - min), count, " from SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN / SLURM_ARRAY_TASK_COUNT")
        }
        if let index = env["JOB_COMPLETION_INDEX"] {
            guard let count = args["shard-count"] else {
                throw CascadeSegError.usage("JOB_COMPLETION_INDEX is set: give the Job's completions as --shard-count N (or --shard I/N)")
            }
            return try parse(index, count, " from JOB_COMPLETION_INDEX / --shard-count")
        }
        if args["shard-count"] != nil { throw CascadeSegError.usage("--shard-count goes with JOB_COMPLETION_INDEX; use --shard I/N") }
        return (0, 1, "")
    }
}
