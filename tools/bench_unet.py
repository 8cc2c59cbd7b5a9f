#!/usr/bin/env python3
"""Whole-network benchmark: an nnU-Net-like 3D U-Net on CascadeSeg, ONNX Runtime and PyTorch.

    tools/setup.sh
    tools/.venv/bin/python tools/bench_unet.py --cascadeseg .build/release/cascadeseg --out .build/bench

Builds the U-Net of nnU-Net's PlainConvUNet 3d_fullres defaults in PyTorch with random weights
(deterministic seed, random biases and norm affines): 5 resolution stages of 32, 64, 128, 256, 320
channels (`--base 16`: 16 .. 256), each stage two [Conv3d 3x3x3 (bias) -> InstanceNorm3d (affine)
-> LeakyReLU(0.01)] blocks, the first conv of stages 1..4 with stride 2, a decoder of
ConvTranspose3d(k2, s2), concatenation with the skip and two blocks per stage, and a 1x1x1 head to
17 classes. It writes to `--out`:

- `unet.cseg` (`unet_b16.cseg` for `--base 16`): the network translated by hand with the helpers of
  tools/make_fixtures.py (InstanceNorm with the LeakyReLU fused), checked against PyTorch by
  make_fixtures' reference interpreter on a small input before anything is timed;
- `unet.onnx`: torch.onnx.export, opset 17, dynamic spatial axes;
- `unet.pt`: the state dict the PyTorch runs load;
- `input_<D>x<H>x<W>.npy`: a random input per size.

Then, for each size, each runtime runs in fresh processes (so that peak RSS is per run), all on the
same number of threads (`--threads`, default 2):

- ONNX Runtime, CPU provider, intra-op threads = N, inter-op 1, all graph optimizations: one
  warm-up run, then the median of `--runs` (3) timed runs of `session.run`, in one process whose
  peak RSS (VmHWM) is reported;
- PyTorch eval mode under `torch.inference_mode()`, `torch.set_num_threads(N)`: same;
- CascadeSeg: `cascadeseg run MODEL --input X --output Y --device cpu`, one process per forward
  (the CLI runs one forward per process): one warm-up process (the first run in a process builds
  its OpenCL programs; PoCL caches the compiled kernels on disk), then `--runs` timed processes.
  Reported: the engine's own forward seconds (from its stderr line: upload, all kernels,
  download), the process wall time (model load, decompression, OpenCL set-up, .npy I/O
  included), the engine's peak device memory, and the process peak RSS (GNU time). PoCL is held
  to N threads with POCL_MAX_PTHREAD_COUNT / POCL_CPU_MAX_CU_COUNT.

Outputs are compared: relative L2 (||a - b|| / ||b||, float64) of the CascadeSeg logits against
PyTorch and against ONNX Runtime, and the fraction of voxels whose argmax label agrees. One more
CascadeSeg run with `--profile` (on the first size unless `--profile-size` says otherwise) gives
the per-op times.

The Markdown table is printed and saved as `<out>/bench_unet.md` (with the profile). The exit
status is 1 when a CascadeSeg run fails or its logits differ from PyTorch by more than
`--tolerance` (1e-4) relative L2, after everything has been reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

CLASSES = 17
WIDTHS = {32: (32, 64, 128, 256, 320), 16: (16, 32, 64, 128, 256)}
SEED = 2024
STATS_PREFIX = "BENCH_STATS "


def mib(nbytes: float) -> float:
    return nbytes / 1048576.0


def peak_rss_self_mib() -> float:
    """This process image's peak RSS. VmHWM (the high-water mark of the current address space)
    rather than getrusage's ru_maxrss: on Linux ru_maxrss also keeps the high-water mark of the
    address space before exec, i.e. of the parent that forked us (the benchmark driver, with
    torch and the network loaded), which would put a floor under every child's figure."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def parse_size(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected DxHxW (or one number)")
    return tuple(parts)  # type: ignore[return-value]


def size_tag(size) -> str:
    return "x".join(map(str, size))


# =============================================================================================
# The network (PyTorch) and its translation. torch is imported lazily so that the ONNX Runtime
# child process does not carry it in its RSS.

