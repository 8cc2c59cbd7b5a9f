"""Reference implementation of the two-stage cascade of docs/PIPELINE.md, in numpy and PyTorch.

Written from docs/PIPELINE.md and docs/FORMAT.md alone, so that it can check the Swift engine:
intensity normalization, resampling (trilinear with anti-aliasing, nearest for labels),
26-connected components, the ROI planner (steps 1-5: stage-1 mapping, margin, label groups,
sizes, merging), priors with `min_volume_mm3`, both stage runs, the paste rule and the missed
labels. The networks are built as PyTorch functional code from the `.cseg` graph (read with
tools/cseg.py) and run in float64 on float32 inputs.

    tools/.venv/bin/python tools/reference_cascade.py MODEL.cseg IMAGE.nii.gz \
        --out-labels labels.nii.gz --out-json report.json [--out-margin margin.nii.gz] \
        [--out-stage1 stage1.npy] [--out-stage1-margin stage1_margin.npy] [--no-prior]

Besides the labels, the reference records a per-voxel **decision margin**: for a voxel of the
final map, the smallest of (a) the gap between the two largest stage-2 logits of every ROI
covering the voxel and (b) for every paste comparison that could change the voxel's label
(an eligible candidate label different from the current one), the difference between the
candidate's probability and the best one so far. Voxels no ROI covers get +inf. For the
stage-1 map, the margin is the gap between the two largest stage-1 logits. A voxel whose
margin is below about 1e-3 is decided by a near tie and may legitimately come out differently
in another float32 implementation.

Arrays are indexed [z, y, x] (C order), so the flat index is x + nx * (y + ny * z) as in the
engine; vectors (sizes, boxes, spacings) are (x, y, z) tuples as in docs/PIPELINE.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cseg import read_cseg  # noqa: E402

XYZ = tuple[int, int, int]


# =============================================================================================
# Small helpers

def zyx_to_xyz(v) -> tuple:
    """Model-file arrays are (z, y, x) = [d, h, w]."""
    return (v[2], v[1], v[0])


def round_half_even(x: float) -> int:
    return int(round(x))  # Python's round is half to even, as numpy's


def round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple


# =============================================================================================
# Intensity normalization (docs/PIPELINE.md, "Intensity normalization")

def percentile_linear(sorted_values: np.ndarray, p: float) -> float:
    """numpy's default (`method="linear"`) percentile of sorted values, with numpy's _lerp."""
    n = sorted_values.size
    q = p / 100.0 * (n - 1)
    k = int(math.floor(q))
    t = q - k
    a = float(sorted_values[k])
    b = float(sorted_values[min(k + 1, n - 1)])
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def _zscore(values: np.ndarray) -> tuple[float, float]:
    v = values.astype(np.float64)
    mean = float(v.mean()) if v.size else 0.0
    std = float(np.sqrt(np.mean((v - mean) ** 2))) if v.size else 0.0
    return mean, max(std, 1e-8)


def normalize(image: np.ndarray, norm: dict) -> np.ndarray:
    """Returns the normalized float32 image."""
    x = np.asarray(image, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{int(np.sum(~np.isfinite(x)))} voxels are NaN or infinite")
    kind = norm.get("kind")
    if kind == "none":
        return x.copy()
    if kind == "ct":
        lo, hi = norm["clip"]
        mean, std = float(norm["mean"]), float(norm["std"])
        if not lo <= hi or not std > 0:
            raise ValueError(f"invalid ct normalization {norm}")
        c = np.clip(x.astype(np.float64), lo, hi)
        return ((c - mean) * (1.0 / std)).astype(np.float32)
    if kind not in ("zscore", "percentile"):
        raise ValueError(f"unknown normalization kind {kind!r}")
    foreground = norm.get("foreground", "nonzero")
    if foreground not in ("nonzero", "all"):
        raise ValueError(f"unknown foreground {foreground!r}")
    mask = (x != 0) if foreground == "nonzero" else np.ones(x.shape, dtype=bool)
    out = x.copy()
    if not mask.any():
        return out
    values = x[mask].astype(np.float64)
    if kind == "percentile":
        lower, upper = float(norm["lower"]), float(norm["upper"])
        if not 0 <= lower <= upper <= 100:
            raise ValueError(f"invalid percentile normalization {norm}")
        s = np.sort(x[mask])
        p_lo, p_hi = percentile_linear(s, lower), percentile_linear(s, upper)
        values = np.clip(values, p_lo, p_hi)
    mean, std = _zscore(values)
    out[mask] = ((values - mean) * (1.0 / std)).astype(np.float32)
    return out


# =============================================================================================
# Resampling (docs/PIPELINE.md, "Resampling")

def _axis_matrix(n: int, m: int, anti_aliasing: bool) -> np.ndarray:
    """The m x n float64 matrix of one axis: Gaussian pre-filter (when shrinking and
    anti-aliasing; scipy mode "nearest") followed by linear interpolation at
    c(i) = (i + 0.5) n / m - 0.5, clamped to [0, n - 1]."""
    filt = np.eye(n)
    factor = n / m
    if anti_aliasing and factor > 1:
        sigma = (factor - 1) / 2
        radius = int(4 * sigma + 0.5)
        taps = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 / (sigma * sigma) * taps.astype(np.float64) ** 2)
        kernel /= kernel.sum()
        filt = np.zeros((n, n))
        for j in range(n):
            for d, w in zip(taps, kernel):
                filt[j, min(max(j + d, 0), n - 1)] += w
    interp = np.zeros((m, n))
    for i in range(m):
        c = (i + 0.5) * n / m - 0.5
        c = min(max(c, 0.0), n - 1.0)
        i0 = int(math.floor(c))
        t = c - i0
        i1 = min(i0 + 1, n - 1)
        interp[i, i0] += 1 - t
        interp[i, i1] += t
    return interp @ filt


def resample_to_size(vol: np.ndarray, size_xyz: XYZ, anti_aliasing: bool = True) -> np.ndarray:
    """Trilinear resampling of a [z, y, x] volume (or [C, z, y, x], channel by channel) to
    size (x, y, z); separable, along x, then y, then z; axes whose size does not change are
    skipped. Computed in float64, returned as float32."""
    out = np.asarray(vol, dtype=np.float64)
    nd = out.ndim
    for axis_xyz in range(3):
        axis = nd - 1 - axis_xyz  # x is the last array axis
        n, m = out.shape[axis], size_xyz[axis_xyz]
        if n == m:
            continue
        mat = _axis_matrix(n, m, anti_aliasing)
        out = np.moveaxis(np.tensordot(mat, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out.astype(np.float32)


def size_for_spacing(size_xyz: XYZ, spacing_xyz, new_spacing_xyz) -> XYZ:
    return tuple(max(1, round_half_even(size_xyz[a] * spacing_xyz[a] / new_spacing_xyz[a]))
                 for a in range(3))


def resample_labels_to_shape(labels: np.ndarray, size_xyz: XYZ) -> np.ndarray:
    """Nearest neighbour: output voxel i copies input voxel ((2i + 1) n) // (2m)."""
    out = labels
    for axis_xyz in range(3):
        axis = out.ndim - 1 - axis_xyz
        n, m = out.shape[axis], size_xyz[axis_xyz]
        if n == m:
            continue
        idx = np.minimum(n - 1, ((2 * np.arange(m) + 1) * n) // (2 * m))
        out = np.take(out, idx, axis=axis)
    return out


# =============================================================================================
# Networks: the .cseg graph as PyTorch functional code

def _act(x: torch.Tensor, attrs: dict) -> torch.Tensor:
    a = attrs.get("activation", "none")
    if a == "none":
        return x
    if a == "relu":
        return F.relu(x)
    if a == "leaky_relu":
        return F.leaky_relu(x, float(attrs.get("activation_alpha", 0.01)))
    if a == "sigmoid":
        return torch.sigmoid(x)
    if a == "tanh":
        return torch.tanh(x)
    raise NotImplementedError(f"fused activation {a!r}")


def _pads(attrs: dict) -> tuple[list[int], list[int]]:
    p = attrs.get("pads", [0] * 6)
    return list(p[:3]), list(p[3:])


def _torch_pad_arg(begin, end) -> tuple:
    """[d, h, w] begin/end pads -> F.pad's (w0, w1, h0, h1, d0, d1)."""
    return (begin[2], end[2], begin[1], end[1], begin[0], end[0])


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


class TorchGraph:
    """Runs one graph of a `.cseg` file (docs/FORMAT.md operators) with torch.nn.functional, in
    float64. Supports the operators a segmentation network usually needs; others raise."""

    def __init__(self, graph: dict, tensors: dict[str, np.ndarray]):
        self.graph = graph
        self.weights = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in tensors.items()}
        self.order = self._topological(graph)

    @staticmethod
    def _topological(graph: dict) -> list[dict]:
        produced = {o: n for n in graph["nodes"] for o in n["outputs"]}
        order, state = [], {}

        def visit(node):
            key = node["name"] + "|" + node["outputs"][0]
            if state.get(key) == 2:
                return
            if state.get(key) == 1:
                raise ValueError(f"graph {graph['name']!r} has a cycle at {node['name']!r}")
            state[key] = 1
            for i in node["inputs"]:
                if i in produced:
                    visit(produced[i])
            state[key] = 2
            order.append(node)

        for n in graph["nodes"]:
            visit(n)
        return order

    def output_channels(self) -> int:
        return int(self.graph["outputs"][0]["shape"][1])

    def size_multiple_xyz(self) -> XYZ:
        return zyx_to_xyz(self.graph.get("size_multiple", [1, 1, 1]))

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: [1, C, D, H, W]; returns the first graph output as float64 numpy."""
        values: dict[str, torch.Tensor] = dict(self.weights)
        values[self.graph["inputs"][0]["name"]] = torch.from_numpy(np.asarray(x, dtype=np.float64))
        for node in self.order:
            ins = [values[i] if i else None for i in node["inputs"]]
            values[node["outputs"][0]] = self._op(node, ins)
        return values[self.graph["outputs"][0]["name"]].numpy()

    def _op(self, node: dict, ins: list) -> torch.Tensor:
        op, a = node["op"], node.get("attributes", {})
        x = ins[0]
        if op in ("Conv", "ConvTranspose"):
            w = ins[1]
            b = ins[2] if len(ins) > 2 else None
            b = _per_channel(b) if b is not None else None
            strides = a.get("strides", [1, 1, 1])
            dil = a.get("dilations", [1, 1, 1])
            group = int(a.get("group", 1))
            begin, end = _pads(a)
            if op == "Conv":
                if begin != end:
                    x = F.pad(x, _torch_pad_arg(begin, end))
                    begin = [0, 0, 0]
                y = F.conv3d(x, w, b, stride=strides, padding=begin, dilation=dil, groups=group)
            else:
                if begin != end:
                    raise NotImplementedError(f"{node['name']}: asymmetric ConvTranspose pads")
                y = F.conv_transpose3d(x, w, b, stride=strides, padding=begin,
                                       output_padding=a.get("output_padding", [0, 0, 0]),
                                       groups=group, dilation=dil)
            return _act(y, a)
        if op in ("MaxPool", "AveragePool"):
            k = a["kernel_shape"]
            s = a.get("strides", [1, 1, 1])
            begin, end = _pads(a)
            ceil = bool(a.get("ceil_mode", 0))
            if op == "MaxPool":
                dil = a.get("dilations", [1, 1, 1])
                if begin != end:
                    x = F.pad(x, _torch_pad_arg(begin, end), value=-math.inf)
                    begin = [0, 0, 0]
                return F.max_pool3d(x, k, s, begin, dil, ceil_mode=ceil)
            if begin != end:
                raise NotImplementedError(f"{node['name']}: asymmetric AveragePool pads")
            return F.avg_pool3d(x, k, s, begin, ceil_mode=ceil,
                                count_include_pad=bool(a.get("count_include_pad", 0)))
        if op == "InstanceNormalization":
            y = F.instance_norm(x, weight=_per_channel(ins[1]), bias=_per_channel(ins[2]),
                                eps=float(a.get("epsilon", 1e-5)))
            return _act(y, a)
        if op == "GroupNormalization":
            y = F.group_norm(x, int(a["num_groups"]), _per_channel(ins[1]), _per_channel(ins[2]),
                             eps=float(a.get("epsilon", 1e-5)))
            return _act(y, a)
        if op == "BatchNormalization":
            return F.batch_norm(x, _per_channel(ins[3]), _per_channel(ins[4]), _per_channel(ins[1]),
                                _per_channel(ins[2]), training=False, eps=float(a.get("epsilon", 1e-5)))
        if op == "Relu":
            return F.relu(x)
        if op == "LeakyRelu":
            return F.leaky_relu(x, float(a.get("alpha", 0.01)))
        if op == "Sigmoid":
            return torch.sigmoid(x)
        if op == "Tanh":
            return torch.tanh(x)
        if op == "Identity":
            return x
        if op == "PRelu":
            return torch.where(x >= 0, x, x * ins[1])
        if op == "Add":
            return _act(x + ins[1], a)
        if op == "Mul":
            return x * ins[1]
        if op == "Concat":
            if int(a.get("axis", 1)) not in (1, -4):
                raise NotImplementedError(f"{node['name']}: Concat on axis {a.get('axis')}")
            return torch.cat(ins, 1)
        if op == "Softmax":
            return torch.softmax(x, 1)
        if op == "ArgMax":
            return torch.argmax(x, 1, keepdim=bool(a.get("keepdims", 1))).to(x.dtype)
        if op == "Pad":
            begin, end = _pads(a)
            mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[a.get("mode", "constant")]
            if mode == "constant":
                return F.pad(x, _torch_pad_arg(begin, end), value=float(a.get("value", 0.0)))
            return F.pad(x, _torch_pad_arg(begin, end), mode=mode)
        raise NotImplementedError(f"operator {op} (node {node['name']!r}) is not in the reference")


# =============================================================================================
# Connected components and boxes

@dataclass
class Box:
    lower: XYZ
    upper: XYZ

    @property
    def size(self) -> XYZ:
        return tuple(self.upper[a] - self.lower[a] for a in range(3))

    def union(self, other: "Box") -> "Box":
        return Box(tuple(min(self.lower[a], other.lower[a]) for a in range(3)),
                   tuple(max(self.upper[a], other.upper[a]) for a in range(3)))

    def as_json(self) -> dict:
        return {"lower": list(self.lower), "upper": list(self.upper)}


@dataclass
class LabeledBox:
    label: int
    box: Box


def component_boxes(label_map: np.ndarray, background: int = 0) -> list[LabeledBox]:
    """One box (stage-1 voxels) per 26-connected component of each non-background label, in
    the scan order (x fastest) of the component's first voxel."""
    from scipy import ndimage
    structure = np.ones((3, 3, 3), dtype=bool)
    comps = []
    for label in np.unique(label_map):
        if label == background:
            continue
        lab, count = ndimage.label(label_map == label, structure=structure)
        flat = lab.reshape(-1)
        for c, sl in enumerate(ndimage.find_objects(lab), start=1):
            first = int(np.flatnonzero(flat == c)[0])
            zs, ys, xs = sl
            comps.append((first, LabeledBox(int(label), Box((xs.start, ys.start, zs.start),
                                                            (xs.stop, ys.stop, zs.stop)))))
    comps.sort(key=lambda t: t[0])
    return [b for _, b in comps]


