"""Builds the segmentation-metric fixtures in Tests/CascadeSegTests/Fixtures/metrics.

    tools/setup.sh
    tools/.venv/bin/pip install monai surface-distance   # both from PyPI
    tools/.venv/bin/python tools/make_metric_fixtures.py

For a few small synthetic cases (deterministic seeds) this writes the two label maps as float32
`.npy` files, `<case>_pred.npy` and `<case>_ref.npy`, shape (nz, ny, nx) in C order, so that the
flat index is x + nx * (y + ny * z) as in NiftiImage; and one `expected.json` with, per case,
the spacing (x, y, z) in mm and per label:

- `dice`, `iou`: from numpy counts, checked against MONAI `compute_dice` / `compute_iou`
  (include_background=True, one channel) where the reference is not empty (MONAI gives NaN
  there; CascadeSeg gives 0 when only one mask is empty);
- `hd95_mm`: a float64 numpy implementation of the convention CascadeSeg uses (docs/METRICS.md):
  surface = the voxels of the mask with a 6-neighbour outside it or on the image border
  (`mask & ~binary_erosion(mask)`, scipy's default cross and border value 0); directed distances
  from every surface voxel centre of one mask to the nearest surface voxel centre of the other
  (brute force, in mm); the 95th percentile of each direction with linear interpolation
  (numpy's default, as torch.quantile); the larger of the two. NaN when both masks are empty,
  +inf when exactly one is;
- `hd95_monai_mm`: MONAI `compute_hausdorff_distance(percentile=95, directed=False,
  include_background=True, spacing=...)` on the same masks (it computes in float32). It is
  compared only where both masks hold voxels: when exactly one is empty, MONAI (1.6.1) returns
  NaN (torch.quantile over all-infinite distances); when both are, NaN too;
- `hd95_deepmind_mm`: DeepMind surface-distance `compute_robust_hausdorff(
  compute_surface_distances(ref, pred, spacing), 95)`, which uses a different surface (voxel
  corners, surfel areas as weights); kept for comparison only (it gives +inf when either mask
  is empty, both included);
- `volume_pred_mm3`, `volume_ref_mm3`.

The script fails if the numpy implementation and MONAI disagree by more than 1e-5 relative.
Non-finite numbers are written as the strings "nan" and "inf".
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "CascadeSegTests" / "Fixtures" / "metrics"


# =============================================================================================
# Reference implementation of the CascadeSeg convention (float64, brute force distances)

def surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, border_value=0)


def directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing_zyx) -> np.ndarray:
    a = np.argwhere(from_surface).astype(np.float64) * np.asarray(spacing_zyx)
    b = np.argwhere(to_surface).astype(np.float64) * np.asarray(spacing_zyx)
    if len(a) == 0:
        return np.zeros(0)
    if len(b) == 0:
        return np.full(len(a), np.inf)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.sqrt(d2.min(axis=1))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> float:
    if not pred.any() and not ref.any():
        return math.nan
    if not pred.any() or not ref.any():
        return math.inf
    sp, sr = surface(pred), surface(ref)
    return max(float(np.percentile(directed(sp, sr, spacing_zyx), 95)),
               float(np.percentile(directed(sr, sp, spacing_zyx), 95)))


# =============================================================================================
# Third-party references

def monai_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx):
    import torch
    import warnings
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    r = torch.from_numpy(ref[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, directed=False,
                                        spacing=list(spacing_zyx))
        dice = compute_dice(p, r, include_background=True)
        iou = compute_iou(p, r, include_background=True)
    return float(hd[0, 0]), float(dice[0, 0]), float(iou[0, 0])


def deepmind_hd95(pred: np.ndarray, ref: np.ndarray, spacing_zyx):
    try:
        import surface_distance as sd
    except ImportError:
        return None
    # The PyPI release (0.1) predates numpy 2 and scipy's namespace clean-up.
    if not hasattr(np, "Inf"):
        np.Inf = np.inf
    d = sd.compute_surface_distances(ref, pred, spacing_mm=tuple(spacing_zyx))
    return float(sd.compute_robust_hausdorff(d, 95))


# =============================================================================================
# Cases

def ellipsoid(shape, centre_zyx, radii_mm, spacing_zyx):
    z, y, x = np.indices(shape).astype(np.float64)
    s = spacing_zyx
    q = (((z - centre_zyx[0]) * s[0] / radii_mm[0]) ** 2 + ((y - centre_zyx[1]) * s[1] / radii_mm[1]) ** 2
         + ((x - centre_zyx[2]) * s[2] / radii_mm[2]) ** 2)
    return q <= 1.0


def jitter(mask: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Flips a fraction p of the voxels on the boundary band (dilation minus erosion)."""
    band = ndi.binary_dilation(mask) & ~ndi.binary_erosion(mask)
    flip = band & (rng.random(mask.shape) < p)
    return mask ^ flip