def build_network(base: int):
    import torch
    import torch.nn as nn
    from make_fixtures import ConvBlock

    class PlainUNet3D(nn.Module):
        """nnU-Net PlainConvUNet (3d_fullres defaults), 5 stages, no deep supervision."""

        def __init__(self, widths, cin=1, classes=CLASSES):
            super().__init__()
            self.widths = tuple(widths)
            self.encoder = nn.ModuleList()
            prev = cin
            for s, w in enumerate(widths):
                stride = 1 if s == 0 else 2
                self.encoder.append(nn.Sequential(ConvBlock(prev, w, stride), ConvBlock(w, w)))
                prev = w
            self.up = nn.ModuleList()
            self.decoder = nn.ModuleList()
            for s in range(len(widths) - 2, -1, -1):  # deepest decoder stage first
                self.up.append(nn.ConvTranspose3d(widths[s + 1], widths[s], 2, stride=2, bias=True))
                self.decoder.append(nn.Sequential(ConvBlock(2 * widths[s], widths[s]),
                                                  ConvBlock(widths[s], widths[s])))
            self.head = nn.Conv3d(widths[0], classes, 1, bias=True)

        def forward(self, x):
            skips = []
            for stage in self.encoder:
                x = stage(x)
                skips.append(x)
            x = skips.pop()
            for up, dec in zip(self.up, self.decoder):
                x = dec(torch.cat([up(x), skips.pop()], 1))  # nnU-Net order: upsampled, skip
            return self.head(x)

    return PlainUNet3D(WIDTHS[base])


def make_network(base: int, seed: int):
    import torch
    from make_fixtures import randomize
    torch.manual_seed(seed)
    net = build_network(base)
    randomize(net, torch.Generator().manual_seed(seed))
    return net.eval()


def translate(net) -> tuple[dict, dict]:
    from make_fixtures import GraphBuilder
    g = GraphBuilder("stage1")

    def block(x, b, name):
        y = g.conv(x, b.conv, f"{name}.conv")
        ins = [y, g.weight(f"{name}.norm.weight", b.norm.weight),
               g.weight(f"{name}.norm.bias", b.norm.bias)]
        return g.node("InstanceNormalization", ins, f"{name}.norm",
                      {"epsilon": b.norm.eps, "activation": "leaky_relu",
                       "activation_alpha": b.act.negative_slope})

    def seq(x, s, name):
        for i, b in enumerate(s):
            x = block(x, b, f"{name}.{i}")
        return x

    x = "image"
    skips = []
    for s, stage in enumerate(net.encoder):
        x = seq(x, stage, f"enc{s}")
        skips.append(x)
    x = skips.pop()
    n = len(net.widths)
    for i, (up, dec) in enumerate(zip(net.up, net.decoder)):
        s = n - 2 - i
        u = g.conv_transpose(x, up, f"up{s}")
        c = g.node("Concat", [u, skips.pop()], f"cat{s}", {"axis": 1})
        x = seq(c, dec, f"dec{s}")
    g.conv(x, net.head, "head")
    g.nodes[-1]["outputs"] = ["logits"]
    m = 2 ** (n - 1)
    return g.graph(1, CLASSES, [m, m, m], "logits"), g.tensors


def make_input(size, seed: int) -> np.ndarray:
    rs = np.random.RandomState(seed + 7919 * size[0] + 31 * size[1] + size[2])
    return rs.standard_normal((1, 1) + tuple(size)).astype(np.float32)


