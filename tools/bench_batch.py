#!/usr/bin/env python3
"""Batch mode against one process per image: model load, first-case overhead, throughput.

    python3 tools/bench_batch.py [--binary .build/release/cascadeseg] [--cases 8] [--repeat 3]

Copies the cascade test fixture's phantom (64x56x48, Tests/CascadeSegTests/Fixtures/cascade)
N times into a temporary folder, warms PoCL's kernel cache with one run, then measures, each
`--repeat` times (medians reported):
  - single: `cascadeseg segment` once per image, a new process each (model load, kernel
    builds from the warm cache, one segmentation, exit);
  - batch: one `cascadeseg segment --input-dir` over all N images (model loaded and networks
    built once), from its --summary: model load seconds, the first case, the later cases;
  - batch2: the same with `--devices cpu,cpu` (two workers sharing the one CPU device).
Prints a Markdown table.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "Tests", "CascadeSegTests", "Fixtures", "cascade")


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "cascadeseg"))
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    model = os.path.join(FIXTURE, "cascade.cseg")
    work = tempfile.mkdtemp(prefix="cascadeseg-bench-batch-")
    try:
        inputs = os.path.join(work, "in")
        os.makedirs(inputs)
        for i in range(a.cases):
            shutil.copy(os.path.join(FIXTURE, "phantom.nii.gz"), os.path.join(inputs, f"case_{i:03d}.nii.gz"))
        images = sorted(os.listdir(inputs))
        timed([a.binary, "segment", model, os.path.join(inputs, images[0]), "-o", os.path.join(work, "warm.nii.gz"),
               "--device", "cpu", "--quiet"])

        single, batch, batch2, load, first, later = [], [], [], [], [], []
        for r in range(a.repeat):
            out = os.path.join(work, f"single{r}")
            os.makedirs(out)
            t = time.perf_counter()
            for name in images:
                timed([a.binary, "segment", model, os.path.join(inputs, name), "-o", os.path.join(out, name), "--device", "cpu", "--quiet"])
            single.append(time.perf_counter() - t)

            summary = os.path.join(work, f"batch{r}.json")
            batch.append(timed([a.binary, "segment", model, "--input-dir", inputs, "--output-dir", os.path.join(work, f"batch{r}"),
                                "--device", "cpu", "--summary", summary, "--quiet"]))
            s = json.load(open(summary))
            load.append(s["model_load_seconds"])
            first.append(s["cases"][0]["seconds"])
            later.append(statistics.median(c["seconds"] for c in s["cases"][1:]))

            batch2.append(timed([a.binary, "segment", model, "--input-dir", inputs, "--output-dir", os.path.join(work, f"batch2_{r}"),
                                 "--devices", "cpu,cpu", "--quiet"]))

        n = a.cases
        med = statistics.median
        print(f"| {n} phantom images (64x56x48), medians of {a.repeat} | wall s | s per image | images per minute |")
        print("|---|---:|---:|---:|")
        print(f"| one process per image (`segment IN -o OUT`) | {med(single):.2f} | {med(single) / n:.3f} | {60 * n / med(single):.0f} |")
        print(f"| batch, one worker (`--input-dir`) | {med(batch):.2f} | {med(batch) / n:.3f} | {60 * n / med(batch):.0f} |")
        print(f"| batch, two workers on the one device (`--devices cpu,cpu`) | {med(batch2):.2f} | {med(batch2) / n:.3f} | {60 * n / med(batch2):.0f} |")
        print()
        print(f"batch internals (medians): model load and network build {med(load):.3f} s, first case {med(first):.3f} s, "
              f"later cases {med(later):.3f} s each (first-case overhead {med(first) - med(later):.3f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
