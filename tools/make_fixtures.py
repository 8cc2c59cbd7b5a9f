"""Builds the numerical test fixtures in Tests/CascadeSegTests/Fixtures.

    tools/setup.sh && tools/.venv/bin/python tools/make_fixtures.py

For each small PyTorch network (random weights, deterministic seeds) this writes
`<name>.cseg` (the network translated by hand into the graph vocabulary of docs/FORMAT.md) and,
for a few input sizes, `<name>_in_<D>x<H>x<W>.npy` / `<name>_out_<D>x<H>x<W>.npy` (the PyTorch
float32 eval-mode output).

Each translation is verified before the file is put in place: the `.cseg` is written to a
temporary file, read back with tools/cseg.py, and run by `interpret` below (a small, separate
implementation of the operator semantics of FORMAT.md on torch functional primitives); its
output must match the PyTorch module to 1e-5. When onnx and onnxruntime are installed the graph
is also converted to an ONNX opset-17 model and run by onnxruntime, which checks that the
attributes mean what ONNX says they mean.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cseg import read_cseg, write_cseg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "CascadeSegTests" / "Fixtures"
BIG = 2147483647  # "to the end" for Slice ends (ONNX clamps to the dimension)

torch.set_num_threads(4)


# =============================================================================================
# Random parameters: nothing left at its default zeros/ones.

def randomize(module: nn.Module, gen: torch.Generator) -> None:
    def u(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    def n(shape, std):
        return torch.randn(shape, generator=gen) * std

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                if isinstance(m, nn.Conv3d):
                    fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
                else:  # weight [Cin, Cout/g, k...]: each output sums Cin/g * k^3 / stride^3 terms
                    fan_in = m.weight.shape[0] // m.groups * m.weight[0, 0].numel()
                    fan_in = max(1, fan_in // int(np.prod(m.stride)))
                m.weight.copy_(n(m.weight.shape, (2.0 / fan_in) ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(n(m.bias.shape, 0.2))
            elif isinstance(m, (nn.InstanceNorm3d, nn.GroupNorm)):
                if m.weight is not None:
                    m.weight.copy_(u(m.weight.shape, 0.5, 1.5))
                    m.bias.copy_(n(m.bias.shape, 0.3))
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(u(m.weight.shape, 0.5, 1.5))
                m.bias.copy_(n(m.bias.shape, 0.3))
                m.running_mean.copy_(n(m.running_mean.shape, 0.3))
                m.running_var.copy_(u(m.running_var.shape, 0.5, 2.0))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(u(m.weight.shape, 0.05, 0.4))
        for name, p in module.named_parameters(recurse=False):
            p.copy_(u(p.shape, 0.5, 1.5))  # loose parameters (per-channel scales)


def round_parameters_to_float16(module: nn.Module) -> None:
    """For a fixture stored as float16: the reference runs on the values the file holds."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.dtype == torch.float32:
                t.copy_(t.half().float())


# =============================================================================================
# Networks

class ConvBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True)
        self.norm = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class UNetIN(nn.Module):
    """nnU-Net-like: 3 stages (8, 16, 32), stride-2 conv downsampling, transposed-conv
    upsampling, skip concatenation, 1x1x1 head to 4 classes."""

    def __init__(self, cin=1, classes=4, widths=(8, 16, 32)):
        super().__init__()
        w0, w1, w2 = widths
        self.enc0 = nn.Sequential(ConvBlock(cin, w0), ConvBlock(w0, w0))
        self.enc1 = nn.Sequential(ConvBlock(w0, w1, 2), ConvBlock(w1, w1))
        self.enc2 = nn.Sequential(ConvBlock(w1, w2, 2), ConvBlock(w2, w2))
        self.up1 = nn.ConvTranspose3d(w2, w1, 2, stride=2)
        self.dec1 = nn.Sequential(ConvBlock(2 * w1, w1), ConvBlock(w1, w1))
        self.up0 = nn.ConvTranspose3d(w1, w0, 2, stride=2)
        self.dec0 = nn.Sequential(ConvBlock(2 * w0, w0), ConvBlock(w0, w0))
        self.head = nn.Conv3d(w0, classes, 1)

    def forward(self, x):
        s0 = self.enc0(x)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        d1 = self.dec1(torch.cat([self.up1(s2), s1], 1))
        d0 = self.dec0(torch.cat([self.up0(d1), s0], 1))
        return self.head(d0)