def prepare(args, stem: str) -> dict:
    """Builds the network, writes .pt/.cseg/.onnx and checks the translation on a small input."""
    import torch
    from cseg import read_cseg, write_cseg
    from make_fixtures import interpret, metadata  # (sets 4 threads on import)

    torch.set_num_threads(args.threads)
    out = args.out
    t0 = time.perf_counter()
    net = make_network(args.base, args.seed)
    params = sum(p.numel() for p in net.parameters())
    torch.save(net.state_dict(), out / f"{stem}.pt")

    graph, tensors = translate(net)
    meta = metadata(stem, f"nnU-Net-like 3D U-Net, 5 stages {'/'.join(map(str, net.widths))} "
                          f"channels, InstanceNorm + LeakyReLU, {CLASSES} classes, random weights "
                          f"(seed {args.seed}); benchmark model", 1, CLASSES)
    cseg_path = out / f"{stem}.cseg"
    tmp = out / f".{stem}.cseg.tmp"
    write_cseg(tmp, meta, [graph], tensors, dtype="float32", level=9)
    _, graphs_r, tensors_r = read_cseg(tmp)

    # The translation, checked before anything is timed (a wrong graph is not the engine's fault).
    m = graph["size_multiple"][0]
    x = make_input((2 * m, 2 * m, 2 * m), args.seed)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    got = interpret(graphs_r[0], tensors_r, x)
    err = rel_l2(got, ref)
    if not err <= 1e-5:
        raise SystemExit(f"translation check failed: interpreter vs PyTorch relative L2 {err:.3g}")
    os.replace(tmp, cseg_path)

    onnx_path = out / f"{stem}.onnx"
    export_onnx(net, onnx_path, x)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_err = rel_l2(sess.run(None, {"image": x})[0], ref)
    if not onnx_err <= 1e-4:
        raise SystemExit(f"ONNX export check failed: onnxruntime vs PyTorch relative L2 {onnx_err:.3g}")
    ops: dict[str, int] = {}
    for n in graph["nodes"]:
        ops[n["op"]] = ops.get(n["op"], 0) + 1
    info = {"params": params, "cseg_bytes": cseg_path.stat().st_size,
            "onnx_bytes": onnx_path.stat().st_size, "ops": ops,
            "check_size": size_tag(x.shape[2:]), "interp_err": err, "onnx_err": onnx_err,
            "size_multiple": m, "seconds": time.perf_counter() - t0}
    print(f"built {stem}: {params} parameters, {cseg_path} ({info['cseg_bytes']} bytes), "
          f"{onnx_path} ({info['onnx_bytes']} bytes); ops {ops}; check at "
          f"{info['check_size']}: interpreter {err:.2e}, onnxruntime {onnx_err:.2e} rel L2 "
          f"({info['seconds']:.1f} s)", flush=True)
    return info


def export_onnx(net, path: Path, example: np.ndarray) -> None:
    import warnings
    import torch
    axes = {2: "D", 3: "H", 4: "W"}
    kwargs = dict(input_names=["image"], output_names=["logits"], opset_version=17,
                  dynamic_axes={"image": axes, "logits": axes}, do_constant_folding=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (torch.from_numpy(example),), str(path), dynamo=False, **kwargs)
        except TypeError:  # a torch without the `dynamo` keyword: the legacy exporter anyway
            torch.onnx.export(net, (torch.from_numpy(example),), str(path), **kwargs)


# =============================================================================================
# Comparison (chunked over depth: whole-brain logits are 17 x 4.9 M floats)

def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1e-30))