# =============================================================================================
# ROI planning (docs/PIPELINE.md, "ROI planning")

@dataclass
class ROI:
    box: Box
    labels: list[int]
    stage2_size: XYZ
    input_size: XYZ
    source_boxes: list[int]
    cost: int
    core: Box = field(repr=False, default=None)

    def as_json(self) -> dict:
        return {"lower": list(self.box.lower), "upper": list(self.box.upper), "labels": self.labels,
                "stage2_size": list(self.stage2_size), "input_size": list(self.input_size),
                "source_boxes": self.source_boxes, "cost": self.cost}


DEFAULT_LAUNCH_OVERHEAD = 32 ** 3


class Planner:
    def __init__(self, image_size: XYZ, image_spacing, stage1_size: XYZ, stage2_spacing,
                 margin_mm: float, min_roi_size: XYZ, size_multiple: XYZ,
                 label_groups: list[list[int]], overhead: int = DEFAULT_LAUNCH_OVERHEAD):
        self.n = tuple(int(v) for v in image_size)
        self.s = tuple(float(v) for v in image_spacing)
        self.n1 = tuple(int(v) for v in stage1_size)
        self.s2 = tuple(float(v) for v in stage2_spacing)
        self.margin_mm = float(margin_mm)
        self.min_roi = tuple(int(v) for v in min_roi_size)
        self.multiple = tuple(int(v) for v in size_multiple)
        self.groups = self._join_groups(label_groups)
        self.overhead = int(overhead)

    @staticmethod
    def _join_groups(groups: list[list[int]]) -> list[set[int]]:
        """Groups sharing a label are one group."""
        joined: list[set[int]] = []
        for g in groups:
            g = set(g)
            overlapping = [h for h in joined if h & g]
            for h in overlapping:
                g |= h
                joined.remove(h)
            joined.append(g)
        return joined

    # step 1
    def _clamp_axis(self, lo: int, hi: int, n: int) -> tuple[int, int]:
        """Cut [lo, hi) to [0, n); an interval left empty keeps the one-voxel slab nearest to it."""
        a, b = max(lo, 0), min(hi, n)
        if a < b:
            return a, b
        if hi <= 0:
            return 0, 1
        if lo >= n:
            return n - 1, n
        return a, b  # not reached for lo < hi

    def clamp(self, box: Box) -> Box:
        lo, hi = [], []
        for a in range(3):
            u, v = self._clamp_axis(box.lower[a], box.upper[a], self.n[a])
            lo.append(u)
            hi.append(v)
        return Box(tuple(lo), tuple(hi))

    def image_box_from_stage1(self, box: Box) -> Box:
        lo = tuple((box.lower[a] * self.n[a]) // self.n1[a] for a in range(3))
        hi = tuple(-((-box.upper[a] * self.n[a]) // self.n1[a]) for a in range(3))
        return self.clamp(Box(lo, hi))

    # step 2
    def margin_voxels(self) -> XYZ:
        return tuple(int(math.ceil(self.margin_mm / self.s[a] - 1e-9)) for a in range(3))

    def grow(self, box: Box) -> Box:
        m = self.margin_voxels()
        return Box(tuple(max(0, box.lower[a] - m[a]) for a in range(3)),
                   tuple(min(self.n[a], box.upper[a] + m[a]) for a in range(3)))

    # step 4
    def fit(self, core: Box, labels: list[int], sources: list[int]) -> ROI:
        lower, upper, s2size, insize = [], [], [], []
        for a in range(3):
            n = self.n[a]
            f = self.s[a] / self.s2[a]
            b = core.upper[a] - core.lower[a]
            S = round_up(max(self.min_roi[a], int(math.ceil(b * f - 1e-9))), self.multiple[a])
            b2 = max(b, round_half_away(S / f))
            if b2 >= n:
                lower.append(0)
                upper.append(n)
                size = max(1, round_half_away(n * f))
                s2size.append(size)
                insize.append(round_up(max(size, self.min_roi[a]), self.multiple[a]))
            else:
                lo = core.lower[a] - (b2 - b) // 2
                hi = lo + b2
                if lo < 0:
                    hi -= lo
                    lo = 0
                if hi > n:
                    lo -= hi - n
                    hi = n
                lower.append(lo)
                upper.append(hi)
                s2size.append(S)
                insize.append(S)
        cost = insize[0] * insize[1] * insize[2] + self.overhead
        return ROI(Box(tuple(lower), tuple(upper)), sorted(set(labels)), tuple(s2size),
                   tuple(insize), sorted(sources), cost, core)

    # steps 1-5
    def plan(self, stage1_boxes: list[LabeledBox], image_boxes: list[LabeledBox] = ()) -> list[ROI]:
        boxes = ([LabeledBox(b.label, self.image_box_from_stage1(b.box)) for b in stage1_boxes]
                 + [LabeledBox(b.label, self.clamp(b.box)) for b in image_boxes])
        grown = [LabeledBox(b.label, self.grow(b.box)) for b in boxes]

        # step 3: one starting ROI per group (at the position of its first box), every other
        # box its own ROI, in box order
        starts: list[tuple[Box, list[int], list[int]]] = []
        group_slot: dict[int, int] = {}
        for i, b in enumerate(grown):
            g = next((k for k, grp in enumerate(self.groups) if b.label in grp), None)
            if g is None:
                starts.append((b.box, [b.label], [i]))
            elif g in group_slot:
                core, labels, src = starts[group_slot[g]]
                starts[group_slot[g]] = (core.union(b.box), labels + [b.label], src + [i])
            else:
                group_slot[g] = len(starts)
                starts.append((b.box, [b.label], [i]))
        rois = [self.fit(core, labels, src) for core, labels, src in starts]

        # step 5: greedy merging of the pair that saves the most
        while True:
            best = None
            for i in range(len(rois)):
                for j in range(i + 1, len(rois)):
                    merged = self.fit(rois[i].core.union(rois[j].core), rois[i].labels + rois[j].labels,
                                      rois[i].source_boxes + rois[j].source_boxes)
                    saving = rois[i].cost + rois[j].cost - merged.cost
                    if saving > 0 and (best is None or saving > best[0]):
                        best = (saving, i, j, merged)
            if best is None:
                break
            _, i, j, merged = best
            rois[i] = merged
            del rois[j]
        rois.sort(key=lambda r: (r.labels[0], r.box.lower[2], r.box.lower[1], r.box.lower[0]))
        return rois


def foreground_box(volume: np.ndarray, threshold: float = 0.0) -> Box | None:
    idx = np.nonzero(volume > threshold)
    if idx[0].size == 0:
        return None
    z, y, x = idx
    return Box((int(x.min()), int(y.min()), int(z.min())), (int(x.max()) + 1, int(y.max()) + 1, int(z.max()) + 1))


def prior_box(fractions, fg: Box, image_size: XYZ | None = None) -> Box:
    """fractions [z0, y0, x0, z1, y1, x1] of the foreground box -> image voxels."""
    f0, f1 = zyx_to_xyz(fractions[:3]), zyx_to_xyz(fractions[3:])
    lo, hi = [], []
    for a in range(3):
        u, v = float(f0[a]), float(f1[a])
        if v < u:
            u, v = v, u
        size = fg.upper[a] - fg.lower[a]
        low = fg.lower[a] + int(math.floor(u * size + 1e-9))
        high = fg.lower[a] + int(math.ceil(v * size - 1e-9))
        high = max(high, low + 1)
        if image_size is not None:
            n = image_size[a]
            low, high = max(low, 0), min(high, n)
            if low >= high:
                low, high = (0, 1) if high <= 0 else (n - 1, n)
        lo.append(low)
        hi.append(high)
    return Box(tuple(lo), tuple(hi))


# =============================================================================================
# The cascade

def channel_labels(metadata: dict, channels: int) -> np.ndarray:
    """Channel k is the k-th smallest label id when the table has one entry per channel, else k
    (and then every id of the table must be below the channel count)."""
    ids = sorted(int(l["id"]) for l in metadata.get("labels", []))
    if len(ids) == channels:
        return np.array(ids, dtype=np.int64)
    if ids and ids[-1] >= channels:
        raise ValueError(f"the label table names id {ids[-1]}, but the network has {channels} channels")
    return np.arange(channels, dtype=np.int64)


def top2_gap(logits: np.ndarray) -> np.ndarray:
    """logits [K, ...] -> gap between the largest and the second largest (inf for K = 1)."""
    if logits.shape[0] < 2:
        return np.full(logits.shape[1:], np.inf)
    part = np.sort(logits, axis=0)
    return part[-1] - part[-2]


def run_padded(net: TorchGraph, volume: np.ndarray, input_size: XYZ) -> np.ndarray:
    """Zero-pads a [z, y, x] volume at the far end to input_size (x, y, z), runs the network
    and returns the logits [K, z, y, x] of the unpadded grid."""
    d, h, w = volume.shape
    x = np.zeros((1, 1, input_size[2], input_size[1], input_size[0]), dtype=np.float32)
    x[0, 0, :d, :h, :w] = volume
    y = net(x)
    if y.ndim != 5 or y.shape[0] != 1 or y.shape[1] < 2 or tuple(y.shape[2:]) != x.shape[2:]:
        raise ValueError(f"network output {y.shape} is not 1 x K x D x H x W (K >= 2) on its input's grid")
    if not np.all(np.isfinite(y)):
        raise ValueError("the network produced NaN or infinite logits")
    return y[0, :, :d, :h, :w]


@dataclass
class CascadeResult:
    labels: np.ndarray           # [z, y, x] int32, image grid
    margin: np.ndarray           # [z, y, x] float64, image grid
    stage1_labels: np.ndarray    # [z, y, x] int32, stage-1 grid
    stage1_margin: np.ndarray    # [z, y, x] float64, stage-1 grid
    stage1_size: XYZ
    stage1_spacing: tuple
    stage1_boxes: list[LabeledBox]
    prior_boxes: list[LabeledBox]
    rois: list[ROI]
    stage1_missed_labels: list[int]
    prior_labels: list[int]
    missed_labels: list[int]

    def report(self) -> dict:
        labels, counts = np.unique(self.labels, return_counts=True)
        s1labels, s1counts = np.unique(self.stage1_labels, return_counts=True)
        return {
            "image_size": [int(v) for v in self.labels.shape[::-1]],
            "stage1_size": list(self.stage1_size),
            "stage1_spacing": list(self.stage1_spacing),
            "stage1_boxes": [{"label": b.label, **b.box.as_json()} for b in self.stage1_boxes],
            "prior_boxes": [{"label": b.label, **b.box.as_json()} for b in self.prior_boxes],
            "rois": [r.as_json() for r in self.rois],
            "stage1_missed_labels": self.stage1_missed_labels,
            "prior_labels": self.prior_labels,
            "missed_labels": self.missed_labels,
            "label_voxels": {str(int(l)): int(c) for l, c in zip(labels, counts)},
            "stage1_label_voxels": {str(int(l)): int(c) for l, c in zip(s1labels, s1counts)},
        }


def stage_spacing_xyz(metadata: dict, graph_name: str):
    for st in metadata["stages"]:
        if st["graph"] == graph_name:
            return tuple(float(v) for v in zyx_to_xyz(st["spacing_mm"]))
    raise ValueError(f"no stage entry for graph {graph_name!r}")


def segment(image: np.ndarray, spacing_xyz, metadata: dict, graphs: list[dict],
            tensors: dict[str, np.ndarray], use_priors: bool = True) -> CascadeResult:
    """image: [z, y, x] float32 voxels (scaling applied); spacing (x, y, z) in mm."""
    cascade = metadata["cascade"]
    if int(metadata["input"]["channels"]) != 1:
        raise ValueError(f"the model takes {metadata['input']['channels']} input channels; an image is one")
    by_name = {g["name"]: g for g in graphs}
    net1 = TorchGraph(by_name[cascade["stage1"]], tensors)
    net2 = TorchGraph(by_name[cascade["stage2"]], tensors)
    table = sorted(int(l["id"]) for l in metadata["labels"])
    n = tuple(int(v) for v in image.shape[::-1])
    spacing = tuple(float(v) for v in spacing_xyz)

    # 1. normalize
    normalized = normalize(image, metadata["input"]["normalization"])

    # 2. stage 1 on the whole volume
    s1_spacing_model = stage_spacing_xyz(metadata, cascade["stage1"])
    same = all(abs(s1_spacing_model[a] - spacing[a]) <= 1e-6 * abs(spacing[a]) for a in range(3))
    if same:
        n1, s1_spacing, vol1 = n, spacing, normalized
    else:
        n1 = size_for_spacing(n, spacing, s1_spacing_model)
        s1_spacing = tuple(spacing[a] * n[a] / n1[a] for a in range(3))
        vol1 = resample_to_size(normalized, n1, anti_aliasing=True)
    mult1 = net1.size_multiple_xyz()
    logits1 = run_padded(net1, vol1, tuple(round_up(n1[a], mult1[a]) for a in range(3)))
    map1 = channel_labels(metadata, logits1.shape[0])
    stage1 = map1[np.argmax(logits1, axis=0)].astype(np.int32)
    stage1_margin = top2_gap(logits1)

    # 3. boxes
    boxes1 = component_boxes(stage1)
    found = set(int(v) for v in np.unique(stage1)) - {0}
    stage1_missed = [l for l in table if l != 0 and l not in found]

    # 4. priors
    prior_boxes: list[LabeledBox] = []
    prior_labels: list[int] = []
    fg = foreground_box(image) if use_priors else None
    if use_priors and fg is not None:
        voxel_mm3 = s1_spacing[0] * s1_spacing[1] * s1_spacing[2]
        for p in cascade.get("priors") or []:
            label = int(p["label"])
            count = int(np.sum(stage1 == label))
            min_volume = p.get("min_volume_mm3")
            if count == 0 or (min_volume is not None and count * voxel_mm3 < float(min_volume)):
                prior_boxes.append(LabeledBox(label, prior_box(p["box"], fg, n)))
                if label not in prior_labels:
                    prior_labels.append(label)
    prior_labels.sort()

    # 5. ROIs
    s2_spacing = stage_spacing_xyz(metadata, cascade["stage2"])
    planner = Planner(n, spacing, n1, s2_spacing, cascade["margin_mm"],
                      zyx_to_xyz(cascade["min_roi_size"]), net2.size_multiple_xyz(),
                      cascade.get("label_groups", []))
    rois = planner.plan(boxes1, prior_boxes)

    # 6-7. stage 2 per ROI and paste
    labels = np.zeros(image.shape, dtype=np.int32)
    best = np.full(image.shape, -1.0, dtype=np.float32)
    margin = np.full(image.shape, np.inf)
    for roi in rois:
        (x0, y0, z0), (x1, y1, z1) = roi.box.lower, roi.box.upper
        crop = normalized[z0:z1, y0:y1, x0:x1]
        if roi.stage2_size != roi.box.size:
            crop = resample_to_size(crop, roi.stage2_size, anti_aliasing=True)
        logits = run_padded(net2, crop, roi.input_size)
        if roi.stage2_size != roi.box.size:
            logits = resample_to_size(logits, roi.box.size, anti_aliasing=False)
        map2 = channel_labels(metadata, logits.shape[0])
        lg = logits.astype(np.float32)
        k = np.argmax(lg, axis=0)
        lab = map2[k].astype(np.int32)
        top = np.take_along_axis(lg, k[None], axis=0)
        p = (np.float32(1) / np.sum(np.exp(lg - top, dtype=np.float32), axis=0, dtype=np.float32)).astype(np.float32)
        eligible = (lab == 0) | np.isin(lab, roi.labels)
        cur_lab = labels[z0:z1, y0:y1, x0:x1]
        cur_best = best[z0:z1, y0:y1, x0:x1]
        cur_margin = margin[z0:z1, y0:y1, x0:x1]
        np.minimum(cur_margin, top2_gap(logits), out=cur_margin)
        contest = eligible & (cur_best > -1) & (lab != cur_lab)
        cur_margin[contest] = np.minimum(cur_margin[contest],
                                         np.abs(p[contest].astype(np.float64) - cur_best[contest]))
        take = eligible & (p > cur_best)
        cur_lab[take] = lab[take]
        cur_best[take] = p[take]

    # 8. missed labels
    final = set(int(v) for v in np.unique(labels)) - {0}
    missed = [l for l in table if l != 0 and l not in final]
    return CascadeResult(labels, margin, stage1, stage1_margin, n1, s1_spacing, boxes1,
                         prior_boxes, rois, stage1_missed, prior_labels, missed)


# =============================================================================================
# Files

def load_image(path) -> tuple[np.ndarray, tuple, object]:
    """Voxels [z, y, x] as float32 with scl_slope/scl_inter applied, spacing (x, y, z) in mm
    from pixdim[1...3], and the nibabel image."""
    import nibabel as nib
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float64)  # applies slope and intercept
    data = np.squeeze(data.reshape(data.shape[:3] + (-1,)), axis=3) if data.ndim > 3 else data
    zooms = [float(z) for z in img.header["pixdim"][1:4]]
    unit = img.header.get_xyzt_units()[0]
    scale = {"meter": 1000.0, "micron": 0.001}.get(unit, 1.0)
    return (np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32),
            tuple(z * scale for z in zooms), img)


def save_like(volume_zyx: np.ndarray, like, path, dtype) -> None:
    import nibabel as nib
    out = nib.Nifti1Image(np.ascontiguousarray(volume_zyx.transpose(2, 1, 0)).astype(dtype),
                          like.affine, like.header.copy())
    out.header.set_data_dtype(dtype)
    out.header["scl_slope"] = 1
    out.header["scl_inter"] = 0
    nib.save(out, str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("--out-labels", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-margin", help="decision margin on the image grid (.nii.gz, float32)")
    ap.add_argument("--out-stage1", help="stage-1 labels (.npy, float32, [z, y, x])")
    ap.add_argument("--out-stage1-margin", help="stage-1 top-2 logit gaps (.npy, float32)")
    ap.add_argument("--no-prior", action="store_true", help="do not use the model's prior boxes")
    args = ap.parse_args(argv)

    metadata, graphs, tensors = read_cseg(args.model)
    if "cascade" not in metadata:
        raise SystemExit(f"{args.model}: no cascade in the metadata")
    image, spacing, img = load_image(args.image)
    res = segment(image, spacing, metadata, graphs, tensors, use_priors=not args.no_prior)
    save_like(res.labels, img, args.out_labels, np.uint8 if res.labels.max() < 256 else np.int16)
    if args.out_margin:
        save_like(np.minimum(res.margin, np.finfo(np.float32).max), img, args.out_margin, np.float32)
    if args.out_stage1:
        np.save(args.out_stage1, res.stage1_labels.astype(np.float32))
    if args.out_stage1_margin:
        np.save(args.out_stage1_margin, res.stage1_margin.astype(np.float32))
    with open(args.out_json, "w") as f:
        json.dump(res.report(), f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in res.report().items()
                      if k in ("rois", "stage1_missed_labels", "prior_labels", "missed_labels")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
