#!/usr/bin/env python3
"""The cascade's results table in one run: accuracy, inference memory and time, training memory.

    tools/.venv/bin/python tools/bench_cascade_table.py            # after `make train` and `swift build -c release`

Everything in the table comes from commands this script runs now, on this machine, or from the
training logs of `make train` (training memory and time):

1. `cascadeseg bench cascade MODEL IMAGE --single-stage-model BASELINE --reference REF --json`
   on each case (`--cases`; by default the held-out augmented copies val000-002 that
   `tools/train_cascade.py --steps data` writes, and ch2better at 0.5 mm). The first case also
   runs under `--memory-budget`. The bench gives wall time and peak device memory per mode and
   Dice, IoU and HD95 per label and per size group; this script averages them over the cases.
2. The single-stage baseline network on ONNX Runtime and PyTorch (CPU, `--threads` threads, each
   in a fresh process, one warm-up then the median of `--runs`), on the first case's image
   normalized and padded as the engine does (tools/reference_cascade.py): forward time and peak
   RSS, and the fraction of voxels whose arg-max agrees with CascadeSeg's single-stage labels
   (`cascadeseg segment BASELINE`).
3. Training: peak RSS and seconds of one forward + backward of the stage-2 network on a 64^3 ROI
   crop and on the whole 1 mm volume (`measure.json` of `train_cascade.py --steps measure`), and
   the steps and seconds of the stage-2 and baseline runs (their `*_summary.json`).

Writes `<out>/cascade_table.md` (printed too), `<out>/cascade_table.json` and, with
tools/plot_bench.py, `<out>/cascade_table.png` (memory and time of every row).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
from bench_unet import peak_rss_self_mib  # noqa: E402  (VmHWM: this process image's own peak)
STATS_PREFIX = "TABLE_STATS "
TEMPLATES = Path("/usr/share/mricron/templates")


# =============================================================================================
# Child process: one runtime, one network, one input

def child_main(args) -> None:
    x = np.load(args.input)
    if args.child == "ort":
        import onnxruntime as ort
        from bench_unet import ort_session
        sess = ort_session(args.model, args.threads)
        name = sess.get_inputs()[0].name
        forward = lambda: sess.run(None, {name: x})[0]  # noqa: E731
        version = f"ONNX Runtime {ort.__version__}"
    else:
        import torch
        from train_cascade import STAGE2_CH, UNet
        torch.set_num_threads(args.threads)
        net = UNet(STAGE2_CH)
        net.load_state_dict(torch.load(args.model, weights_only=True)["net"])
        net.eval()
        xt = torch.from_numpy(x)

        def forward():
            with torch.inference_mode():
                return net(xt).numpy()
        version = f"PyTorch {torch.__version__}"
    times, y = [], None
    for i in range(args.runs + 1):  # the first is the warm-up
        y = None
        t0 = time.perf_counter()
        y = forward()
        if i > 0:
            times.append(time.perf_counter() - t0)
    d, h, w = args.shape
    labels = y[0, :, :d, :h, :w].argmax(0).astype(np.uint8)
    np.save(args.output, labels)
    print(STATS_PREFIX + json.dumps({"times": times, "peak_rss_mib": peak_rss_self_mib(), "version": version}), flush=True)


def run_child(args, child: str, model: Path, inp: Path, outp: Path, shape) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--model", str(model), "--input", str(inp),
           "--output", str(outp), "--runs", str(args.runs), "--threads", str(args.threads),
           "--shape", *map(str, shape)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    stats = [ln for ln in p.stdout.splitlines() if ln.startswith(STATS_PREFIX)]
    if p.returncode != 0 or not stats:
        raise SystemExit(f"{child} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
    return json.loads(stats[-1][len(STATS_PREFIX):])


# =============================================================================================
# Driver

def bench_case(args, name, image, ref, budget, out: Path) -> dict:
    js = out / f"bench_{name}.json"
    cmd = [str(args.cascadeseg), "bench", "cascade", str(args.model), str(image), "--reference", str(ref),
           "--single-stage-model", str(args.baseline), "--json", str(js)] + (["--memory-budget", budget] if budget else [])
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    bench = json.loads(js.read_text())
    bench["command"] = " ".join(cmd).replace(str(ROOT) + "/", "")  # repository paths as a user types them
    return bench


def runtime_rows(args, image: Path, tmp: Path) -> list:
    """ONNX Runtime and PyTorch on the baseline network, and CascadeSeg's single-stage labels."""
    import nibabel as nib
    from reference_cascade import normalize
    img = nib.load(str(image))
    vol = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)  # z, y, x: the engine's D, H, W
    x = normalize(vol, {"kind": "zscore", "foreground": "nonzero"})
    m = 8
    padded = np.zeros([(n + m - 1) // m * m for n in x.shape], np.float32)
    padded[:x.shape[0], :x.shape[1], :x.shape[2]] = x
    inp = tmp / "input.npy"
    np.save(inp, padded[None, None])
    ours = tmp / "single_stage.nii.gz"
    subprocess.run([str(args.cascadeseg), "segment", str(args.baseline), str(image), "-o", str(ours), "--quiet"], check=True)
    our_labels = np.asarray(nib.load(str(ours)).dataobj).transpose(2, 1, 0)
    rows = []
    for child, model, runtime in (("ort", args.baseline_onnx, "ONNX Runtime"), ("torch", args.baseline_pt, "PyTorch")):
        stats = run_child(args, child, model, inp, tmp / f"{child}.npy", x.shape)
        labels = np.load(tmp / f"{child}.npy")
        agree = float((labels == our_labels).mean())
        rows.append({"mode": f"single-stage, {runtime}",
                     "runtime": stats["version"], "seconds": statistics.median(stats["times"]), "runs": stats["times"],
                     "peak_rss_mib": stats["peak_rss_mib"], "label_agreement_with_cascadeseg": agree,
                     "input_shape": list(padded.shape)})
    return rows


def training_rows(work: Path) -> dict:
    out = {}
    measure = work / "measure.json"
    if measure.exists():
        out["measure"] = json.loads(measure.read_text())
    for name in ("stage1", "stage2", "baseline"):
        f = work / f"{name}_summary.json"
        if f.exists():
            s = json.loads(f.read_text())
            steps = s["steps"] - s.get("resumed_at_step", 0)
            out[name] = {"steps": s["steps"], "steps_this_run": steps, "seconds": s["seconds"],
                         "seconds_per_step": s["seconds"] / max(1, steps), "peak_rss_mb": s["peak_rss_mb"]}
    return out


def mean_metrics(benches: list, mode: str, names: dict) -> dict:
    """Per-label means over the cases for one mode, and per size group the means over its labels.
    A label's group is decided by its reference volume averaged over the cases (the augmented
    copies are scaled by up to +-10 % per axis, so one case alone could move a label across a
    bound), with the bounds the bench reports (`SizeGroup.brainStructures`)."""
    per_label = {}
    for b in benches:
        for l in b["metrics"][mode]["labels"]:
            per_label.setdefault(l["label"], []).append(l)

    def avg(values):
        v = [x for x in values if x is not None and np.isfinite(x)]
        return float(np.mean(v)) if v else None
    labels = {k: {"name": names.get(k, str(k)), "dice": avg([l["dice"] for l in v]), "iou": avg([l["iou"] for l in v]),
                  "hd95_mm": avg([l["hd95_mm"] for l in v]), "reference_mm3": avg([l["reference_mm3"] for l in v]),
                  "infinite_hd95": sum(l["hd95_mm"] is None and l["reference_mm3"] > 0 for l in v)}
              for k, v in sorted(per_label.items())}
    groups = {}
    for g in benches[0]["metrics"][mode]["size_groups"]:
        upper = g["upper_mm3"] if g["upper_mm3"] is not None else float("inf")
        members = [k for k, l in labels.items() if l["reference_mm3"] and g["lower_mm3"] <= l["reference_mm3"] < upper]
        groups[g["name"]] = {"labels": members, "dice": avg([labels[k]["dice"] for k in members]),
                             "iou": avg([labels[k]["iou"] for k in members]),
                             "hd95_mm": avg([labels[k]["hd95_mm"] for k in members]),
                             "infinite_hd95": sum(labels[k]["infinite_hd95"] for k in members)}
    overall = {"dice": avg([b["metrics"][mode]["mean_dice"] for b in benches]),
               "iou": avg([b["metrics"][mode]["mean_iou"] for b in benches]),
               "hd95_mm": avg([b["metrics"][mode]["mean_hd95_mm"] for b in benches])}
    return {"labels": labels, "groups": groups, "overall": overall}


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def markdown(args, benches, runtimes, accuracy, training) -> str:
    first = benches[0]
    rows = first["rows"]
    base = next(r for r in rows if r["mode"] == "single-stage")
    lines = [f"Cases: {', '.join(b['case'] for b in benches)}. Time and memory: `{first['case']}` "
             f"({first['device']}); accuracy: mean over the cases.", "",
             "**Inference** (first case; CascadeSeg rows from one `bench cascade` process, ONNX Runtime and PyTorch "
             f"rows from fresh processes on {args.threads} threads, network forward only, median of {args.runs} after a warm-up)", "",
             "| mode | time s | peak memory MiB | time vs single-stage | memory vs single-stage | command |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| CascadeSeg {r['mode']} | {r['seconds']:.2f} | {r['peak_device_bytes'] / 2**20:.0f} (device) | "
                     f"{base['seconds'] / r['seconds']:.2f}x | {base['peak_device_bytes'] / r['peak_device_bytes']:.2f}x | "
                     f"`bench cascade` |")
    for r in runtimes:
        lines.append(f"| {r['mode']} (forward) | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} (RSS) | "
                     f"{base['seconds'] / r['seconds']:.2f}x | {base['peak_device_bytes'] / 2**20 / r['peak_rss_mib']:.2f}x | "
                     f"`{r['runtime']}`, labels agree with CascadeSeg single-stage on {100 * r['label_agreement_with_cascadeseg']:.3f}% of voxels |")
    modes = ["single-stage", "cascade"]
    acc = {m: accuracy[m] for m in modes}
    lines += ["", "**Accuracy per size group** (of the reference volume averaged over the cases; per-label means over "
              "the cases, then the mean over the group's labels; HD95 means over finite values; misses = label-cases "
              "with no voxel predicted, HD95 infinite)", "",
              "| group | labels | single-stage Dice | cascade Dice | difference | single-stage IoU | cascade IoU | "
              "single-stage HD95 mm | cascade HD95 mm | misses (single / cascade) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for g, a in acc["single-stage"]["groups"].items():
        b = acc["cascade"]["groups"][g]
        diff = None if a["dice"] is None or b["dice"] is None else b["dice"] - a["dice"]
        lines.append(f"| {g} | {','.join(map(str, a['labels']))} | {fmt(a['dice'])} | {fmt(b['dice'])} | {fmt(diff, '+.3f')} | "
                     f"{fmt(a['iou'])} | {fmt(b['iou'])} | {fmt(a['hd95_mm'], '.2f')} | {fmt(b['hd95_mm'], '.2f')} | "
                     f"{a['infinite_hd95']} / {b['infinite_hd95']} |")
    a, b = acc["single-stage"]["overall"], acc["cascade"]["overall"]
    lines.append(f"| all | 1-16 | {fmt(a['dice'])} | {fmt(b['dice'])} | {fmt(b['dice'] - a['dice'], '+.3f')} | {fmt(a['iou'])} | "
                 f"{fmt(b['iou'])} | {fmt(a['hd95_mm'], '.2f')} | {fmt(b['hd95_mm'], '.2f')} | "
                 f"{sum(g['infinite_hd95'] for g in acc['single-stage']['groups'].values())} / "
                 f"{sum(g['infinite_hd95'] for g in acc['cascade']['groups'].values())} |")
    lines += ["", "**Accuracy per label** (Dice, HD95 mm; mean over the cases)", "",
              "| label | volume mm3 | single-stage Dice | cascade Dice | single-stage IoU | cascade IoU | single-stage HD95 | cascade HD95 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, la in acc["single-stage"]["labels"].items():
        lb = acc["cascade"]["labels"][k]
        lines.append(f"| {k} {la['name']} | {fmt(la['reference_mm3'], '.0f')} | {fmt(la['dice'])} | {fmt(lb['dice'])} | "
                     f"{fmt(la['iou'])} | {fmt(lb['iou'])} | {fmt(la['hd95_mm'], '.2f')} | {fmt(lb['hd95_mm'], '.2f')} |")
    m = training.get("measure")
    if m and "peak_rss_mb" in m.get("whole", {}):
        c, w = m["crop"], m["whole"]
        lines += ["", "**Training memory and time** (stage-2 network, one forward + backward, batch 1, "
                  "`train_cascade.py --steps measure`)", "",
                  "| input | peak RSS MB | seconds per step | per 40-image epoch (one sample per image) |", "|---|---:|---:|---:|",
                  f"| ROI crop {'x'.join(map(str, c['shape']))} | {c['peak_rss_mb']} | {c['seconds']:.1f} | {40 * c['seconds'] / 60:.1f} min |",
                  f"| whole volume {'x'.join(map(str, w['shape']))} | {w['peak_rss_mb']} | {w['seconds']:.1f} | {40 * w['seconds'] / 60:.1f} min |",
                  f"| whole / crop | {w['peak_rss_mb'] / c['peak_rss_mb']:.1f}x | {w['seconds'] / c['seconds']:.1f}x | |"]
    for name in ("stage2", "baseline"):
        if name in training:
            t = training[name]
            lines.append(f"\n{name} training run: {t['steps_this_run']} steps (to step {t['steps']}) in {t['seconds']} s "
                         f"({t['seconds_per_step']:.2f} s per step), peak RSS {t['peak_rss_mb']} MB.")
    lines += ["", "Commands:", ""] + [f"- `{b['command']}`" for b in benches]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    work = Path("/tmp/cascadeseg-train")
    ap.add_argument("--cascadeseg", type=Path, default=ROOT / ".build" / "release" / "cascadeseg")
    ap.add_argument("--model", type=Path, default=ROOT / "ModelZoo" / "brain-deepgrey.cseg")
    ap.add_argument("--baseline", type=Path, default=ROOT / "ModelZoo" / "brain-deepgrey-baseline.cseg")
    ap.add_argument("--work", type=Path, default=work, help="train_cascade.py's --work (logs, ONNX, .pt, val copies)")
    ap.add_argument("--baseline-onnx", type=Path)
    ap.add_argument("--baseline-pt", type=Path)
    ap.add_argument("--cases", default="", help="NAME=IMAGE:REFERENCE,... (default: val000-002 and ch2better)")
    ap.add_argument("--memory-budget", default="64M")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    # child mode
    ap.add_argument("--child", choices=["ort", "torch"])
    ap.add_argument("--input", type=Path)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--shape", type=int, nargs=3)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return
    args.baseline_onnx = args.baseline_onnx or args.work / "baseline.onnx"
    args.baseline_pt = args.baseline_pt or args.work / "baseline.pt"
    if args.cases:
        cases = [(c.split("=", 1)[0], *c.split("=", 1)[1].split(":")) for c in args.cases.split(",")]
    else:
        cases = [(f"val{i:03d}", args.work / f"val{i:03d}.nii.gz", args.work / f"val{i:03d}_ref.nii.gz") for i in range(3)]
        cases.append(("ch2better", TEMPLATES / "ch2better.nii.gz", args.work / "validate" / "ch2better_ref.nii.gz"))
    for path in [args.cascadeseg, args.model, args.baseline, args.baseline_onnx, args.baseline_pt] + \
            [Path(p) for c in cases for p in c[1:]]:
        if not Path(path).exists():
            raise SystemExit(f"missing {path}: run `make train` (tools/train_cascade.py) and `swift build -c release` first")
    args.out.mkdir(parents=True, exist_ok=True)
    benches = []
    for i, (name, image, ref) in enumerate(cases):
        b = bench_case(args, name, image, ref, args.memory_budget if i == 0 else None, args.out)
        b["case"] = name
        benches.append(b)
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = runtime_rows(args, Path(cases[0][1]), Path(tmp))
    from train_cascade import TARGETS
    names = {k: n for k, (_, n) in enumerate(TARGETS, 1)}
    accuracy = {mode: mean_metrics(benches, mode, names) for mode in ("single-stage", "cascade")}
    training = training_rows(args.work)
    md = markdown(args, benches, runtimes, accuracy, training)
    (args.out / "cascade_table.md").write_text(md)
    chart = {"device": benches[0]["device"], "model": benches[0]["model"], "image": benches[0]["image"],
             "memory_budget_bytes": benches[0].get("memory_budget_bytes"),
             "memory_title": "peak memory (MiB)\n(device for CascadeSeg rows, RSS for the others)",
             "rows": benches[0]["rows"] + [{"mode": r["mode"] + " (forward)", "seconds": r["seconds"],
                                            "peak_device_bytes": r["peak_rss_mib"] * 2**20} for r in runtimes]}
    result = {"benches": benches, "runtimes": runtimes, "accuracy": accuracy, "training": training, "chart": chart}
    (args.out / "cascade_table.json").write_text(json.dumps(result, indent=1))
    chart_json = args.out / "cascade_table_chart.json"
    chart_json.write_text(json.dumps(chart, indent=1))
    subprocess.run([sys.executable, str(TOOLS / "plot_bench.py"), str(chart_json), "-o", str(args.out / "cascade_table.png")],
                   check=True)
    print(md)


if __name__ == "__main__":
    main()