def compare(path_a: Path, path_b: Path) -> dict:
    a = np.load(path_a, mmap_mode="r")
    b = np.load(path_b, mmap_mode="r")
    if a.shape != b.shape:
        return {"error": f"shape {a.shape} vs {b.shape}"}
    diff2 = ref2 = 0.0
    agree = total = 0
    max_abs = 0.0
    step = max(1, 4_000_000 // max(1, int(np.prod(a.shape[3:])) * a.shape[1]))
    for z in range(0, a.shape[2], step):
        ca = np.asarray(a[:, :, z:z + step], np.float64)
        cb = np.asarray(b[:, :, z:z + step], np.float64)
        d = ca - cb
        diff2 += float(np.sum(d * d))
        ref2 += float(np.sum(cb * cb))
        max_abs = max(max_abs, float(np.max(np.abs(d))))
        agree += int(np.sum(np.argmax(ca, 1) == np.argmax(cb, 1)))
        total += ca.shape[2] * ca.shape[3] * ca.shape[4]
    return {"rel_l2": (diff2 ** 0.5) / max(ref2 ** 0.5, 1e-30), "agree": agree / total,
            "max_abs": max_abs}


# =============================================================================================
# Child processes

def ort_session(model: Path, threads: int):
    """An ONNX Runtime CPU session as every benchmark here runs it: `threads` intra-op threads,
    one inter-op thread, sequential execution, all graph optimizations."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def child_main(args) -> None:
    x = np.load(args.input)
    times = []
    if args.child == "ort":
        import onnxruntime as ort
        t0 = time.perf_counter()
        sess = ort_session(args.model, args.threads)
        setup = time.perf_counter() - t0
        name = sess.get_inputs()[0].name

        def forward():
            return sess.run(None, {name: x})[0]
        version = f"onnxruntime {ort.__version__}"
    else:
        import torch
        import make_fixtures  # noqa: F401  (its import sets 4 threads: import it first)
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        t0 = time.perf_counter()
        net = build_network(args.base)
        net.load_state_dict(torch.load(args.model, weights_only=True))
        net.eval()
        xt = torch.from_numpy(x)
        setup = time.perf_counter() - t0

        def forward():
            with torch.inference_mode():
                return net(xt).numpy()
        version = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    y = None
    for i in range(args.runs + 1):  # the first is the warm-up
        y = None  # release the previous output before the next run
        t0 = time.perf_counter()
        y = forward()
        dt = time.perf_counter() - t0
        if i > 0:
            times.append(dt)
        print(f"  {args.child} run {i}{' (warm-up)' if i == 0 else ''}: {dt:.3f} s",
              file=sys.stderr, flush=True)
    np.save(args.output, np.ascontiguousarray(y, dtype=np.float32))
    peak = peak_rss_self_mib()
    import resource
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(STATS_PREFIX + json.dumps({"times": times, "setup": setup, "peak_rss_mib": peak,
                                     "ru_maxrss_mib": ru_maxrss, "version": version}), flush=True)


def run_child(args, child: str, model: Path, inp: Path, outp: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--model", str(model),
           "--input", str(inp), "--output", str(outp), "--runs", str(args.runs),
           "--threads", str(args.threads), "--base", str(args.base)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sys.stderr.write(p.stderr)
    stats = [ln for ln in p.stdout.splitlines() if ln.startswith(STATS_PREFIX)]
    if p.returncode != 0 or not stats:
        return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-2000:]}"}
    return json.loads(stats[-1][len(STATS_PREFIX):])


FORWARD_RE = re.compile(r" in ([0-9.]+) s, peak device memory ([0-9.]+) MiB \(weights ([0-9.]+) MiB\)")


def run_cascadeseg_once(args, model: Path, inp: Path, outp: Path, profile: bool = False) -> dict:
    cmd = [str(args.cascadeseg), "run", str(model), "--input", str(inp), "--output", str(outp),
           "--device", args.device] + (["--profile"] if profile else [])
    n = str(args.threads)
    env = dict(os.environ, POCL_MAX_PTHREAD_COUNT=n, POCL_CPU_MAX_CU_COUNT=n)
    # Peak RSS: GNU time's %M (its wait4 of a child forked from the small `time` process). A
    # direct child of this (large) process would inherit this process's RSS high-water mark
    # through fork + exec, so ru_maxrss of wait4 here would be a floor of our own size.
    rss_file = args.out / ".cascadeseg_rss.txt"
    gnu_time = Path("/usr/bin/time")
    wrapped = ([str(gnu_time), "-o", str(rss_file), "-f", "%M"] + cmd
               if gnu_time.exists() and os.access(gnu_time, os.X_OK) else cmd)
    t0 = time.perf_counter()
    p = subprocess.run(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    stderr = p.stderr
    rss = None
    if wrapped is not cmd:
        lines = rss_file.read_text().split() if rss_file.exists() else []
        rss_file.unlink(missing_ok=True)
        rss = float(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
        stderr = "\n".join(ln for ln in stderr.splitlines()
                           if not ln.startswith("Command exited with non-zero status"))
    rec = {"cmd": " ".join(cmd), "wall": wall, "peak_rss_mib": rss if rss is not None else
           float("nan"), "stderr": stderr, "rc": p.returncode}
    m = FORWARD_RE.search(stderr)
    if p.returncode != 0 or not m:
        rec["error"] = f"exit {p.returncode}: {(stderr + p.stdout).strip()[-2000:]}"
        return rec
    rec.update(forward=float(m.group(1)), device_mib=float(m.group(2)),
               weights_mib=float(m.group(3)))
    return rec


def run_cascadeseg(args, model: Path, inp: Path, outp: Path) -> dict:
    runs = []
    for i in range(args.runs + 1):  # the first is the warm-up
        r = run_cascadeseg_once(args, model, inp, outp)
        if "error" in r:
            print(f"  cascadeseg run {i} FAILED: {r['cmd']}\n{r['error']}", file=sys.stderr,
                  flush=True)
            return {"error": r["error"], "cmd": r["cmd"]}
        print(f"  cascadeseg run {i}{' (warm-up)' if i == 0 else ''}: forward {r['forward']:.3f} s,"
              f" process {r['wall']:.3f} s, device {r['device_mib']:.1f} MiB, RSS "
              f"{r['peak_rss_mib']:.1f} MiB", file=sys.stderr, flush=True)
        if i > 0:
            runs.append(r)
    return {"times": [r["forward"] for r in runs], "walls": [r["wall"] for r in runs],
            "device_mib": max(r["device_mib"] for r in runs),
            "weights_mib": runs[0]["weights_mib"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "cmd": runs[0]["cmd"]}


# =============================================================================================
# Report

def fmt_runs(ts) -> str:
    return ", ".join(f"{t:.2f}" for t in ts)


def fmt_best(ts) -> str:
    return f"{min(ts):.2f}"


def table(rows: list[dict]) -> str:
    head = ("| network | input | runtime | seconds (median) | runs (s) | best (s) "
            "| runtime s / CascadeSeg s | peak device MiB | peak RSS MiB | rel. L2 vs PyTorch "
            "| rel. L2 vs ORT | argmax agreement vs PyTorch |\n"
            "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        "| " + " | ".join(str(r.get(k, "")) for k in
                          ("network", "input", "runtime", "median", "runs", "best", "ratio",
                           "device", "rss", "l2_torch", "l2_ort", "agree")) + " |\n"
        for r in rows)


def profile_summary(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("per-op time")), None)
    return "\n".join(lines[start - 1 if start else 0:]) if start is not None else stderr.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cascadeseg", type=Path, default=ROOT / ".build" / "release" / "cascadeseg",
                    help="the cascadeseg binary (default .build/release/cascadeseg)")
    ap.add_argument("--out", type=Path, default=ROOT / ".build" / "bench")
    ap.add_argument("--base", type=int, default=32, choices=sorted(WIDTHS),
                    help="channels of the first stage: 32 (32..320) or 16 (16..256)")
    ap.add_argument("--sizes", type=lambda s: [parse_size(t) for t in s.split(",") if t],
                    default=[(128, 128, 128), (160, 192, 160)],
                    help="comma-separated DxHxW sizes (default 128x128x128,160x192x160)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (3)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every runtime (2)")
    ap.add_argument("--runtimes", default="ort,torch,cascadeseg",
                    help="comma-separated subset of ort,torch,cascadeseg")
    ap.add_argument("--device", default="cpu", help="cascadeseg --device (cpu)")
    ap.add_argument("--profile-size", type=parse_size, default=None,
                    help="size of the extra `--profile` CascadeSeg run (default: the first size)")
    ap.add_argument("--no-profile", action="store_true", help="skip the --profile run")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest CascadeSeg vs PyTorch relative L2 that passes (1e-4)")
    ap.add_argument("--keep-outputs", action="store_true",
                    help="keep the logits .npy of every runtime (large) in --out")
    ap.add_argument("--seed", type=int, default=SEED)
    # child-process mode (internal)
    ap.add_argument("--child", choices=["ort", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return

    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    for r in runtimes:
        if r not in ("ort", "torch", "cascadeseg"):
            ap.error(f"unknown runtime {r!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    binary_note = ""
    if "cascadeseg" in runtimes:
        source = args.cascadeseg.resolve()
        if not os.access(source, os.X_OK):
            ap.error(f"{source} is not an executable (build it: swift build -c release)")
        # Runs use a copy (the kernels are embedded in the binary), so that a rebuild while the
        # benchmark runs cannot mix two engine versions in one table.
        import hashlib
        import shutil
        args.cascadeseg = args.out / "cascadeseg"
        if args.cascadeseg != source:
            shutil.copy2(source, args.cascadeseg)
        digest = hashlib.sha256(args.cascadeseg.read_bytes()).hexdigest()[:16]
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(source.stat().st_mtime))
        binary_note = f"cascadeseg {source} (built {built}, sha256 {digest}…, run as a copy)"
        cache = Path(os.environ.get("CASCADESEG_CACHE_DIR",
                                    Path.home() / ".cache" / "cascadeseg"))
        tuned = sorted(p.name for p in cache.glob("tuning-*.json")) if cache.is_dir() else []
        binary_note += (f"; tuning cache: {', '.join(tuned)} in {cache}" if tuned else
                        "; no `cascadeseg tune` cache (default tuning)")
        print(binary_note, flush=True)
    stem = "unet" if args.base == 32 else f"unet_b{args.base}"
    network = f"U-Net {'-'.join(map(str, WIDTHS[args.base]))}"

    info = prepare(args, stem)
    m = info["size_multiple"]
    for size in args.sizes:
        if any(s % m for s in size):
            ap.error(f"size {size_tag(size)} is not a multiple of {m}")
    profile_size = args.profile_size or args.sizes[0]

    rows: list[dict] = []
    failures: list[str] = []
    profile_text = None
    results_json = {"network": network, "info": info, "threads": args.threads, "sizes": {}}
    for size in args.sizes:
        tag = size_tag(size)
        inp = args.out / f"input_{tag}.npy"
        np.save(inp, make_input(size, args.seed))
        print(f"\n== {network} at {tag} ({args.threads} threads)", flush=True)
        res: dict[str, dict] = {}
        outs: dict[str, Path] = {}
        for rt in runtimes:
            outp = args.out / f"out_{rt}_{stem}_{tag}.npy"
            outs[rt] = outp
            t0 = time.perf_counter()
            if rt == "ort":
                res[rt] = run_child(args, "ort", args.out / f"{stem}.onnx", inp, outp)
            elif rt == "torch":
                res[rt] = run_child(args, "torch", args.out / f"{stem}.pt", inp, outp)
            else:
                res[rt] = run_cascadeseg(args, args.out / f"{stem}.cseg", inp, outp)
            r = res[rt]
            if "error" in r:
                print(f"{rt}: FAILED ({time.perf_counter() - t0:.0f} s)\n{r['error']}", flush=True)
            else:
                print(f"{rt}: median {statistics.median(r['times']):.3f} s of "
                      f"[{fmt_runs(r['times'])}], peak RSS {r['peak_rss_mib']:.0f} MiB "
                      f"({time.perf_counter() - t0:.0f} s in all)", flush=True)

        cmp_t = cmp_o = None
        cs = res.get("cascadeseg")
        if cs and "error" not in cs:
            if "torch" in res and "error" not in res["torch"]:
                cmp_t = compare(outs["cascadeseg"], outs["torch"])
            if "ort" in res and "error" not in res["ort"]:
                cmp_o = compare(outs["cascadeseg"], outs["ort"])
        cmp_ot = None
        if all(k in res and "error" not in res[k] for k in ("ort", "torch")):
            cmp_ot = compare(outs["ort"], outs["torch"])

        if cs and "error" not in cs and profile_size == size and not args.no_profile:
            pr = run_cascadeseg_once(args, args.out / f"{stem}.cseg", inp,
                                     args.out / f"out_profile_{stem}_{tag}.npy", profile=True)
            profile_text = (f"$ {pr['cmd']}\n" + profile_summary(pr["stderr"])
                            if "error" not in pr else f"$ {pr['cmd']}\n{pr['error']}")
            (args.out / f"out_profile_{stem}_{tag}.npy").unlink(missing_ok=True)

        base_t = statistics.median(cs["times"]) if cs and "error" not in cs else None

        def ratio(t):
            return f"{t / base_t:.2f}" if base_t else "n/a"

        def l2(c):
            if c is None:
                return "n/a"
            return c.get("error") or f"{c['rel_l2']:.2e}"

        def agree(c):
            return "n/a" if c is None or "error" in c else f"{100 * c['agree']:.4f}%"

        for rt in runtimes:
            r = res[rt]
            label = {"ort": "ONNX Runtime", "torch": "PyTorch", "cascadeseg": "CascadeSeg"}[rt]
            row = {"network": network, "input": tag}
            if "error" in r:
                rows.append(dict(row, runtime=label, median="FAILED", runs="see below"))
                failures.append(f"{label} at {tag}: " + (f"`{r['cmd']}`: " if "cmd" in r else "")
                                + r["error"])
                continue
            med = statistics.median(r["times"])
            if rt == "cascadeseg":
                rows.append(dict(row, runtime="CascadeSeg (engine forward)", median=f"{med:.2f}",
                                 runs=fmt_runs(r["times"]), best=fmt_best(r["times"]), ratio="1.00",
                                 device=f"{r['device_mib']:.0f} (weights {r['weights_mib']:.0f})",
                                 rss=f"{r['peak_rss_mib']:.0f}", l2_torch=l2(cmp_t),
                                 l2_ort=l2(cmp_o), agree=agree(cmp_t)))
                wmed = statistics.median(r["walls"])
                rows.append(dict(row, runtime="CascadeSeg (whole process)", median=f"{wmed:.2f}",
                                 runs=fmt_runs(r["walls"]), best=fmt_best(r["walls"]),
                                 ratio=ratio(wmed), device="", rss=""))
            elif rt == "ort":
                rows.append(dict(row, runtime=label, median=f"{med:.2f}",
                                 runs=fmt_runs(r["times"]), best=fmt_best(r["times"]),
                                 ratio=ratio(med), device="-", rss=f"{r['peak_rss_mib']:.0f}",
                                 l2_torch=l2(cmp_ot), l2_ort="-", agree=agree(cmp_ot)))
            else:
                rows.append(dict(row, runtime=label, median=f"{med:.2f}",
                                 runs=fmt_runs(r["times"]), best=fmt_best(r["times"]),
                                 ratio=ratio(med), device="-", rss=f"{r['peak_rss_mib']:.0f}",
                                 l2_torch="-", l2_ort=l2(cmp_ot), agree="-"))
        if cmp_t is not None and not cmp_t["rel_l2"] <= args.tolerance:
            failures.append(f"CascadeSeg at {tag}: logits differ from PyTorch by relative L2 "
                            f"{cmp_t['rel_l2']:.3g} (> {args.tolerance:g}); max |diff| "
                            f"{cmp_t['max_abs']:.3g}; command `{cs['cmd']}`")
        results_json["sizes"][tag] = {"results": res, "cascadeseg_vs_torch": cmp_t,
                                      "cascadeseg_vs_ort": cmp_o, "ort_vs_torch": cmp_ot}
        if not args.keep_outputs:
            for p in outs.values():
                p.unlink(missing_ok=True)

    versions = sorted({r.get("version") for s in results_json["sizes"].values()
                       for r in s["results"].values() if r.get("version")})
    md = [f"## {network} ({info['params'] / 1e6:.1f} M parameters, {CLASSES} classes), "
          f"{args.threads} threads, median of {args.runs} runs after a warm-up\n",
          table(rows),
          "\n'runtime s / CascadeSeg s' divides the median by the CascadeSeg engine forward median "
          "(greater than 1: CascadeSeg is faster); 'best' is the fastest timed run, the least "
          "disturbed by other load on the machine. The engine forward includes the input upload and the output "
          "download; the whole-process time adds loading and decompressing the model, OpenCL "
          "set-up (PoCL kernel cache warm) and .npy I/O. Peak RSS is per process (ORT/PyTorch: "
          "their one process, including the warm-up and timed runs).",
          f"\nRuntimes: {', '.join(versions + ([binary_note] if binary_note else []))}."]
    if failures:
        md.append("\n### Failures\n\n" + "\n".join(f"- {f}" for f in failures))
    if profile_text:
        md.append(f"\n### CascadeSeg per-op profile at {size_tag(profile_size)}\n\n```\n"
                  f"{profile_text}\n```")
    text = "\n".join(md) + "\n"
    print("\n" + text)
    (args.out / "bench_unet.md").write_text(text)
    results_json["profile"] = profile_text
    results_json["failures"] = failures
    (args.out / "bench_unet.json").write_text(json.dumps(results_json, indent=1, default=str))
    print(f"wrote {args.out / 'bench_unet.md'}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