class MixedOps(nn.Module):
    """Exercises the other operators. Works for every spatial size n >= 1 (odd included): the
    stride-2 parts run on a 2n grid made by upsampling first."""

    def __init__(self, cin=2, c=8, classes=3):
        super().__init__()
        self.conv_a = nn.Conv3d(cin, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(c, eps=1e-5)
        self.conv_dil = nn.Conv3d(c, c, 3, dilation=2, padding=0)
        self.avg = nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False)
        self.convt = nn.ConvTranspose3d(c, c, 3, stride=2, padding=1, output_padding=1)
        self.prelu1 = nn.PReLU(1)
        self.dw = nn.Conv3d(c, c, 3, padding=1, groups=c)
        self.prelu_c = nn.PReLU(c)
        self.gn1 = nn.GroupNorm(2, c, eps=1e-5)
        self.gn2 = nn.GroupNorm(2, c, eps=1e-5)
        self.scale = nn.Parameter(torch.ones(1, c, 1, 1, 1))
        self.head = nn.Conv3d(24, classes, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.bn(self.conv_a(x)))                                        # [8, n]
        u = F.interpolate(s, scale_factor=2, mode="trilinear", align_corners=False)  # [8, 2n]
        p = F.pad(u, (3, 1, 2, 2, 1, 3), mode="constant", value=0.25)             # [8, 2n+4]
        a1 = self.conv_dil(p)                                                    # [8, 2n]
        a2 = self.avg(a1)                                                        # [8, n]
        a3 = self.convt(a2)                                                      # [8, 2n]
        r = self.prelu1(a1 + a3)                                                 # [8, 2n]
        m = F.max_pool3d(r, 2) * self.scale                                      # [8, n]
        d = self.prelu_c(self.dw(s))                                             # [8, n]
        g1 = torch.sigmoid(self.gn1(d))                                          # [8, n]
        g2 = torch.tanh(self.gn2(m))                                             # [8, n]
        c = torch.cat([g1, g2], 1)                                               # [16, n]
        nu = F.interpolate(c, scale_factor=2, mode="nearest")                    # [16, 2n]
        au = F.interpolate(s, scale_factor=2, mode="trilinear", align_corners=True)  # [8, 2n]
        ru = F.interpolate(m, size=a1.shape[2:], mode="trilinear", align_corners=False)  # [8, 2n]
        c2 = torch.cat([nu, au, ru], 1)                                          # [32, 2n]
        sl = c2[:, 4:28, 1::2, 0::2, 1::2]                                       # [24, n]
        return torch.softmax(self.head(sl), 1)                                   # [3, n]


class TinyArgMax(nn.Module):
    def __init__(self, cin=1, c=4, classes=3):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, c, 3, padding=1)
        self.conv2 = nn.Conv3d(c, classes, 3, padding=1)

    def logits(self, x):
        return self.conv2(F.relu(self.conv1(x)))

    def forward(self, x):
        return torch.argmax(self.logits(x), 1, keepdim=True).float()


# =============================================================================================
# Graph building helpers

class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self._count = 0

    def weight(self, name: str, value) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        assert name not in self.tensors, name
        self.tensors[name] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
        return name

    def node(self, op: str, inputs: list[str], name: str, attrs: dict | None = None,
             output: str | None = None) -> str:
        out = output or f"{name}.out"
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs), "outputs": [out],
                           "attributes": dict(attrs or {})})
        return out

    def conv(self, x: str, m: nn.Conv3d, name: str, **extra) -> str:
        assert m.padding_mode == "zeros"
        pad = list(m.padding) if not isinstance(m.padding, str) else None
        assert pad is not None
        inputs = [x, self.weight(f"{name}.weight", m.weight)]
        if m.bias is not None:
            inputs.append(self.weight(f"{name}.bias", m.bias))
        attrs = {"strides": list(m.stride), "pads": pad + pad, "dilations": list(m.dilation),
                 "group": m.groups}
        attrs.update(extra)
        return self.node("Conv", inputs, name, attrs)

    def conv_transpose(self, x: str, m: nn.ConvTranspose3d, name: str) -> str:
        pad = list(m.padding)
        inputs = [x, self.weight(f"{name}.weight", m.weight)]
        if m.bias is not None:
            inputs.append(self.weight(f"{name}.bias", m.bias))
        attrs = {"strides": list(m.stride), "pads": pad + pad, "dilations": list(m.dilation),
                 "output_padding": list(m.output_padding), "group": m.groups}
        return self.node("ConvTranspose", inputs, name, attrs)

    def graph(self, cin: int, classes: int, size_multiple, output_name: str) -> dict:
        return {
            "name": self.name,
            "inputs": [{"name": "image", "shape": [1, cin, "D", "H", "W"]}],
            "outputs": [{"name": output_name, "shape": [1, classes, "D", "H", "W"]}],
            "size_multiple": list(size_multiple),
            "nodes": self.nodes,
        }


