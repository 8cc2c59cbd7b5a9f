import Foundation
import XCTest
@testable import CascadeSeg

/// `cascadeseg segment MODEL --input-dir DIR --output-dir DIR`: three small phantom images (one
/// corrupt), outputs equal to one-image runs, skip-on-rerun, shards (explicit and from the
/// SLURM / Kubernetes variables), the exit status and the summary.
final class BatchSegmentCommandTests: XCTestCase {
    var dir: URL!
    var inputs: URL!
    var expected: [Float]!

    override func setUpWithError() throws {
        dir = try CascadesegBinary.temporaryDirectory(for: self)
        inputs = dir.appendingPathComponent("in")
        try FileManager.default.createDirectory(at: inputs, withIntermediateDirectories: true)
        let phantom = try NiftiImage(contentsOf: SegmenterTests.imagePath)
        try phantom.write(to: inputs.appendingPathComponent("case_a.nii.gz").path)
        try phantom.write(to: inputs.appendingPathComponent("case_b.nii").path)
        let bytes = try AtomicFile.read(SegmenterTests.imagePath)
        try AtomicFile.write(Array(bytes.prefix(bytes.count / 3)), to: inputs.appendingPathComponent("case_c.nii.gz").path)
        try AtomicFile.write(Array("not an image".utf8), to: inputs.appendingPathComponent("notes.txt").path)
        expected = try SegmenterTests.reference().map(Float.init)
    }

    func batch(_ output: String, _ extra: [String] = [], environment: [String: String] = [:]) throws -> CascadesegBinary.Outcome {
        try CascadesegBinary.run(["segment", SegmenterTests.modelPath, "--input-dir", inputs.path,
                                  "--output-dir", dir.appendingPathComponent(output).path, "--device", "cpu"] + extra,
                                 environment: environment)
    }

