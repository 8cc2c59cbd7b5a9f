"""Builds the ONNX converter fixtures in Tests/CascadeSegTests/Fixtures/onnx.

    tools/setup.sh && tools/.venv/bin/python tools/make_onnx_fixtures.py

Small PyTorch networks (random weights, deterministic seeds) are exported with
`torch.onnx.export` (opset 17, dynamic spatial axes D/H/W, the TorchScript-based exporter,
`dynamo=False`) to `<name>.onnx`, together with, for two input sizes (odd where the network's
stride allows), `<name>_in_<D>x<H>x<W>.npy` and `<name>_out_<D>x<H>x<W>.npy` (the PyTorch
float32 eval-mode output). The Swift tests (OnnxConverterTests) convert each `.onnx` file with
`OnnxConverter` and compare the engine's output with the PyTorch one.

Every export is checked before it is kept: `onnx.checker`, then onnxruntime on both sizes must
match PyTorch to 1e-4 (relative to the output's magnitude).

When the installed torch can also run the dynamo-based exporter (`dynamo=True`; it needs the
`onnxscript` package), one extra fixture `<name>_dynamo.onnx` is written from the same network;
otherwise the script says so and skips it.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import randomize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "CascadeSegTests" / "Fixtures" / "onnx"

torch.set_num_threads(2)


# =============================================================================================
# Networks

class ConvNormAct(nn.Module):
    """nnU-Net's building block: Conv3d -> InstanceNorm3d(affine) -> LeakyReLU(0.01)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True)
        self.norm = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        return self.nonlin(self.norm(self.conv(x)))


class PlainConvUNet(nn.Module):
    """nnU-Net-like PlainConvUNet: 3 stages (4, 8, 16 channels), two blocks per stage, stride-2
    convolutions down, ConvTranspose3d (k 2, s 2) up, skip concatenation, 1x1x1 head."""

    def __init__(self, cin=1, classes=3, widths=(4, 8, 16)):
        super().__init__()
        self.stages = nn.ModuleList()
        prev = cin
        for i, w in enumerate(widths):
            self.stages.append(nn.Sequential(ConvNormAct(prev, w, 1 if i == 0 else 2), ConvNormAct(w, w)))
            prev = w
        self.transpconvs = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.transpconvs.append(nn.ConvTranspose3d(widths[i], widths[i - 1], 2, stride=2))
            self.dec.append(nn.Sequential(ConvNormAct(2 * widths[i - 1], widths[i - 1]),
                                          ConvNormAct(widths[i - 1], widths[i - 1])))
        self.seg = nn.Conv3d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for s in self.stages:
            x = s(x)
            skips.append(x)
        x = skips[-1]
        for i, (up, dec) in enumerate(zip(self.transpconvs, self.dec)):
            x = dec(torch.cat([up(x), skips[-(i + 2)]], 1))
        return self.seg(x)