def metadata(name: str, description: str, cin: int, classes: int) -> dict:
    return {
        "name": name,
        "description": description,
        "license": "CC0-1.0",
        "labels": [{"id": 0, "name": "background"}]
                  + [{"id": i, "name": f"label{i}"} for i in range(1, classes)],
        "input": {"channels": cin, "normalization": {"kind": "none"}},
        "stages": [{"graph": "stage1", "spacing_mm": [1.0, 1.0, 1.0]}],
    }


# =============================================================================================
# Translations (by hand, module by module)

def translate_unet(net: UNetIN) -> tuple[dict, dict]:
    g = GraphBuilder("stage1")

    def block(x, b: ConvBlock, name, fuse):
        y = g.conv(x, b.conv, f"{name}.conv")
        ins = [y, g.weight(f"{name}.norm.weight", b.norm.weight),
               g.weight(f"{name}.norm.bias", b.norm.bias)]
        attrs = {"epsilon": b.norm.eps}
        if fuse:  # the engine extension: activation fused into the producer
            attrs.update({"activation": "leaky_relu", "activation_alpha": b.act.negative_slope})
            return g.node("InstanceNormalization", ins, f"{name}.norm", attrs)
        y = g.node("InstanceNormalization", ins, f"{name}.norm", attrs)
        return g.node("LeakyRelu", [y], f"{name}.act", {"alpha": b.act.negative_slope})

    def seq(x, s, name, fuse):
        for i, b in enumerate(s):
            x = block(x, b, f"{name}.{i}", fuse)
        return x

    # Encoder with separate LeakyRelu nodes, decoder with the activation fused.
    s0 = seq("image", net.enc0, "enc0", False)
    s1 = seq(s0, net.enc1, "enc1", False)
    s2 = seq(s1, net.enc2, "enc2", False)
    u1 = g.conv_transpose(s2, net.up1, "up1")
    c1 = g.node("Concat", [u1, s1], "cat1", {"axis": 1})
    d1 = seq(c1, net.dec1, "dec1", True)
    u0 = g.conv_transpose(d1, net.up0, "up0")
    c0 = g.node("Concat", [u0, s0], "cat0", {"axis": 1})
    d0 = seq(c0, net.dec0, "dec0", True)
    y = g.conv(d0, net.head, "head")
    g.nodes[-1]["outputs"] = ["logits"]
    return g.graph(1, 4, [4, 4, 4], "logits"), g.tensors


