"""Builds the ONNX converter fixtures in Tests/CascadeSegTests/Fixtures/onnx.

    tools/setup.sh && tools/.venv/bin/python tools/make_onnx_fixtures.py [--only NAME ...]

PyTorch networks with random weights (deterministic seeds; convolution biases, norm affines,
BatchNorm statistics and PReLU slopes randomized too) are exported with `torch.onnx.export`
(batch 1, dynamic spatial axes D/H/W) to `<name>.onnx`, together with, for two input sizes
(odd where the network's stride allows), `<name>_in_<D>x<H>x<W>.npy` and
`<name>_out_<D>x<H>x<W>.npy` (the PyTorch float32 eval-mode output). The Swift tests
(OnnxConverterTests) convert each `.onnx` file with `OnnxConverter` and compare the engine's
output with the PyTorch one.

Three small networks written here (plain_unet, bn_interp, misc_ops) cover single patterns; six
networks as users build them cover real exports: nnU-Net's PlainConvUNet and
ResidualEncoderUNet (package dynamic-network-architectures) and MONAI's UNet, BasicUNet,
SegResNet and DynUNet, all with a few channels per stage so that each file is tens of KB.

`<name>.onnx` is the TorchScript-based exporter (`dynamo=False`) at opset 17. The real networks
also get `<name>_op18.onnx` (same exporter, opset 18), `<name>_dynamo.onnx` (the dynamo-based
exporter, `dynamo=True`, opset 18; needs the `onnxscript` package) and `<name>_dynamo_op17.onnx`
(dynamo at opset 17, through onnx's version converter); all exports of one network share its
`.npy` pairs. A dynamo export that fails, or that comes back at another opset than asked for,
is reported and skipped. The dynamo exporter's per-node debug metadata (`metadata_props`) is
stripped from the real networks' files to keep them small; `bn_interp_dynamo.onnx` keeps it.

Every export is checked before it is kept: `onnx.checker`, then onnxruntime on both sizes must
match PyTorch to 1e-4 (relative to the output's magnitude).

`--benchmark-net FILE.onnx` instead exports nnU-Net's default-sized PlainConvUNet (6 stages,
32..320 features, ~31M parameters) for timing `cascadeseg convert` (BENCHMARKS.md).
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


# Real networks as users build them (nnU-Net's dynamic-network-architectures, MONAI), tiny widths.

def dna_plain_unet():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet as DnaPlainConvUNet
    return DnaPlainConvUNet(
        input_channels=1, n_stages=3, features_per_stage=(3, 6, 12), conv_op=nn.Conv3d,
        kernel_sizes=[(1, 3, 3), 3, 3], strides=[1, (1, 2, 2), (1, 2, 2)], n_conv_per_stage=2,
        num_classes=3, n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False)


def dna_resenc_unet():
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    return ResidualEncoderUNet(
        input_channels=1, n_stages=3, features_per_stage=(3, 6, 12), conv_op=nn.Conv3d,
        kernel_sizes=3, strides=[1, 2, 2], n_blocks_per_stage=[1, 2, 2], num_classes=3,
        n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False)


def monai_unet():
    from monai.networks.nets import UNet
    return UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(3, 6, 12), strides=(2, 2),
                num_res_units=2)


def monai_basic_unet():
    from monai.networks.nets import BasicUNet
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(3, 3, 6, 6, 12, 3))


def monai_segresnet():
    from monai.networks.nets import SegResNet
    return SegResNet(spatial_dims=3, init_filters=2, in_channels=1, out_channels=3,
                     blocks_down=(1, 2, 1), blocks_up=(1, 1), norm=("GROUP", {"num_groups": 2}))


def monai_dynunet():
    from monai.networks.nets import DynUNet
    return DynUNet(spatial_dims=3, in_channels=1, out_channels=3, kernel_size=[3, 3, 3],
                   strides=[1, (2, 2, 1), (2, 2, 1)], upsample_kernel_size=[(2, 2, 1), (2, 2, 1)], filters=[3, 6, 12],
                   res_block=True)


# Exports of the real networks: (file suffix, dynamo, opset). `<name>.onnx` is always the
# TorchScript-based exporter at opset 17.
ALL_EXPORTS = [("", False, 17), ("_op18", False, 18), ("_dynamo", True, 18), ("_dynamo_op17", True, 17)]

SPECS = [
    {"name": "plain_unet", "build": lambda: PlainConvUNet(), "cin": 1,
     "sizes": [(8, 12, 16), (12, 8, 4)]},
    {"name": "bn_interp", "build": lambda: BnInterp(), "cin": 2,
     "sizes": [(5, 7, 9), (6, 4, 3)], "exports": [("", False, 17), ("_dynamo", True, 18)]},
    {"name": "misc_ops", "build": lambda: MiscOps(), "cin": 1,
     "sizes": [(6, 8, 10), (4, 6, 4)]},
    {"name": "nnunet_plain", "build": dna_plain_unet, "cin": 1,
     "sizes": [(5, 8, 12), (7, 12, 8)], "exports": ALL_EXPORTS},
    {"name": "nnunet_resenc", "build": dna_resenc_unet, "cin": 1,
     "sizes": [(8, 12, 16), (4, 8, 12)], "exports": ALL_EXPORTS, "multiple": 4},
    {"name": "monai_unet", "build": monai_unet, "cin": 1,
     "sizes": [(8, 12, 16), (12, 4, 8)], "exports": ALL_EXPORTS},
    {"name": "monai_basicunet", "build": monai_basic_unet, "cin": 1,
     "sizes": [(16, 16, 32), (32, 16, 16)], "exports": ALL_EXPORTS, "multiple": 16,
     "trace_size": (32, 32, 32)},
    {"name": "monai_segresnet", "build": monai_segresnet, "cin": 1,
     "sizes": [(8, 12, 16), (12, 4, 8)], "exports": ALL_EXPORTS},
    {"name": "monai_dynunet", "build": monai_dynunet, "cin": 1,
     "sizes": [(8, 12, 5), (4, 8, 7)], "exports": ALL_EXPORTS},
]


# =============================================================================================

def make_input(seed: int, cin: int, size) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.standard_normal((1, cin) + tuple(size)).astype(np.float32)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(1.0, float(np.max(np.abs(b)))))


def export(net: nn.Module, cin: int, dynamo: bool, opset: int = 17, size=(8, 8, 8), multiple: int = 1) -> bytes:
    x = torch.from_numpy(make_input(0, cin, size))
    f = io.BytesIO()
    kwargs = dict(input_names=["image"], output_names=["output"], opset_version=opset)
    if dynamo:
        if multiple == 1:
            d, h, w = (torch.export.Dim(n, min=1, max=1024) for n in ("D", "H", "W"))
        else:  # the network's shape checks need sizes that are multiples of `multiple`
            d, h, w = (multiple * torch.export.Dim("_" + n, min=1, max=1024 // multiple) for n in ("D", "H", "W"))
        arg = next(iter(__import__("inspect").signature(net.forward).parameters))
        torch.onnx.export(net, (x,), f, dynamo=True, external_data=False, optimize=True,
                          dynamic_shapes={arg: {2: d, 3: h, 4: w}}, **kwargs)
    else:
        torch.onnx.export(net, (x,), f, dynamo=False, do_constant_folding=True,
                          dynamic_axes={"image": {2: "D", 3: "H", 4: "W"},
                                        "output": {2: "D", 3: "H", 4: "W"}}, **kwargs)
    return f.getvalue()


def strip_node_metadata(data: bytes) -> bytes:
    """Drops the per-node debug metadata (`metadata_props`: module paths, FX node text) the
    dynamo exporter writes; it would double the file sizes. `bn_interp_dynamo` keeps it."""
    import onnx
    model = onnx.load_from_string(data)
    for n in model.graph.node:
        del n.metadata_props[:]
    return model.SerializeToString()


def check_and_write(name: str, data: bytes, net: nn.Module, spec: dict, seed: int, out: Path,
                    write_pairs: bool = True):
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
        if write_pairs:  # every export of one network shares the network's inputs and outputs
            np.save(out / f"{name}_in_{tag}.npy", np.ascontiguousarray(x))
            np.save(out / f"{name}_out_{tag}.npy", np.ascontiguousarray(ref))
        print(f"  {name} {tag}: output {ref.shape}, onnxruntime vs PyTorch {err:.2e}")
    (out / f"{name}.onnx").write_bytes(data)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"  wrote {name}.onnx ({len(data)} bytes); ops {ops}")


def export_benchmark_net(path: Path):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet as DnaPlainConvUNet
    torch.manual_seed(0)
    net = DnaPlainConvUNet(
        input_channels=1, n_stages=6, features_per_stage=(32, 64, 128, 256, 320, 320), conv_op=nn.Conv3d,
        kernel_sizes=3, strides=[1, 2, 2, 2, 2, 2], n_conv_per_stage=2, num_classes=3,
        n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False)
    randomize(net, torch.Generator().manual_seed(0))
    net.eval()
    data = export(net, 1, dynamo=False, opset=17, size=(64, 64, 64))
    path.write_bytes(data)
    params = sum(p.numel() for p in net.parameters())
    print(f"wrote {path} ({len(data)} bytes, {params} parameters, {4 * params} bytes of float32)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", nargs="*", help="network names to build (default: all)")
    ap.add_argument("--benchmark-net", type=Path, metavar="FILE.onnx",
                    help="instead of the fixtures, export nnU-Net's default 3d_fullres-sized "
                         "PlainConvUNet (6 stages, 32..320 features, ~31M parameters; random "
                         "weights) to FILE.onnx, for timing `cascadeseg convert`")
    args = ap.parse_args()
    if args.benchmark_net:
        return export_benchmark_net(args.benchmark_net)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(SPECS):
        if args.only and spec["name"] not in args.only:
            continue
        seed = 2000 + i
        torch.manual_seed(seed)
        net = spec["build"]()
        randomize(net, torch.Generator().manual_seed(seed))
        net.eval()
        print(f"{spec['name']}:")
        trace_size = spec.get("trace_size", (8, 8, 8) if max(spec["sizes"][0]) < 16 else tuple(spec["sizes"][0]))
        for suffix, dynamo, opset in spec.get("exports", [("", False, 17)]):
            name = spec["name"] + suffix
            try:
                data = export(net, spec["cin"], dynamo=dynamo, opset=opset, size=trace_size,
                              multiple=spec.get("multiple", 1))
            except Exception as e:  # noqa: BLE001 (missing onnxscript, unsupported op)
                if not dynamo:
                    raise
                print(f"  {name}: dynamo export failed, skipped: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                continue
            declared = next(o.version for o in __import__("onnx").load_from_string(data).opset_import if o.domain in ("", "ai.onnx"))
            if declared != opset:  # the dynamo exporter falls back to its own opset when it cannot convert
                print(f"  {name}: the exporter wrote opset {declared}, not {opset}; skipped")
                continue
            if dynamo and spec.get("exports") is ALL_EXPORTS:
                data = strip_node_metadata(data)
            check_and_write(name, data, net, spec, seed, args.out, write_pairs=(suffix == ""))
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"fixtures in {args.out}: {total} bytes in all")


if __name__ == "__main__":
    main()