    func summary(_ name: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try AtomicFile.read(dir.appendingPathComponent(name).path))) as? [String: Any])
    }

    func statuses(_ s: [String: Any]) -> [String: String] {
        Dictionary(uniqueKeysWithValues: (s["cases"] as? [[String: Any]] ?? []).map { ($0["input"] as? String ?? "", $0["status"] as? String ?? "") })
    }

    func testBatchOutputsSkipOnRerunExitStatusAndSummary() throws {
        let summaryPath = dir.appendingPathComponent("summary.json").path
        let first = try batch("out", ["--summary", summaryPath])
        XCTAssertEqual(first.status, 1, "one failed case: \(first.stderr)")
        XCTAssertTrue(first.stderr.contains("case_c.nii.gz: FAILED"), first.stderr)
        XCTAssertTrue(first.stdout.contains("2 ok, 0 skipped, 1 failed of 3"), first.stdout)
        let out = dir.appendingPathComponent("out")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(), ["case_a.nii.gz", "case_b.nii"])
        for name in ["case_a.nii.gz", "case_b.nii"] {
            let labels = try NiftiImage(contentsOf: out.appendingPathComponent(name).path)
            XCTAssertEqual(labels.voxels, expected, name)
            XCTAssertEqual(labels.geometry, try NiftiImage(contentsOf: inputs.appendingPathComponent(name).path).geometry)
        }
        let s = try summary("summary.json")
        XCTAssertEqual(statuses(s), ["case_a.nii.gz": "ok", "case_b.nii": "ok", "case_c.nii.gz": "failed"])
        let cases = try XCTUnwrap(s["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.map { $0["input"] as? String }, ["case_a.nii.gz", "case_b.nii", "case_c.nii.gz"], "sorted")
        for c in cases where c["status"] as? String == "ok" {
            XCTAssertGreaterThan(c["seconds"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(c["peak_device_bytes"] as? Int ?? 0, 0)
        }
        XCTAssertTrue((cases[2]["error"] as? String ?? "").contains("truncated"), "\(cases[2])")
        XCTAssertEqual(s["counts"] as? [String: Int], ["total": 3, "ok": 2, "skipped": 0, "failed": 1])
        XCTAssertGreaterThan(s["model_load_seconds"] as? Double ?? 0, 0)

        // A rerun skips the complete outputs and retries only the failure.
        let modified = try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("case_a.nii.gz").path)[.modificationDate] as? Date
        let second = try batch("out", ["--summary", summaryPath])
        XCTAssertEqual(second.status, 1)
        XCTAssertEqual(statuses(try summary("summary.json")), ["case_a.nii.gz": "skipped", "case_b.nii": "skipped", "case_c.nii.gz": "failed"])
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("case_a.nii.gz").path)[.modificationDate] as? Date, modified)

        // With the corrupt case gone, everything is done: status 0.
        try FileManager.default.removeItem(at: inputs.appendingPathComponent("case_c.nii.gz"))
        let third = try batch("out", ["--quiet"])
        XCTAssertEqual(third.status, 0, third.stderr)
        XCTAssertEqual(third.stdout + third.stderr, "")
    }

    func testShardsSplitTheCases() throws {
        // Explicit shards: cases 0 and 2 for 0/2, case 1 for 1/2; together every case once.
        let zero = try batch("shards", ["--shard", "0/2", "--summary", dir.appendingPathComponent("s0.json").path])
        let one = try batch("shards", ["--shard", "1/2", "--summary", dir.appendingPathComponent("s1.json").path])
        XCTAssertEqual(zero.status, 1, "the corrupt case_c is in shard 0")
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(statuses(try summary("s0.json")), ["case_a.nii.gz": "ok", "case_c.nii.gz": "failed"])
        XCTAssertEqual(statuses(try summary("s1.json")), ["case_b.nii": "ok"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("shards").path).sorted(),
                       ["case_a.nii.gz", "case_b.nii"])

        // A SLURM array task: SLURM_ARRAY_TASK_ID counts from SLURM_ARRAY_TASK_MIN.
        let slurm = try batch("slurm", ["--summary", dir.appendingPathComponent("slurm.json").path],
                              environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"])
        XCTAssertEqual(slurm.status, 0, slurm.stderr)
        XCTAssertTrue(slurm.stderr.contains("shard 1/2 from SLURM_ARRAY_TASK_ID"), slurm.stderr)
        XCTAssertEqual(statuses(try summary("slurm.json")), ["case_b.nii": "ok"])

        // A Kubernetes indexed Job: JOB_COMPLETION_INDEX with --shard-count.
        let k8s = try batch("k8s", ["--shard-count", "3", "--summary", dir.appendingPathComponent("k8s.json").path],
                            environment: ["JOB_COMPLETION_INDEX": "2"])
        XCTAssertEqual(k8s.status, 1)
        XCTAssertEqual(statuses(try summary("k8s.json")), ["case_c.nii.gz": "failed"])
        let noCount = try batch("k8s", [], environment: ["JOB_COMPLETION_INDEX": "2"])
        XCTAssertEqual(noCount.status, 2)
        XCTAssertTrue(noCount.stderr.contains("--shard-count"), noCount.stderr)

        // An explicit --shard wins over the environment.
        let explicit = try batch("explicit", ["--shard", "0/3", "--summary", dir.appendingPathComponent("e.json").path],
                                 environment: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"])
        XCTAssertEqual(explicit.status, 0)
        XCTAssertEqual(statuses(try summary("e.json")), ["case_a.nii.gz": "ok"])
    }

    /// Two workers (here both on the CPU device, each with its own loaded model) share the queue.
    func testSeveralWorkersShareTheQueue() throws {
        let r = try CascadesegBinary.run(["segment", SegmenterTests.modelPath, "--input-dir", inputs.path, "--output-dir",
                                          dir.appendingPathComponent("two").path, "--devices", "cpu,cpu",
                                          "--summary", dir.appendingPathComponent("two.json").path])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("2 device(s)"), r.stderr)
        let s = try summary("two.json")
        XCTAssertEqual(statuses(s), ["case_a.nii.gz": "ok", "case_b.nii": "ok", "case_c.nii.gz": "failed"])
        XCTAssertEqual((s["devices"] as? [String])?.count, 2)
        for name in ["case_a.nii.gz", "case_b.nii"] {
            XCTAssertEqual(try NiftiImage(contentsOf: dir.appendingPathComponent("two/\(name)").path).voxels, expected, name)
        }
    }

    func testUsageErrors() throws {
        for (extra, words) in [(["--shard", "2/2"], "0 <= I < N"), (["--shard", "1"], "I/N"), (["--report", "r.json"], "--summary"),
                               (["--devices", "0"], "--device or --devices")] {
            let r = try batch("bad", extra)
            XCTAssertEqual(r.status, 2, "\(extra)")
            XCTAssertTrue(r.stderr.contains(words), "\(extra): \(r.stderr)")
        }
        let single = try CascadesegBinary.run(["segment", SegmenterTests.modelPath, SegmenterTests.imagePath, "-o", "x.nii.gz", "--shard", "0/2"])
        XCTAssertEqual(single.status, 2)
        XCTAssertTrue(single.stderr.contains("batch mode"), single.stderr)
        let missing = try CascadesegBinary.run(["segment", SegmenterTests.modelPath, "--input-dir", dir.appendingPathComponent("none").path,
                                                "--output-dir", dir.appendingPathComponent("o").path])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("cannot list --input-dir"), missing.stderr)
    }
}