def translate_mixed(net: MixedOps) -> tuple[dict, dict]:
    g = GraphBuilder("stage1")
    # Conv without bias, with the optional input given as "" (omitted).
    s = g.node("Conv", ["image", g.weight("conv_a.weight", net.conv_a.weight), ""], "conv_a",
               {"pads": [1, 1, 1, 1, 1, 1]})
    bn = net.bn
    s = g.node("BatchNormalization",
               [s, g.weight("bn.weight", bn.weight), g.weight("bn.bias", bn.bias),
                g.weight("bn.mean", bn.running_mean), g.weight("bn.var", bn.running_var)],
               "bn", {"epsilon": bn.eps})
    s = g.node("Relu", [s], "relu_a")
    u = g.node("Resize", [s], "up_linear",
               {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel",
                "scales": [2.0, 2.0, 2.0]})
    # F.pad(u, (w0=3, w1=1, h0=2, h1=2, d0=1, d1=3)) -> pads [d0, h0, w0, d1, h1, w1]
    p = g.node("Pad", [u], "pad", {"pads": [1, 2, 3, 3, 2, 1], "mode": "constant", "value": 0.25})
    a1 = g.conv(p, net.conv_dil, "conv_dil")
    a2 = g.node("AveragePool", [a1], "avgpool",
                {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1, 1, 1, 1, 1, 1],
                 "count_include_pad": 0})
    a3 = g.conv_transpose(a2, net.convt, "convt")
    r = g.node("Add", [a1, a3], "residual")
    r = g.node("PRelu", [r, g.weight("prelu1.slope", net.prelu1.weight.reshape(1))], "prelu1")
    m = g.node("MaxPool", [r], "maxpool", {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]})
    m = g.node("Mul", [m, g.weight("scale", net.scale)], "scale")
    d = g.conv(s, net.dw, "dw")
    d = g.node("PRelu", [d, g.weight("prelu_c.slope", net.prelu_c.weight.reshape(-1, 1, 1, 1))],
               "prelu_c")
    g1 = g.node("GroupNormalization",
                [d, g.weight("gn1.weight", net.gn1.weight), g.weight("gn1.bias", net.gn1.bias)],
                "gn1", {"num_groups": net.gn1.num_groups, "epsilon": net.gn1.eps,
                        "activation": "sigmoid"})
    g2 = g.node("GroupNormalization",
                [m, g.weight("gn2.weight", net.gn2.weight), g.weight("gn2.bias", net.gn2.bias)],
                "gn2", {"num_groups": net.gn2.num_groups, "epsilon": net.gn2.eps})
    g2 = g.node("Tanh", [g2], "tanh")
    c = g.node("Concat", [g1, g2], "cat_a", {"axis": 1})
    nu = g.node("Resize", [c], "up_nearest",
                {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor", "scales": [2.0, 2.0, 2.0]})
    au = g.node("Resize", [s], "up_align",
                {"mode": "linear", "coordinate_transformation_mode": "align_corners",
                 "scales": [2.0, 2.0, 2.0]})
    # Output size from the spatial size of the second input; default half_pixel.
    ru = g.node("Resize", [m, a1], "up_to", {"mode": "linear"})
    c2 = g.node("Concat", [nu, au, ru], "cat_b", {"axis": 1})
    sl = g.node("Slice", [c2], "slice",
                {"starts": [4, 1, 0, 1], "ends": [28, BIG, BIG, BIG], "axes": [1, 2, 3, 4],
                 "steps": [1, 2, 2, 2]})
    h = g.conv(sl, net.head, "head")
    g.node("Softmax", [h], "softmax", {"axis": 1}, output="probabilities")
    # Nodes need not be sorted (FORMAT.md): store them in a fixed scrambled order.
    order = np.random.RandomState(7).permutation(len(g.nodes))
    g.nodes = [g.nodes[i] for i in order]
    return g.graph(2, 3, [1, 1, 1], "probabilities"), g.tensors


def translate_tiny(net: TinyArgMax) -> tuple[dict, dict]:
    g = GraphBuilder("stage1")
    x = g.conv("image", net.conv1, "conv1", activation="relu")  # ReLU fused into the Conv
    x = g.conv(x, net.conv2, "conv2")
    g.node("ArgMax", [x], "argmax", {"axis": 1, "keepdims": 1}, output="labels")
    return g.graph(1, 1, [1, 1, 1], "labels"), g.tensors


# =============================================================================================
# Reference interpreter of a .cseg graph (FORMAT.md semantics, ONNX opset 17 unless stated)

def topo_order(graph: dict) -> list[dict]:
    nodes = graph["nodes"]
    producer = {}
    for n in nodes:
        for o in n["outputs"]:
            assert o not in producer, f"value {o} defined twice"
            producer[o] = n
    order, state = [], {}

    def visit(n):
        st = state.get(n["name"])
        if st == 1:
            raise ValueError(f"cycle through {n['name']}")
        if st == 2:
            return
        state[n["name"]] = 1
        for i in n["inputs"]:
            if i in producer:
                visit(producer[i])
        state[n["name"]] = 2
        order.append(n)

    for n in nodes:
        visit(n)
    return order


def _apply_activation(y, attrs):
    act = attrs.get("activation", "none")
    if act == "none":
        return y
    if act == "relu":
        return torch.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, attrs.get("activation_alpha", 0.01))
    if act == "sigmoid":
        return torch.sigmoid(y)
    if act == "tanh":
        return torch.tanh(y)
    raise ValueError(f"unknown activation {act}")


def _torch_pads(p):  # [d0,h0,w0,d1,h1,w1] -> F.pad order (w0,w1,h0,h1,d0,d1)
    return (p[2], p[5], p[1], p[4], p[0], p[3])


def _normalize(x, groups, eps):
    """Normalizes each of `groups` channel groups over its channels and voxels (float64 stats)."""
    shape = x.shape
    xg = x.reshape(shape[0], groups, -1).double()
    mean = xg.mean(-1, keepdim=True)
    var = ((xg - mean) ** 2).mean(-1, keepdim=True)
    return ((xg - mean) / torch.sqrt(var + eps)).float().reshape(shape)


def _resize_axis(x, axis, out_len, scale, attrs):
    in_len = x.shape[axis]
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    o = torch.arange(out_len, dtype=torch.float64)
    if ctm == "half_pixel":
        src = (o + 0.5) / scale - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(o)
    elif ctm == "align_corners":
        src = o * (in_len - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(o)
    elif ctm == "asymmetric":
        src = o / scale
    else:
        raise ValueError(f"unsupported coordinate_transformation_mode {ctm}")
    if mode == "nearest":
        nm = attrs.get("nearest_mode", "round_prefer_floor")
        if nm == "round_prefer_floor":
            idx = torch.where(src - torch.floor(src) == 0.5, torch.floor(src), torch.round(src))
        elif nm == "round_prefer_ceil":
            idx = torch.where(src - torch.floor(src) == 0.5, torch.ceil(src), torch.round(src))
        elif nm == "floor":
            idx = torch.floor(src)
        elif nm == "ceil":
            idx = torch.ceil(src)
        else:
            raise ValueError(nm)
        idx = idx.long().clamp(0, in_len - 1)
        return x.index_select(axis, idx)
    if mode == "linear":
        src = src.clamp(0, in_len - 1)
        i0 = torch.floor(src).long()
        i1 = (i0 + 1).clamp(max=in_len - 1)
        t = (src - i0).float()
        shape = [1] * x.dim()
        shape[axis] = out_len
        t = t.reshape(shape)
        return x.index_select(axis, i0) * (1 - t) + x.index_select(axis, i1) * t
    raise ValueError(f"unsupported Resize mode {mode}")


def interpret(graph: dict, tensors: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    env: dict[str, torch.Tensor] = {k: torch.from_numpy(v.astype(np.float32)) for k, v in
                                    tensors.items()}
    (inp,) = graph["inputs"]
    env[inp["name"]] = torch.from_numpy(image)
    for n in topo_order(graph):
        op, a = n["op"], n["attributes"]
        ins = [env[i] if i != "" else None for i in n["inputs"]]
        x = ins[0]
        if op == "Conv":
            w = ins[1]
            b = ins[2] if len(ins) > 2 else None
            pads = a.get("pads", [0] * 6)
            x = F.pad(x, _torch_pads(pads))
            y = F.conv3d(x, w, b, stride=a.get("strides", [1, 1, 1]),
                         dilation=a.get("dilations", [1, 1, 1]), groups=a.get("group", 1))
            y = _apply_activation(y, a)
        elif op == "ConvTranspose":
            w = ins[1]
            b = ins[2] if len(ins) > 2 else None
            pads = a.get("pads", [0] * 6)
            op_ = a.get("output_padding", [0, 0, 0])
            full = F.conv_transpose3d(x, w, None, stride=a.get("strides", [1, 1, 1]),
                                      dilation=a.get("dilations", [1, 1, 1]),
                                      groups=a.get("group", 1))
            full = F.pad(full, (0, op_[2], 0, op_[1], 0, op_[0]))  # output_padding: at the end
            D, H, W = full.shape[2:]
            y = full[:, :, pads[0]:D - pads[3], pads[1]:H - pads[4], pads[2]:W - pads[5]]
            if b is not None:
                y = y + b.reshape(1, -1, 1, 1, 1)
            y = _apply_activation(y, a)
        elif op in ("MaxPool", "AveragePool"):
            k = a["kernel_shape"]
            s = a.get("strides", [1, 1, 1])
            pads = a.get("pads", [0] * 6)
            assert a.get("ceil_mode", 0) == 0, "ceil_mode not implemented here"
            if op == "MaxPool":
                xp = F.pad(x, _torch_pads(pads), value=float("-inf"))
                y = F.max_pool3d(xp, k, s, dilation=a.get("dilations", [1, 1, 1]))
            else:
                kv = int(np.prod(k))
                xp = F.pad(x, _torch_pads(pads))
                total = F.avg_pool3d(xp.double(), k, s) * kv
                if a.get("count_include_pad", 0):
                    y = (total / kv).float()
                else:
                    ones = F.pad(torch.ones((1, 1) + tuple(x.shape[2:]), dtype=torch.float64),
                                 _torch_pads(pads))
                    cnt = torch.round(F.avg_pool3d(ones, k, s) * kv)
                    y = (total / cnt).float()
        elif op == "InstanceNormalization":
            C = x.shape[1]
            y = _normalize(x, C, a.get("epsilon", 1e-5))
            y = y * ins[1].reshape(1, C, 1, 1, 1) + ins[2].reshape(1, C, 1, 1, 1)
            y = _apply_activation(y, a)
        elif op == "GroupNormalization":
            C = x.shape[1]
            y = _normalize(x, a["num_groups"], a.get("epsilon", 1e-5))
            y = y * ins[1].reshape(1, C, 1, 1, 1) + ins[2].reshape(1, C, 1, 1, 1)  # per channel
            y = _apply_activation(y, a)
        elif op == "BatchNormalization":
            C = x.shape[1]
            sc, bi, mu, var = (t.reshape(1, C, 1, 1, 1) for t in ins[1:5])
            y = (x - mu) / torch.sqrt(var + a.get("epsilon", 1e-5)) * sc + bi
        elif op == "Relu":
            y = torch.relu(x)
        elif op == "Sigmoid":
            y = torch.sigmoid(x)
        elif op == "Tanh":
            y = torch.tanh(x)
        elif op == "Identity":
            y = x
        elif op == "LeakyRelu":
            y = torch.where(x >= 0, x, x * a.get("alpha", 0.01))
        elif op == "PRelu":
            y = torch.where(x >= 0, x, x * ins[1])  # numpy broadcasting
        elif op == "Add":
            y = _apply_activation(x + ins[1], a)
        elif op == "Mul":
            y = x * ins[1]
        elif op == "Concat":
            assert a.get("axis", 1) == 1
            y = torch.cat(ins, 1)
        elif op == "Resize":
            in_sp = list(x.shape[2:])
            if len(ins) > 1 and ins[1] is not None:
                out_sp = list(ins[1].shape[2:])
                scales = [o / i for o, i in zip(out_sp, in_sp)]
            elif "sizes" in a:
                out_sp = list(a["sizes"])
                scales = [o / i for o, i in zip(out_sp, in_sp)]
            else:
                scales = [float(s) for s in a["scales"]]
                out_sp = [int(np.floor(i * s)) for i, s in zip(in_sp, scales)]
            y = x
            for ax in range(3):
                y = _resize_axis(y, 2 + ax, out_sp[ax], scales[ax], a)
        elif op == "Softmax":
            assert a.get("axis", 1) == 1
            y = torch.softmax(x, 1)
        elif op == "ArgMax":
            assert a.get("axis", 1) == 1
            y = torch.argmax(x, 1, keepdim=bool(a.get("keepdims", 1))).float()
        elif op == "Pad":
            mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[
                a.get("mode", "constant")]
            kw = {"value": float(a.get("value", 0.0))} if mode == "constant" else {}
            y = F.pad(x, _torch_pads(a["pads"]), mode=mode, **kw)
        elif op == "Slice":
            idx = [slice(None)] * x.dim()
            axes = a.get("axes", list(range(len(a["starts"]))))
            steps = a.get("steps", [1] * len(axes))
            for ax, st, en, sp in zip(axes, a["starts"], a["ends"], steps):
                dim = x.shape[ax]
                st = st + dim if st < 0 else st
                en = en + dim if en < 0 else en
                st, en = min(max(st, 0), dim), min(max(en, 0), dim)
                assert sp > 0
                idx[ax] = slice(st, en, sp)
            y = x[tuple(idx)]
        else:
            raise ValueError(f"interpreter: unknown op {op}")
        (out,) = n["outputs"]
        env[out] = y.contiguous()
    (o,) = graph["outputs"]
    return env[o["name"]].numpy()


# =============================================================================================
# Optional second check: the same graph as an ONNX opset-17 model, run by onnxruntime.

def to_onnx(graph: dict, tensors: dict[str, np.ndarray]):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()]
    nodes = []
    counter = [0]

    def tmp(prefix):
        counter[0] += 1
        return f"__{prefix}_{counter[0]}"

    def const(arr, dtype):
        name = tmp("c")
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def act(src, attrs, out):
        kind = attrs.get("activation", "none")
        if kind == "none":
            nodes.append(helper.make_node("Identity", [src], [out]))
        elif kind == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [src], [out],
                                          alpha=attrs.get("activation_alpha", 0.01)))
        else:
            op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[kind]
            nodes.append(helper.make_node(op, [src], [out]))

    keep = {
        "Conv": ["strides", "pads", "dilations", "group"],
        "ConvTranspose": ["strides", "pads", "dilations", "output_padding", "group"],
        "MaxPool": ["kernel_shape", "strides", "pads", "dilations", "ceil_mode"],
        "AveragePool": ["kernel_shape", "strides", "pads", "ceil_mode", "count_include_pad"],
        "InstanceNormalization": ["epsilon"],
        "BatchNormalization": ["epsilon"],
        "LeakyRelu": ["alpha"],
        "Concat": ["axis"],
        "Softmax": ["axis"],
        "ArgMax": ["axis", "keepdims"],
    }
    for n in topo_order(graph):
        op, a, ins, (out,) = n["op"], n["attributes"], n["inputs"], n["outputs"]
        kw = {k: a[k] for k in keep.get(op, []) if k in a}
        if op in ("Conv", "ConvTranspose", "InstanceNormalization", "Add"):
            t = tmp("pre")
            nodes.append(helper.make_node(op, ins, [t], **kw))
            act(t, a, out)
        elif op == "GroupNormalization":
            x, scale, bias = ins
            G = a["num_groups"]
            shp = tmp("shape")
            nodes.append(helper.make_node("Shape", [x], [shp]))
            r = tmp("r")
            nodes.append(helper.make_node("Reshape", [x, const([1, G, -1], np.int64)], [r]))
            nrm = tmp("n")
            nodes.append(helper.make_node("InstanceNormalization",
                                          [r, const(np.ones(G), np.float32),
                                           const(np.zeros(G), np.float32)], [nrm],
                                          epsilon=a.get("epsilon", 1e-5)))
            back = tmp("b")
            nodes.append(helper.make_node("Reshape", [nrm, shp], [back]))
            sc = tmp("s")
            sc4 = tmp("s4")
            nodes.append(helper.make_node("Reshape", [scale, const([-1, 1, 1, 1], np.int64)],
                                          [sc4]))
            nodes.append(helper.make_node("Mul", [back, sc4], [sc]))
            bi4 = tmp("b4")
            nodes.append(helper.make_node("Reshape", [bias, const([-1, 1, 1, 1], np.int64)],
                                          [bi4]))
            t = tmp("pre")
            nodes.append(helper.make_node("Add", [sc, bi4], [t]))
            act(t, a, out)
        elif op == "ArgMax":
            t = tmp("am")
            nodes.append(helper.make_node("ArgMax", ins, [t], **kw))
            nodes.append(helper.make_node("Cast", [t], [out], to=TensorProto.FLOAT))
        elif op == "Pad":
            p = a["pads"]
            full = [0, 0, p[0], p[1], p[2], 0, 0, p[3], p[4], p[5]]
            nodes.append(helper.make_node(
                "Pad", [ins[0], const(full, np.int64),
                        const(np.float32(a.get("value", 0.0)), np.float32)], [out],
                mode=a.get("mode", "constant")))
        elif op == "Slice":
            axes = a.get("axes", list(range(len(a["starts"]))))
            nodes.append(helper.make_node(
                "Slice", [ins[0], const(a["starts"], np.int64), const(a["ends"], np.int64),
                          const(axes, np.int64),
                          const(a.get("steps", [1] * len(axes)), np.int64)], [out]))
        elif op == "Resize":
            rkw = {k: a[k] for k in ("mode", "coordinate_transformation_mode", "nearest_mode")
                   if k in a}
            if len(ins) > 1 and ins[1]:
                s1, s2, sizes = tmp("sh"), tmp("sh"), tmp("sizes")
                nodes.append(helper.make_node("Shape", [ins[0]], [s1], start=0, end=2))
                nodes.append(helper.make_node("Shape", [ins[1]], [s2], start=2))
                nodes.append(helper.make_node("Concat", [s1, s2], [sizes], axis=0))
                nodes.append(helper.make_node("Resize", [ins[0], "", "", sizes], [out], **rkw))
            elif "sizes" in a:
                s1, sizes = tmp("sh"), tmp("sizes")
                nodes.append(helper.make_node("Shape", [ins[0]], [s1], start=0, end=2))
                nodes.append(helper.make_node("Concat", [s1, const(a["sizes"], np.int64)],
                                              [sizes], axis=0))
                nodes.append(helper.make_node("Resize", [ins[0], "", "", sizes], [out], **rkw))
            else:
                scales = const([1.0, 1.0] + [float(s) for s in a["scales"]], np.float32)
                nodes.append(helper.make_node("Resize", [ins[0], "", scales], [out], **rkw))
        else:
            nodes.append(helper.make_node(op, ins, [out], **kw))
    (i,) = graph["inputs"]
    (o,) = graph["outputs"]
    g = helper.make_graph(nodes, graph["name"],
                          [helper.make_tensor_value_info(i["name"], TensorProto.FLOAT,
                                                         [1, i["shape"][1], "D", "H", "W"])],
                          [helper.make_tensor_value_info(o["name"], TensorProto.FLOAT,
                                                         [1, o["shape"][1], "D", "H", "W"])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run_onnx(model, image: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: image})[0]


def have_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


# =============================================================================================

def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(1.0, float(np.max(np.abs(b)))))