class BnInterp(nn.Module):
    """Conv -> BatchNorm -> ReLU, trilinear upsampling by 2 (align_corners False), MaxPool back,
    concatenation with the skip, a second BatchNorm (on the concatenation, so that the exporter
    cannot fold it into a convolution and it stays a BatchNormalization node), 1x1x1 head and
    Sigmoid. Any size n >= 1 works."""

    def __init__(self, cin=2, c=6, classes=3):
        super().__init__()
        self.conv = nn.Conv3d(cin, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(c, eps=1e-5)
        self.pool = nn.MaxPool3d(2)
        self.bn_cat = nn.BatchNorm3d(2 * c, eps=1e-3)
        self.drop = nn.Dropout3d(0.2)
        self.head = nn.Conv3d(2 * c, classes, 1)

    def forward(self, x):
        a = F.relu(self.bn(self.conv(x)))                                                # [c, n]
        u = F.interpolate(a, scale_factor=2, mode="trilinear", align_corners=False)      # [c, 2n]
        m = self.pool(u)                                                                 # [c, n]
        c = self.bn_cat(torch.cat([a, m], 1))                                            # [2c, n]
        return torch.sigmoid(self.head(self.drop(c)))                                   # [3, n]


class MiscOps(nn.Module):
    """The rest of the converter's patterns: GroupNorm (exported as Reshape ->
    InstanceNormalization -> Reshape(Shape(x)) -> Mul -> Add), F.pad, slicing, interpolation
    to another tensor's size (a Shape subgraph), nearest upsampling, average pooling, PReLU,
    arithmetic with constants (Sub, Div), Tanh and Softmax. Sizes must be even."""

    def __init__(self, cin=1, c=8, classes=4):
        super().__init__()
        self.conv_a = nn.Conv3d(cin, c, 3, padding=1)
        self.gn = nn.GroupNorm(2, c, eps=1e-5)
        self.prelu = nn.PReLU(c)
        self.avg = nn.AvgPool3d(2)
        self.conv_b = nn.Conv3d(c, c, 3, padding=0)
        self.head = nn.Conv3d(2 * c, classes, 1)

    def forward(self, x):
        x = (x - 0.25) / 2.0
        a = self.prelu(self.gn(self.conv_a(x)))                                      # [c, n]
        p = self.avg(a)                                                              # [c, n/2]
        p = self.conv_b(F.pad(p, (1, 1, 1, 1, 1, 1), mode="replicate"))              # [c, n/2]
        b = F.interpolate(torch.tanh(p), size=a.shape[2:], mode="trilinear", align_corners=False)
        n = F.interpolate(p, scale_factor=2, mode="nearest")                         # [c, n]
        s = torch.cat([a + b, n], 1)[:, :, :, 1:, :]                                 # [2c, n, n-1, n]
        return torch.softmax(self.head(s), 1)


SPECS = [
    {"name": "plain_unet", "build": lambda: PlainConvUNet(), "cin": 1,
     "sizes": [(8, 12, 16), (12, 8, 4)]},
    {"name": "bn_interp", "build": lambda: BnInterp(), "cin": 2,
     "sizes": [(5, 7, 9), (6, 4, 3)]},
    {"name": "misc_ops", "build": lambda: MiscOps(), "cin": 1,
     "sizes": [(6, 8, 10), (4, 6, 4)]},
]
DYNAMO_SPEC = "bn_interp"


# =============================================================================================

def make_input(seed: int, cin: int, size) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.standard_normal((1, cin) + tuple(size)).astype(np.float32)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(1.0, float(np.max(np.abs(b)))))


def export(net: nn.Module, cin: int, dynamo: bool) -> bytes:
    x = torch.from_numpy(make_input(0, cin, (8, 8, 8)))
    f = io.BytesIO()
    kwargs = dict(input_names=["image"], output_names=["output"], opset_version=17)
    if dynamo:
        d, h, w = (torch.export.Dim(n, min=1, max=1024) for n in ("D", "H", "W"))
        torch.onnx.export(net, (x,), f, dynamo=True, external_data=False,
                          dynamic_shapes={"x": {2: d, 3: h, 4: w}}, **kwargs)
    else:
        torch.onnx.export(net, (x,), f, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"image": {2: "D", 3: "H", 4: "W"},
                                        "output": {2: "D", 3: "H", 4: "W"}}, **kwargs)
    return f.getvalue()


def check_and_write(name: str, data: bytes, net: nn.Module, spec: dict, seed: int, out: Path):
    import onnx
    import onnxruntime as ort
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    for j, size in enumerate(spec["sizes"]):
        x = make_input(seed * 100 + j, spec["cin"], size)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy().astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        err = rel_err(got, ref)
        assert got.shape == ref.shape and err <= 1e-4, f"{name} {size}: onnxruntime differs by {err:.3g}"
        tag = "x".join(map(str, size))
        np.save(out / f"{name}_in_{tag}.npy", np.ascontiguousarray(x))
        np.save(out / f"{name}_out_{tag}.npy", np.ascontiguousarray(ref))
        print(f"  {name} {tag}: output {ref.shape}, onnxruntime vs PyTorch {err:.2e}")
    (out / f"{name}.onnx").write_bytes(data)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"  wrote {name}.onnx ({len(data)} bytes); ops {ops}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(SPECS):
        seed = 2000 + i
        torch.manual_seed(seed)
        net = spec["build"]()
        randomize(net, torch.Generator().manual_seed(seed))
        net.eval()
        print(f"{spec['name']}:")
        check_and_write(spec["name"], export(net, spec["cin"], dynamo=False), net, spec, seed, args.out)
        if spec["name"] == DYNAMO_SPEC:
            try:
                data = export(net, spec["cin"], dynamo=True)
            except Exception as e:  # noqa: BLE001 (missing onnxscript, offline, unsupported op)
                print(f"  dynamo export skipped: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            else:
                check_and_write(spec["name"] + "_dynamo", data, net, spec, seed, args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"fixtures in {args.out}: {total} bytes in all")


if __name__ == "__main__":
    main()