def case_aniso_blobs():
    rng = np.random.default_rng(20240611)
    shape = (14, 18, 22)                  # (nz, ny, nx)
    spacing_xyz = (0.7, 0.9, 2.5)
    s = spacing_xyz[::-1]
    ref = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    # Label 1: an ellipsoid; the prediction is shifted, jittered and has two stray islands.
    ref[ellipsoid(shape, (6, 8, 9), (9.0, 5.0, 5.5), s)] = 1
    p1 = ellipsoid(shape, (6.6, 9, 10), (8.0, 5.5, 5.0), s)
    p1 = jitter(p1, rng, 0.3)
    p1[1, 1:3, 18:20] = True
    p1[12, 15, 2] = True
    pred[p1] = 1
    # Label 2: touches the image border (x = nx-1, z = 0); the prediction is a dilation.
    r2 = ellipsoid(shape, (1, 12, 20), (6.0, 3.5, 4.0), s) & (ref == 0)
    ref[r2] = 2
    pred[ndi.binary_dilation(r2) & (pred == 0)] = 2
    # Label 3 only in the reference, label 5 only in the prediction (one-empty cases).
    ref[10:12, 2:4, 2:5] = 3
    pred[(slice(3, 5), slice(14, 17), slice(3, 5))] = 5
    return "aniso_blobs", spacing_xyz, pred, ref, [1, 2, 3, 4, 5]


def case_iso_random():
    rng = np.random.default_rng(7)
    shape = (10, 12, 9)
    spacing_xyz = (1.0, 1.0, 1.0)

    def labels(noise):
        smooth = ndi.gaussian_filter(noise, 1.3)
        out = np.zeros(shape, np.int32)
        out[smooth > 0.08] = 1
        out[smooth < -0.1] = 2
        return out

    base = rng.standard_normal(shape)
    ref = labels(base)
    pred = labels(base + 0.8 * rng.standard_normal(shape))
    return "iso_random", spacing_xyz, pred, ref, None


def case_aniso_thin():
    rng = np.random.default_rng(99)
    shape = (6, 16, 20)
    spacing_xyz = (1.2, 0.5, 3.0)
    ref = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    # Label 1: a one-voxel-thick plate (every voxel is surface) against a slightly tilted one.
    ref[2, 3:13, 4:16] = 1
    for x in range(4, 16):
        pred[3 if x >= 10 else 2, 3:13, x] = 1
    # Label 2: a line along y, and a jittered copy.
    ref[4, 1:15, 2] = 2
    p2 = np.zeros(shape, bool)
    p2[4, 2:15, 3] = True
    p2[5, 5:8, 3] = True
    pred[p2 & (pred == 0)] = 2
    # Label 3: single voxels far apart (HD95 is their distance in mm).
    ref[0, 0, 0] = 3
    pred[5, 15, 19] = 3
    # Label 4: random sparse voxels in both.
    r4 = (rng.random(shape) < 0.03) & (ref == 0)
    p4 = (rng.random(shape) < 0.03) & (pred == 0)
    ref[r4] = 4
    pred[p4] = 4
    return "aniso_thin", spacing_xyz, pred, ref, None


def evaluate(name, spacing_xyz, pred, ref, labels):
    s = spacing_xyz[::-1]
    if labels is None:
        labels = sorted(int(v) for v in set(np.unique(pred)) | set(np.unique(ref)) if v > 0)
    voxel_volume = spacing_xyz[0] * spacing_xyz[1] * spacing_xyz[2]
    out = []
    for label in labels:
        p, r = pred == label, ref == label
        ours = hd95(p, r, s)
        inter, total, union = int((p & r).sum()), int(p.sum() + r.sum()), int((p | r).sum())
        dice = math.nan if total == 0 else 2 * inter / total
        iou = math.nan if union == 0 else inter / union
        entry = {"label": label, "dice": dice, "iou": iou, "hd95_mm": ours,
                 "volume_pred_mm3": int(p.sum()) * voxel_volume, "volume_ref_mm3": int(r.sum()) * voxel_volume}
        if p.any() or r.any():
            m_hd, m_dice, m_iou = monai_metrics(p, r, s)
            entry["hd95_monai_mm"] = m_hd
            # MONAI's Dice and IoU are NaN for an empty reference (ignore_empty=True), and its
            # HD95 NaN or inf when exactly one mask is empty: those are not compared.
            checks = [(dice, m_dice, "Dice"), (iou, m_iou, "IoU")] if r.any() else []
            if p.any() and r.any():
                checks.append((ours, m_hd, "HD95"))
            for mine, theirs, what in checks:
                same = abs(mine - theirs) <= 1e-5 * max(1.0, abs(mine))
                if not same:
                    sys.exit(f"{name} label {label}: {what} {mine!r} here, {theirs!r} from MONAI")
        else:
            entry["hd95_monai_mm"] = math.nan
        dm = deepmind_hd95(p, r, s)
        if dm is not None:
            entry["hd95_deepmind_mm"] = dm
        out.append(entry)
    return {"name": name, "spacing_xyz": list(spacing_xyz), "shape_zyx": list(pred.shape),
            "labels": out}


def jsonable(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for make in (case_aniso_blobs, case_iso_random, case_aniso_thin):
        name, spacing, pred, ref, labels = make()
        np.save(OUT / f"{name}_pred.npy", pred.astype(np.float32))
        np.save(OUT / f"{name}_ref.npy", ref.astype(np.float32))
        cases.append(evaluate(name, spacing, pred, ref, labels))
        for e in cases[-1]["labels"]:
            print(f"{name:12s} label {e['label']}: dice {e['dice']:.4f} hd95 {e['hd95_mm']:.4f} "
                  f"monai {e['hd95_monai_mm']:.4f} deepmind {e.get('hd95_deepmind_mm', math.nan):.4f}")
    (OUT / "expected.json").write_text(json.dumps({"cases": jsonable(cases)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