def make_input(seed: int, cin: int, size) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.standard_normal((1, cin) + tuple(size)).astype(np.float32)


SPECS = [
    {
        "name": "unet_in",
        "build": lambda: UNetIN(),
        "translate": translate_unet,
        "cin": 1, "classes": 4, "dtype": "float32",
        "sizes": [(24, 20, 28), (16, 36, 12), (8, 12, 4)],
        "description": "nnU-Net-like 3-stage U-Net (8/16/32 channels) with InstanceNorm and "
                       "LeakyReLU, random weights; test fixture",
    },
    {
        "name": "mixed_ops",
        "build": lambda: MixedOps(),
        "translate": translate_mixed,
        "cin": 2, "classes": 3, "dtype": "float32",
        "sizes": [(9, 11, 7), (6, 8, 10), (5, 3, 4)],
        "description": "operator coverage net (BN, pools, dilation, Pad, depthwise, PReLU, "
                       "GroupNorm, Resize, Slice, Softmax), random weights; test fixture",
    },
    {
        "name": "tiny_argmax",
        "build": lambda: TinyArgMax(),
        "translate": translate_tiny,
        "cin": 1, "classes": 3, "dtype": "float16",
        "sizes": [(7, 9, 5), (10, 6, 8), (1, 13, 11)],
        "description": "two 3x3x3 convs and ArgMax over channels (float16 weights), random "
                       "weights; test fixture",
    },
]

MIN_ARGMAX_GAP = 1e-3  # keep ArgMax fixtures away from near-ties between the top two logits


def build_fixture(spec: dict, seed: int, out_dir: Path, check_onnx: bool) -> list[dict]:
    name = spec["name"]
    torch.manual_seed(seed)
    net = spec["build"]()
    randomize(net, torch.Generator().manual_seed(seed))
    if spec["dtype"] == "float16":
        round_parameters_to_float16(net)
    net.eval()

    graph, tensors = spec["translate"](net)
    meta = metadata(name, spec["description"], spec["cin"], spec["classes"])

    final = out_dir / f"{name}.cseg"
    tmp = out_dir / f".{name}.cseg.tmp"
    write_cseg(tmp, meta, [graph], tensors, dtype=spec["dtype"], level=9)
    meta_r, graphs_r, tensors_r = read_cseg(tmp)
    assert meta_r == meta and graphs_r == [graph], "manifest did not round-trip"
    for k, v in tensors.items():
        assert np.array_equal(tensors_r[k].astype(np.float32),
                              v.astype(spec["dtype"]).astype(np.float32)), k
    onnx_model = to_onnx(graphs_r[0], tensors_r) if check_onnx else None

    rows = []
    for j, size in enumerate(spec["sizes"]):
        sd = seed * 100 + j
        while True:
            x = make_input(sd, spec["cin"], size)
            with torch.no_grad():
                ref = net(torch.from_numpy(x)).numpy().astype(np.float32)
                if isinstance(net, TinyArgMax):
                    lg = torch.sort(net.logits(torch.from_numpy(x)), 1, descending=True)[0]
                    gap = float((lg[:, 0] - lg[:, 1]).min())
                    if gap < MIN_ARGMAX_GAP:
                        sd += 1000
                        continue
            break
        assert ref.shape == (1, spec["classes"] if name != "tiny_argmax" else 1) + size, ref.shape
        got = interpret(graphs_r[0], tensors_r, x)
        err = rel_err(got, ref)
        assert got.shape == ref.shape and err <= 1e-5, \
            f"{name} {size}: interpreter differs from PyTorch by {err:.3g}"
        onnx_err = None
        if onnx_model is not None:
            got_onnx = run_onnx(onnx_model, x)
            onnx_err = rel_err(got_onnx, ref)
            assert got_onnx.shape == ref.shape and onnx_err <= 1e-4, \
                f"{name} {size}: onnxruntime differs from PyTorch by {onnx_err:.3g}"
        tag = "x".join(map(str, size))
        np.save(out_dir / f"{name}_in_{tag}.npy", np.ascontiguousarray(x))
        np.save(out_dir / f"{name}_out_{tag}.npy", np.ascontiguousarray(ref))
        rows.append({"size": size, "interp_err": err, "onnx_err": onnx_err,
                     "out_range": (float(ref.min()), float(ref.max()))})
        onnx_txt = f", onnxruntime {onnx_err:.2e}" if onnx_err is not None else ""
        print(f"  {name} {tag}: interpreter vs PyTorch {err:.2e}{onnx_txt}; output range "
              f"[{ref.min():.4g}, {ref.max():.4g}]")
    os.replace(tmp, final)
    ops: dict[str, int] = {}
    for n in graph["nodes"]:
        ops[n["op"]] = ops.get(n["op"], 0) + 1
    print(f"  wrote {final.relative_to(ROOT)} ({final.stat().st_size} bytes, {len(tensors)} "
          f"tensors, {sum(v.size for v in tensors.values())} parameters, {spec['dtype']}); "
          f"ops {ops}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=FIXTURES)
    ap.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime cross-check")
    ap.add_argument("--only", nargs="*", help="fixture names to build")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    check_onnx = not args.no_onnx and have_onnxruntime()
    if not check_onnx:
        print("note: onnxruntime cross-check skipped")
    for i, spec in enumerate(SPECS):
        if args.only and spec["name"] not in args.only:
            continue
        print(f"{spec['name']}:")
        build_fixture(spec, seed=1000 + i, out_dir=args.out, check_onnx=check_onnx)
    total = sum(p.stat().st_size for p in args.out.iterdir()
                if p.suffix in (".cseg", ".npy"))
    print(f"fixtures in {args.out}: {total} bytes in all")


if __name__ == "__main__":
    main()
