"""Trains the two-stage deep grey matter cascade `ModelZoo/brain-deepgrey.cseg` on Colin27 + AAL.

Colin27 (`ch2.nii.gz`, 1 mm, 181x217x181, from Debian's mricron-data) is one subject, so the
training set is randomly augmented copies of it and of its brain-extracted version
(`ch2bet.nii.gz`) with the AAL labels (`aal.nii.gz`) warped alongside: random affine (rotation
up to 10 degrees per axis, scale 0.9-1.1 per axis, translation up to 8 mm), a smooth elastic
displacement, then intensity gamma, scale, a multiplicative bias field and noise on the nonzero
voxels (zero voxels stay zero, as in the template). Labels are warped nearest neighbour. Copies
with seeds `VAL_SEED0 + i` are held out for validation and never used in training (training
copies use seeds 0...n-1).

16 targets, renumbered 1..16 (`TARGETS`): hippocampus, amygdala, caudate, putamen, pallidum,
thalamus (left, right), vermis 1-2, vermis 10, Heschl gyrus (left, right).

Both stages follow the engine's conventions (docs/PIPELINE.md): z-score over the nonzero voxels
of the full-resolution image, then for stage 1 the anti-aliased trilinear resampling to 3 mm
(60x72x60 for Colin27), labels nearest neighbour, zero padding at the far end to the size
multiple (8); for stage 2, crops at 1 mm of the normalized image around each structure's box
grown by the ROI margin, with jitter.

- Stage 1: 3D U-Net 8-16-32-64 (InstanceNorm + LeakyReLU, strided convs down, transposed convs
  up), 17 classes, on whole 3 mm volumes (random field-of-view crops, zero padded as the engine
  pads), loss soft Dice + cross-entropy with strong foreground weights.
- Stage 2: 3D U-Net 16-32-64-128, 17 classes, on 64^3 crops (some 80^3) at 1 mm, small and
  atlas-defined structures (Heschl, vermis, amygdala, pallidum) sampled more often, Dice + CE.
- Baseline (single-stage, for the comparison): the stage-2 network with the same loss, crop
  sizes and optimizer, trained on full-resolution patches sampled as nnU-Net does (a third
  centred in a structure's box, two thirds anywhere), so that it learns the whole image; it runs
  over the whole 1 mm image (`ModelZoo/<name>-baseline.cseg`).

Steps (`--steps`, comma-separated; default all): `data` (augmented copies under --work, cached
as arrays for training), `dataset` (the same copies as NIfTI in the MSD / nnU-Net layout:
imagesTr, labelsTr, imagesTs, labelsTs, dataset.json), `stage1`, `stage2`, `baseline`, `measure` (peak RSS of one forward+backward of the stage-2
network on a crop and on the whole 1 mm volume, each in a fresh subprocess), `export` (ONNX,
opset 17, dynamic D/H/W, checked with onnxruntime), `config` (cascade JSON with label priors from
the training copies), `convert` (`cascadeseg convert --stage1 --stage2 --config`, and the
baseline with `--onnx`) and `validate` (segment + evaluate the held-out copies and ch2better).

    nice -n 19 tools/.venv/bin/python tools/train_cascade.py            # full recipe (~75 min, 2 cores)
    nice -n 19 tools/.venv/bin/python tools/train_cascade.py --quick    # a few minutes, smoke test

Everything large goes to --work (default /tmp/cascadeseg-train); only the .cseg lands in the repo.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_cascade import normalize, resample_labels_to_shape, resample_to_size, size_for_spacing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path("/usr/share/mricron/templates")
TARGETS = [(37, "Hippocampus_L"), (38, "Hippocampus_R"), (41, "Amygdala_L"), (42, "Amygdala_R"),
           (71, "Caudate_L"), (72, "Caudate_R"), (73, "Putamen_L"), (74, "Putamen_R"),
           (75, "Pallidum_L"), (76, "Pallidum_R"), (77, "Thalamus_L"), (78, "Thalamus_R"),
           (109, "Vermis_1_2"), (116, "Vermis_10"), (79, "Heschl_L"), (80, "Heschl_R")]
K = len(TARGETS) + 1
VAL_SEED0 = 100_000
STAGE1_SPACING = 3.0
MARGIN_MM = 5.0
MIN_ROI = 64
MULTIPLE = 8
NORM = {"kind": "zscore", "foreground": "nonzero"}
# Neighbours that share a stage-2 ROI (docs/FORMAT.md, `label_groups`).
LABEL_GROUPS = [[1, 3], [2, 4], [5, 7, 9, 11], [6, 8, 10, 12], [13, 14]]
# Stage-2 sampling weight per label (small or atlas-defined structures more often).
SAMPLE_WEIGHT = {1: 1, 2: 1, 3: 2, 4: 2, 5: 1, 6: 1, 7: 1, 8: 1, 9: 2, 10: 2, 11: 1, 12: 1,
                 13: 3, 14: 3, 15: 3, 16: 3}
# Extra weight from `--s2-hard` on: Vermis_1_2 (~500 voxels, borders drawn by the atlas inside
# the vermis, no image edge) was still at Dice 0 after the first 1345 steps.
HARD_SAMPLE_WEIGHT = {13: 6}
HARD_CE_WEIGHT = {13: 10.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# =============================================================================================
# Data: augmented copies

def load_sources():
    import nibabel as nib
    def zyx(name):
        img = nib.load(str(TEMPLATES / name))
        return np.ascontiguousarray(np.asarray(img.dataobj).transpose(2, 1, 0)), img
    t1, img = zyx("ch2.nii.gz")
    bet, _ = zyx("ch2bet.nii.gz")
    aal, _ = zyx("aal.nii.gz")
    lab = np.zeros(aal.shape, np.uint8)
    for k, (aal_id, _) in enumerate(TARGETS, start=1):
        lab[aal == aal_id] = k
    return t1.astype(np.float32), bet.astype(np.float32), lab, img


def smooth_field(rng, shape, coarse, std, channels=1):
    c = torch.from_numpy(rng.normal(0, std, (1, channels) + coarse).astype(np.float32))
    return F.interpolate(c, size=shape, mode="trilinear", align_corners=True)[0]


def augment(seed: int, t1, bet, lab):
    """One augmented copy: (image float32 [z, y, x], labels uint8)."""
    rng = np.random.default_rng(seed)
    src = bet if rng.random() < 0.3 else t1
    shape = src.shape  # (z, y, x)
    ang = np.deg2rad(rng.uniform(-10, 10, 3))
    cx, sx = math.cos(ang[0]), math.sin(ang[0])
    cy, sy = math.cos(ang[1]), math.sin(ang[1])
    cz, sz = math.cos(ang[2]), math.sin(ang[2])
    rz = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    a = rz @ ry @ rx @ np.diag(1.0 / rng.uniform(0.9, 1.1, 3))  # output -> source, (z, y, x)
    t = rng.uniform(-8, 8, 3)
    centre = (np.array(shape) - 1) / 2
    zz, yy, xx = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    p = torch.stack([zz, yy, xx]) - torch.tensor(centre, dtype=torch.float32).view(3, 1, 1, 1)
    am = torch.tensor(a, dtype=torch.float32)
    src_coords = torch.einsum("ij,jzyx->izyx", am, p)
    src_coords += torch.tensor(centre + t, dtype=torch.float32).view(3, 1, 1, 1)
    src_coords += smooth_field(rng, shape, (6, 7, 6), rng.uniform(1.0, 3.0), channels=3)
    del zz, yy, xx, p
    # grid_sample wants (x, y, z) in [-1, 1] (align_corners=True: -1 and 1 are the edge centres)
    n = torch.tensor(shape, dtype=torch.float32).view(3, 1, 1, 1)
    g = (src_coords / (n - 1) * 2 - 1).flip(0).permute(1, 2, 3, 0).unsqueeze(0)
    del src_coords
    img = F.grid_sample(torch.from_numpy(src)[None, None], g, mode="bilinear",
                        padding_mode="zeros", align_corners=True)[0, 0]
    lb = F.grid_sample(torch.from_numpy(lab.astype(np.float32))[None, None], g, mode="nearest",
                       padding_mode="zeros", align_corners=True)[0, 0]
    del g
    mask = img > 0.5
    x = (img / 255.0).clamp(min=0) ** float(np.exp(rng.uniform(-0.35, 0.35)))
    x = x * torch.exp(smooth_field(rng, shape, (4, 4, 4), 0.12)[0]) * float(rng.uniform(0.8, 1.25))
    x = x + torch.from_numpy(rng.normal(0, rng.uniform(0.0, 0.03), shape).astype(np.float32))
    x = torch.where(mask, x.clamp(min=1e-3), torch.zeros(()))
    return (x * 255.0).numpy().astype(np.float32), lb.numpy().astype(np.uint8)


def to_stage1(img: np.ndarray, lab: np.ndarray):
    """The engine's stage-1 input: z-score (nonzero) at 1 mm, anti-aliased trilinear to 3 mm."""
    size_xyz = size_for_spacing(img.shape[::-1], (1.0, 1.0, 1.0), (STAGE1_SPACING,) * 3)
    x3 = resample_to_size(normalize(img, NORM), size_xyz)
    l3 = resample_labels_to_shape(lab, size_xyz)
    return x3.astype(np.float32), l3.astype(np.uint8)


def label_boxes(lab: np.ndarray) -> dict:
    """label -> [z0, y0, x0, z1, y1, x1] (half-open voxel box) and voxel count."""
    out = {}
    for k in range(1, K):
        idx = np.nonzero(lab == k)
        if len(idx[0]) == 0:
            continue
        out[k] = {"box": [int(idx[0].min()), int(idx[1].min()), int(idx[2].min()),
                          int(idx[0].max()) + 1, int(idx[1].max()) + 1, int(idx[2].max()) + 1],
                  "voxels": int(len(idx[0]))}
    return out


def fg_box(img: np.ndarray):
    idx = np.nonzero(img > 0)
    return [int(idx[0].min()), int(idx[1].min()), int(idx[2].min()),
            int(idx[0].max()) + 1, int(idx[1].max()) + 1, int(idx[2].max()) + 1]


def step_data(args) -> None:
    import nibabel as nib
    pool = args.work / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    t1, bet, lab, ref_img = load_sources()
    jobs = [("train", i, i) for i in range(args.n_train)] + \
           [("val", i, VAL_SEED0 + i) for i in range(args.n_val)]
    meta_path = args.work / "pool.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    t0 = time.time()
    for kind, i, seed in jobs:
        name = f"{kind}{i:03d}"
        if name in meta and meta[name]["seed"] == seed and (pool / f"{name}_s1.npz").exists():
            continue
        img, lb = augment(seed, t1, bet, lab)
        x1 = normalize(img, NORM)
        x3, l3 = to_stage1(img, lb)
        np.save(pool / f"{name}_x1.npy", x1.astype(np.float16))
        np.save(pool / f"{name}_l1.npy", lb)
        np.savez(pool / f"{name}_s1.npz", x=x3, l=l3)
        if kind == "val":
            aff = ref_img.affine
            nib.save(nib.Nifti1Image(img.transpose(2, 1, 0).copy(), aff), str(args.work / f"{name}.nii.gz"))
            nib.save(nib.Nifti1Image(lb.transpose(2, 1, 0).copy(), aff), str(args.work / f"{name}_ref.nii.gz"))
        meta[name] = {"seed": seed, "kind": kind, "shape": list(img.shape), "fg_box": fg_box(img),
                      "labels": {str(k): v for k, v in label_boxes(lb).items()}}
        meta_path.write_text(json.dumps(meta))
        log(f"data {name} (seed {seed}) {time.time() - t0:.0f}s, peak RSS {peak_rss_mb():.0f} MB")
    log(f"data: {len(jobs)} copies in {args.work}")


def step_dataset(args) -> None:
    """The same augmented copies as `data` (same seeds, so the same images), as a dataset in the
    MSD / nnU-Net v2 layout under `<work>/Dataset001_BrainDeepGrey`: imagesTr/labelsTr (training
    copies), imagesTs/labelsTs (the held-out copies), dataset.json. Raw intensities and the
    Colin27 affine, labels 0..16; for nnU-Net or other frameworks (our own training reads the
    cached arrays of `data`)."""
    import nibabel as nib
    root = args.work / "Dataset001_BrainDeepGrey"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    t1, bet, lab, ref_img = load_sources()
    jobs = [("Tr", i, i) for i in range(args.n_train)] + [("Ts", i, VAL_SEED0 + i) for i in range(args.n_val)]
    t0 = time.time()
    for split, i, seed in jobs:
        case = f"deepgrey_{'train' if split == 'Tr' else 'val'}{i:03d}"
        image, label = root / f"images{split}" / f"{case}_0000.nii.gz", root / f"labels{split}" / f"{case}.nii.gz"
        if image.exists() and label.exists():
            continue
        img, lb = augment(seed, t1, bet, lab)
        for path, data in ((label, lb), (image, img)):  # image last: it marks the case complete
            tmp = path.with_name(path.name + ".tmp.nii.gz")
            nib.save(nib.Nifti1Image(data.transpose(2, 1, 0).copy(), ref_img.affine), str(tmp))
            tmp.replace(path)
        log(f"dataset {case} (seed {seed}) {time.time() - t0:.0f}s")
    meta = {"channel_names": {"0": "T1"},
            "labels": {"background": 0, **{n: k for k, (_, n) in enumerate(TARGETS, 1)}},
            "numTraining": args.n_train, "file_ending": ".nii.gz",
            "name": "BrainDeepGrey", "description": "augmented copies of the Colin27 T1 with 16 AAL labels "
            "(tools/train_cascade.py); training seeds 0..n-1, test seeds from 100000",
            "licence": "Colin27 and AAL as packaged by mricron-data (BSD-3-Clause); see ModelZoo/README.md",
            "training": [{"image": f"./imagesTr/deepgrey_train{i:03d}_0000.nii.gz",
                          "label": f"./labelsTr/deepgrey_train{i:03d}.nii.gz"} for i in range(args.n_train)],
            "test": [f"./imagesTs/deepgrey_val{i:03d}_0000.nii.gz" for i in range(args.n_val)]}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"dataset: {len(jobs)} cases in {root}")


# =============================================================================================
# Network

class Block(nn.Sequential):
    def __init__(self, cin, cout, stride=1):
        super().__init__(nn.Conv3d(cin, cout, 3, stride, 1), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.01, inplace=True),
                         nn.Conv3d(cout, cout, 3, 1, 1), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


class UNet(nn.Module):
    """Plain 3D U-Net: len(ch) levels, strided conv down, transposed conv up, skip concat."""

    def __init__(self, ch=(8, 16, 32, 64), classes=K):
        super().__init__()
        self.enc = nn.ModuleList([Block(1, ch[0])] + [Block(ch[i - 1], ch[i], 2) for i in range(1, len(ch))])
        self.up = nn.ModuleList([nn.ConvTranspose3d(ch[i], ch[i - 1], 2, 2) for i in range(len(ch) - 1, 0, -1)])
        self.dec = nn.ModuleList([Block(2 * ch[i - 1], ch[i - 1]) for i in range(len(ch) - 1, 0, -1)])
        self.head = nn.Conv3d(ch[0], classes, 1)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


STAGE1_CH = (8, 16, 32, 64)
STAGE2_CH = (16, 32, 64, 128)


def loss_fn(logits, target, ce_weight):
    ce = F.cross_entropy(logits, target, weight=ce_weight)
    p = logits.softmax(1)
    oh = F.one_hot(target, K).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (p * oh).sum(dims)
    denom = p.sum(dims) + oh.sum(dims)
    present = oh.sum(dims) > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    fg = present.clone()
    fg[0] = False
    # Dice over the foreground classes present in the batch (absent ones: penalize any mass)
    dl = 1 - dice[fg].mean() if fg.any() else torch.zeros(())
    absent = ~present
    absent[0] = False
    fp = (p.sum(dims)[absent] / p[:, :1].numel()).sum() if absent.any() else torch.zeros(())
    return ce + dl + fp, ce.detach(), dl.detach()


def train_step(net, opt, xs, ys, ce_weight):
    """One optimizer step on the batch of samples `xs` ([z, y, x] each) and labels `ys`; returns
    the loss, its cross-entropy and its Dice part as floats."""
    net.train()
    loss, ce, dl = loss_fn(net(torch.stack(xs)[:, None]), torch.stack(ys), ce_weight)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), float(ce), float(dl)


def dice_per_label(pred: np.ndarray, ref: np.ndarray) -> dict:
    out = {}
    for k in range(1, K):
        a, b = pred == k, ref == k
        s = a.sum() + b.sum()
        out[k] = float(2 * (a & b).sum() / s) if s else float("nan")
    return out


def poly_lr(lr0, frac):
    return lr0 * max(0.0, 1 - frac) ** 0.9


def pad_to(x, size, value=0):
    """Zero-pads [..., z, y, x] at the far end to `size` (z, y, x)."""
    pads = []
    for n, m in zip(reversed(x.shape[-3:]), reversed(size)):
        pads += [0, m - n]
    return F.pad(x, pads, value=value)


def round_up(n, m=MULTIPLE):
    return (n + m - 1) // m * m


# =============================================================================================
# Stage 1

def start_stage(args, stage: int, net, name: str = ""):
    """The network (resumed from `--s{stage}-resume` if given: weights only, Adam restarts with a
    warm-up), its first step, optimizer, time budget in seconds, checkpoint path and log file
    (`name`, default `stage{stage}`)."""
    name = name or f"stage{stage}"
    step0 = 0
    resume = getattr(args, f"s{stage}_resume")
    if resume:
        state = torch.load(resume)
        net.load_state_dict(state["net"])
        step0 = state["step"]
        log(f"{name}: resumed from {resume} at step {step0}")
    opt = torch.optim.AdamW(net.parameters(), lr=getattr(args, f"s{stage}_lr"), weight_decay=1e-5)
    budget = getattr(args, f"s{stage}_minutes") * 60
    return net, step0, opt, budget, args.work / f"{name}.pt", open(args.work / f"{name}_log.jsonl", "a")


def step_stage1(args) -> None:
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    meta = json.loads((args.work / "pool.json").read_text())
    pool = args.work / "pool"
    train = [np.load(pool / f"{n}_s1.npz") for n in sorted(meta) if meta[n]["kind"] == "train"]
    train = [(d["x"], d["l"]) for d in train]
    val = [np.load(pool / f"{n}_s1.npz") for n in sorted(meta) if meta[n]["kind"] == "val"]
    val = [(d["x"], d["l"]) for d in val]
    shape = train[0][0].shape
    full = tuple(round_up(n) for n in shape)
    freq = np.bincount(np.concatenate([l.ravel() for _, l in train]), minlength=K).astype(np.float64)
    w = np.minimum(50.0, np.sqrt(freq[0] / np.maximum(freq, 1)))
    w[0] = 1.0
    ce_weight = torch.tensor(w, dtype=torch.float32)
    log(f"stage1: {len(train)} training copies at {shape} (padded {full}), CE weights {np.round(w, 1).tolist()}")
    net, step0, opt, budget, ckpt, logf = start_stage(args, 1, UNet(STAGE1_CH))
    t0 = time.time()
    step, last_ckpt, last_val = step0, t0, t0
    base_rss = rss_mb()
    while True:
        el = time.time() - t0
        if el > budget or (args.s1_steps and step >= args.s1_steps):
            break
        frac = el / budget if not args.s1_steps else (step - step0) / max(1, args.s1_steps - step0)
        lr = poly_lr(args.s1_lr, frac) * min(1.0, (step - step0 + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr
        xs, ls = [], []
        for _ in range(args.s1_batch):
            x, l = train[rng.integers(len(train))]
            x = torch.from_numpy(x)
            l = torch.from_numpy(l.astype(np.int64))
            # random field of view (the engine zero-pads a smaller image at the far end)
            if rng.random() < 0.4:
                lo = [int(rng.integers(0, 6)) for _ in range(3)]
                hi = [n - int(rng.integers(0, 6)) for n in shape]
                x = x[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
                l = l[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            if rng.random() < 0.5:
                x = torch.where(x != 0, x + 0.1 * torch.randn_like(x), x)
            xs.append(pad_to(x, full))
            ls.append(pad_to(l, full))
        loss, ce, dl = train_step(net, opt, xs, ls, ce_weight)
        step += 1
        rec = {"step": step, "t": round(time.time() - t0, 1), "lr": lr, "loss": loss, "ce": ce,
               "dice_loss": dl, "peak_rss_mb": round(peak_rss_mb()), "base_rss_mb": round(base_rss)}
        if step % 10 == 0 or step == 1:
            log(f"stage1 step {step} loss {loss:.3f} (ce {ce:.3f} dice {dl:.3f}) "
                f"lr {lr:.2e} peak RSS {peak_rss_mb():.0f} MB")
        if time.time() - last_val > args.val_every * 60:
            rec["val_dice"] = eval_stage1(net, val, full)
            last_val = time.time()
            log(f"stage1 val mean Dice {np.nanmean(list(rec['val_dice'].values())):.3f} {rec['val_dice']}")
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if time.time() - last_ckpt > 120:
            torch.save({"net": net.state_dict(), "step": step}, ckpt)
            last_ckpt = time.time()
    torch.save({"net": net.state_dict(), "step": step}, ckpt)
    vd = eval_stage1(net, val, full)
    summary = {"steps": step, "resumed_at_step": step0, "seconds": round(time.time() - t0), "batch": args.s1_batch,
               "peak_rss_mb": round(peak_rss_mb()), "base_rss_mb": round(base_rss),
               "val_dice": vd, "val_mean_dice": float(np.nanmean(list(vd.values())))}
    (args.work / "stage1_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"stage1 done: {summary}")


@torch.no_grad()
def eval_stage1(net, val, full):
    net.eval()
    ds = []
    for x, l in val:
        out = net(pad_to(torch.from_numpy(x), full)[None, None])[0].argmax(0)
        out = out[:x.shape[0], :x.shape[1], :x.shape[2]].numpy()
        ds.append(dice_per_label(out, l))
    return {k: round(float(np.nanmean([d[k] for d in ds])), 3) for k in range(1, K)}


# =============================================================================================
# Stage 2

def crop_box(rng, shape, label_box, size, jitter):
    """A crop of `size` (z, y, x) voxels around a label box grown by the margin, jittered and
    shifted inside the image."""
    lo = []
    for a in range(3):
        b0 = label_box[a] - MARGIN_MM
        b1 = label_box[a + 3] + MARGIN_MM
        c = (b0 + b1) / 2 + rng.uniform(-jitter, jitter)
        s = int(round(c - size[a] / 2))
        lo.append(int(min(max(s, 0), shape[a] - size[a])))
    return lo


def step_stage2(args, sampling: str = "roi") -> None:
    """Trains the stage-2 network on crops around the structures (`sampling="roi"`, the engine's
    ROI rule: label box + margin, jittered) or, for the single-stage baseline, the same network
    on full-resolution patches sampled as nnU-Net does (`sampling="patch"`: a third centred on a
    random voxel of the label box of a structure, two thirds anywhere in the volume)."""
    name = "stage2" if sampling == "roi" else "baseline"
    torch.manual_seed(2 if sampling == "roi" else 3)
    rng = np.random.default_rng(2 if sampling == "roi" else 3)
    meta = json.loads((args.work / "pool.json").read_text())
    pool = args.work / "pool"
    names = [n for n in sorted(meta) if meta[n]["kind"] == "train"]
    vnames = [n for n in sorted(meta) if meta[n]["kind"] == "val"]
    # memory-mapped: only the pages a crop touches are read
    X = {n: np.load(pool / f"{n}_x1.npy", mmap_mode="r") for n in names + vnames}
    L = {n: np.load(pool / f"{n}_l1.npy", mmap_mode="r") for n in names + vnames}
    labels = list(range(1, K))
    sample_weight = {**SAMPLE_WEIGHT, **(HARD_SAMPLE_WEIGHT if args.s2_hard else {})}
    pw = np.array([sample_weight[k] for k in labels], np.float64)
    pw /= pw.sum()
    ce_w = torch.ones(K)
    ce_w[1:] = 3.0
    for k, wk in SAMPLE_WEIGHT.items():
        if wk > 1:
            ce_w[k] = 5.0
    if args.s2_hard:
        for k, wk in HARD_CE_WEIGHT.items():
            ce_w[k] = wk
    if args.s2_plain_ce:
        # Class weights move borders outwards (the weighted models over-segment every structure
        # by 10-35 %); a last phase without them moves them back.
        ce_w = torch.ones(K)
    log(f"{name}: {len(names)} training copies, {sampling} crops {args.s2_crop}^3 (20% {args.s2_crop_big}^3), "
        f"batch {args.s2_batch}, CE weights {ce_w.tolist()}")

    def sample(name, k, size, jitter):
        m = meta[name]
        shape = m["shape"]
        if str(k) not in m["labels"]:
            k = int(next(iter(m["labels"])))
        if sampling == "roi":
            lo = crop_box(rng, shape, m["labels"][str(k)]["box"], size, jitter)
        elif rng.random() < 1 / 3:
            b = m["labels"][str(k)]["box"]
            lo = [int(min(max(rng.integers(b[a], b[a + 3] + 1) - rng.integers(0, size[a]), 0), shape[a] - size[a]))
                  for a in range(3)]
        else:
            lo = [int(rng.integers(0, shape[a] - size[a] + 1)) for a in range(3)]
        sl = tuple(slice(lo[a], lo[a] + size[a]) for a in range(3))
        return np.asarray(X[name][sl], np.float32), np.asarray(L[name][sl], np.int64)

    # fixed validation crops: one per label per validation copy
    vrng = np.random.default_rng(7)
    vcrops = []
    for n in vnames:
        for k in labels:
            lo = crop_box(vrng, meta[n]["shape"], meta[n]["labels"][str(k)]["box"], (64, 64, 64), 4)
            sl = tuple(slice(lo[a], lo[a] + 64) for a in range(3))
            vcrops.append((k, np.asarray(X[n][sl], np.float32), np.asarray(L[n][sl], np.int64)))

    net, step0, opt, budget, ckpt, logf = start_stage(args, 2, UNet(STAGE2_CH), name)
    t0 = time.time()
    step, last_ckpt, last_val = step0, t0, t0
    base_rss = rss_mb()
    threads = torch.get_num_threads()
    while True:
        el = time.time() - t0
        if el > budget or (args.s2_steps and step >= args.s2_steps):
            break
        if args.threads_after and threads != args.threads_after and Path(args.threads_after_flag).exists():
            threads = args.threads_after
            torch.set_num_threads(threads)
            log(f"{name}: now {threads} threads")
        frac = el / budget if not args.s2_steps else (step - step0) / max(1, args.s2_steps - step0)
        lr = poly_lr(args.s2_lr, frac) * min(1.0, (step - step0 + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr
        s = args.s2_crop_big if rng.random() < 0.2 else args.s2_crop
        xs, ls = [], []
        for _ in range(args.s2_batch):
            x, l = sample(names[rng.integers(len(names))], int(rng.choice(labels, p=pw)), (s, s, s), 12)
            x = torch.from_numpy(x)
            if rng.random() < 0.5:  # small intensity jitter after normalization
                x = torch.where(x != 0, x * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
                                + 0.05 * torch.randn_like(x), x)
            xs.append(x)
            ls.append(torch.from_numpy(l))
        loss, ce, dl = train_step(net, opt, xs, ls, ce_w)
        step += 1
        rec = {"step": step, "t": round(time.time() - t0, 1), "lr": lr, "crop": s, "loss": loss,
               "ce": ce, "dice_loss": dl, "peak_rss_mb": round(peak_rss_mb()),
               "base_rss_mb": round(base_rss)}
        if step % 10 == 0 or step == 1:
            log(f"{name} step {step} crop {s} loss {loss:.3f} (ce {ce:.3f} dice {dl:.3f}) "
                f"lr {lr:.2e} peak RSS {peak_rss_mb():.0f} MB")
        if time.time() - last_val > args.val_every * 60:
            rec["val_dice"] = eval_stage2(net, vcrops)
            last_val = time.time()
            log(f"{name} val mean Dice {np.nanmean(list(rec['val_dice'].values())):.3f} {rec['val_dice']}")
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if time.time() - last_ckpt > 120:
            torch.save({"net": net.state_dict(), "step": step}, ckpt)
            last_ckpt = time.time()
    torch.save({"net": net.state_dict(), "step": step}, ckpt)
    vd = eval_stage2(net, vcrops)
    summary = {"steps": step, "resumed_at_step": step0, "seconds": round(time.time() - t0), "batch": args.s2_batch,
               "sampling": sampling, "hard": bool(args.s2_hard), "plain_ce": bool(args.s2_plain_ce), "crop": [args.s2_crop, args.s2_crop_big], "peak_rss_mb": round(peak_rss_mb()),
               "base_rss_mb": round(base_rss), "val_crop_dice": vd,
               "val_crop_mean_dice": float(np.nanmean(list(vd.values())))}
    (args.work / f"{name}_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"{name} done: {summary}")


@torch.no_grad()
def eval_stage2(net, vcrops):
    """Dice of each crop's own label, averaged per label."""
    net.eval()
    per = {k: [] for k in range(1, K)}
    for k, x, l in vcrops:
        out = net(torch.from_numpy(x)[None, None])[0].argmax(0).numpy()
        per[k].append(dice_per_label(out, l)[k])
    return {k: round(float(np.nanmean(v)), 3) for k, v in per.items()}


# =============================================================================================
# Peak memory of one stage-2 training step: crop vs whole 1 mm volume

MEASURE_CODE = r"""
import resource, sys, time, torch
sys.path.insert(0, {tools!r})
from train_cascade import UNet, STAGE2_CH, K, loss_fn
torch.set_num_threads({threads})
shape = {shape}
net = UNet(STAGE2_CH)
x = torch.randn((1, 1) + tuple(shape))
y = torch.randint(0, K, (1,) + tuple(shape))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.time()
loss, _, _ = loss_fn(net(x), y, torch.ones(K))
loss.backward()
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.time() - t)
"""


def measure_one(shape, threads):
    code = MEASURE_CODE.format(tools=str(Path(__file__).resolve().parent), threads=threads, shape=list(shape))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return {"shape": list(shape), "error": (r.stderr or "")[-500:], "returncode": r.returncode}
    base, peak, sec = map(float, r.stdout.split())
    return {"shape": list(shape), "peak_rss_mb": round(peak), "import_rss_mb": round(base), "seconds": round(sec, 1)}


def step_measure(args) -> None:
    res = {"crop": measure_one((args.s2_crop,) * 3, args.threads),
           "crop_big": measure_one((args.s2_crop_big,) * 3, args.threads)}
    whole = tuple(round_up(n) for n in (181, 217, 181))
    with open("/proc/meminfo") as f:
        avail = {l.split(":")[0]: int(l.split()[1]) for l in f}["MemAvailable"] / 1024
    if avail < 14000:
        res["whole"] = {"shape": list(whole), "skipped": f"only {avail:.0f} MB available"}
    else:
        res["whole"] = measure_one(whole, args.threads)
    if "peak_rss_mb" in res["whole"]:
        res["whole_over_crop"] = round(res["whole"]["peak_rss_mb"] / res["crop"]["peak_rss_mb"], 1)
    (args.work / "measure.json").write_text(json.dumps(res, indent=1))
    log(f"measure: {res}")


# =============================================================================================
# Export, config, convert

def step_export(args) -> None:
    import onnx
    import onnxruntime as ort
    nets = [("stage1", STAGE1_CH, (64, 72, 64)), ("stage2", STAGE2_CH, (64, 80, 72))]
    if (args.work / "baseline.pt").exists():
        nets.append(("baseline", STAGE2_CH, (64, 80, 72)))
    for stage, ch, probe in nets:
        net = UNet(ch)
        net.load_state_dict(torch.load(args.work / f"{stage}.pt")["net"])
        net.eval()
        path = args.work / f"{stage}.onnx"
        x = torch.randn((1, 1) + probe)
        kw = dict(input_names=["input"], output_names=["logits"], opset_version=17,
                  dynamic_axes={"input": {2: "D", 3: "H", 4: "W"}, "logits": {2: "D", 3: "H", 4: "W"}})
        try:
            torch.onnx.export(net, (x,), str(path), dynamo=False, do_constant_folding=True, **kw)
        except TypeError:
            torch.onnx.export(net, (x,), str(path), do_constant_folding=True, **kw)
        onnx.checker.check_model(onnx.load(str(path)))
        x2 = torch.randn(1, 1, 48, 56, 40)
        with torch.no_grad():
            want = net(x2).numpy()
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x2.numpy()})[0]
        err = float(np.abs(got - want).max())
        log(f"export {path}: {path.stat().st_size / 2**20:.1f} MB, onnxruntime max |diff| {err:.2e}")
        if err > 1e-3:
            raise SystemExit(f"{stage}: onnxruntime disagrees with PyTorch ({err})")


def step_config(args) -> None:
    meta = json.loads((args.work / "pool.json").read_text())
    train = [m for m in meta.values() if m["kind"] == "train"]
    priors = []
    for k in range(1, K):
        fr, vols = [], []
        for m in train:
            if str(k) not in m["labels"]:
                continue
            b, fg = m["labels"][str(k)]["box"], m["fg_box"]
            vols.append(m["labels"][str(k)]["voxels"])  # 1 mm voxels = mm^3
            fr.append([(b[a] - fg[a % 3]) / (fg[a % 3 + 3] - fg[a % 3]) for a in range(6)])
        fr = np.array(fr)
        box = [max(0.0, float(fr[:, a].min()) - 0.01) for a in range(3)] + \
              [min(1.0, float(fr[:, a].max()) + 0.01) for a in range(3, 6)]
        priors.append({"label": k, "box": [round(v, 4) for v in box],
                       "min_volume_mm3": round(0.3 * min(vols), 1)})
    cfg = {
        "name": "brain-deepgrey",
        "description": "16 deep grey matter and small structures of T1 brain MRI (AAL labels on Colin27): "
                       "stage 1 at 3 mm on the whole volume, stage 2 on ROIs at 1 mm. Trained on augmented "
                       "copies of one subject; research use only, not for clinical use.",
        "license": "weights derived from the Colin27 template (Holmes et al. 1998) and the AAL atlas "
                   "(Tzourio-Mazoyer et al. 2002) as packaged by mricron-data (BSD-3-Clause); see ModelZoo/README.md",
        "labels": [{"id": 0, "name": "background"}] + [{"id": k, "name": n} for k, (_, n) in enumerate(TARGETS, 1)],
        "normalization": NORM,
        "stage1": {"spacing_mm": [STAGE1_SPACING] * 3},
        "stage2": {"spacing_mm": [1.0, 1.0, 1.0]},
        "roi": {"margin_mm": MARGIN_MM, "min_roi_size": [MIN_ROI] * 3, "label_groups": LABEL_GROUPS},
        "priors": priors,
    }
    args.config.parent.mkdir(parents=True, exist_ok=True)
    args.config.write_text(json.dumps(cfg, indent=1) + "\n")
    log(f"config: {args.config}")


def baseline_path(args) -> Path:
    """The single-stage baseline's model file, next to the cascade's: NAME-baseline.cseg."""
    return args.output.with_name(args.output.stem + "-baseline.cseg")


def step_convert(args) -> None:
    cmd = [str(args.cascadeseg), "convert", "--stage1", str(args.work / "stage1.onnx"),
           "--stage2", str(args.work / "stage2.onnx"), "--config", str(args.config),
           "-o", str(args.output), "--weights", args.weights]
    log("convert: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    log(f"convert: {args.output} {args.output.stat().st_size / 2**20:.2f} MB")
    if (args.work / "baseline.onnx").exists():
        out = baseline_path(args)
        labels = ",".join(["0=background"] + [f"{k}={n}" for k, (_, n) in enumerate(TARGETS, 1)])
        cmd = [str(args.cascadeseg), "convert", "--onnx", str(args.work / "baseline.onnx"), "-o", str(out),
               "--weights", args.weights, "--name", out.stem, "--labels", labels, "--spacing", "1,1,1",
               "--normalization", "zscore", "--size-multiple", f"{MULTIPLE},{MULTIPLE},{MULTIPLE}",
               "--description", "single-stage baseline of brain-deepgrey: the stage-2 U-Net trained on "
                                "full-resolution patches of the whole image (nnU-Net sampling); research use only",
               "--license", "weights derived from Colin27 and AAL as packaged by mricron-data (BSD-3-Clause); see ModelZoo/README.md"]
        log("convert: " + " ".join(cmd))
        subprocess.run(cmd, check=True)
        log(f"convert: {out} {out.stat().st_size / 2**20:.2f} MB")


def make_ch2better_ref(path: Path) -> Path:
    """AAL resampled nearest neighbour to the 0.5 mm ch2better grid (both files are in the same
    physical space: their affines map to the same millimetre frame), renumbered 1..16."""
    import nibabel as nib
    b, a = nib.load(str(TEMPLATES / "ch2better.nii.gz")), nib.load(str(TEMPLATES / "aal.nii.gz"))
    m = np.linalg.inv(a.affine) @ b.affine
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in b.shape], indexing="ij")).reshape(3, -1)
    src = np.rint(m[:3, :3] @ ijk + m[:3, 3:4]).astype(np.int64)
    ok = np.all((src >= 0) & (src < np.array(a.shape)[:, None]), axis=0)
    aal = np.asarray(a.dataobj)
    ids = np.zeros(src.shape[1], np.uint8)
    ids[ok] = aal[src[0, ok], src[1, ok], src[2, ok]]
    lut = np.zeros(256, np.uint8)
    for k, (aal_id, _) in enumerate(TARGETS, 1):
        lut[aal_id] = k
    out = nib.Nifti1Image(lut[ids].reshape(b.shape), b.affine)
    out.header.set_data_dtype(np.uint8)
    nib.save(out, str(path))
    return path


def step_validate(args) -> None:
    """`cascadeseg segment` (cascade, and stage 1 alone) + `cascadeseg evaluate` on the held-out
    augmented copies and on ch2better (0.5 mm); per-label Dice to validation.json / .md."""
    vdir = args.work / "validate"
    vdir.mkdir(exist_ok=True)
    cases = [(f"val{i:03d}", args.work / f"val{i:03d}.nii.gz", args.work / f"val{i:03d}_ref.nii.gz")
             for i in range(args.n_val)]
    ref_b = vdir / "ch2better_ref.nii.gz"
    if not ref_b.exists():
        make_ch2better_ref(ref_b)
    cases.append(("ch2better", TEMPLATES / "ch2better.nii.gz", ref_b))
    modes = [m for m in args.validate_modes.split(",") if m]
    res = {}
    for name, img, ref in cases:
        for mode in modes:
            flag = {"cascade": [], "stage1-only": ["--stage1-only"], "single-stage": ["--single-stage"],
                    "baseline": []}[mode]
            model = baseline_path(args) if mode == "baseline" else args.output
            out, rep, ev = (vdir / f"{name}_{mode}{s}" for s in (".nii.gz", "_report.json", "_eval.json"))
            seg = [str(args.cascadeseg), "segment", str(model), str(img), "-o", str(out),
                   "--report", str(rep), "--quiet"] + flag
            t = time.time()
            r = subprocess.run(seg, capture_output=True, text=True)
            if r.returncode != 0:
                log(f"validate {name} {mode}: segment failed: {r.stderr.strip()[-400:]}")
                res[f"{name}/{mode}"] = {"error": r.stderr.strip()[-400:]}
                continue
            subprocess.run([str(args.cascadeseg), "evaluate", "--pred", str(out), "--ref", str(ref),
                            "--json", str(ev)], check=True, capture_output=True)
            e, rp = json.loads(ev.read_text()), json.loads(rep.read_text())
            res[f"{name}/{mode}"] = {
                "dice": {l["label"]: round(l["dice"], 3) for l in e["labels"]},
                "hd95_mm": {l["label"]: l["hd95_mm"] for l in e["labels"]},
                "mean_dice": round(e["mean_dice"], 3), "seconds": round(time.time() - t, 1),
                "wall_seconds": rp.get("wall_seconds"), "peak_device_bytes": rp.get("peak_device_bytes"),
                "rois": len(rp.get("rois", [])), "prior_labels": rp.get("prior_labels"),
                "missed_labels": rp.get("missed_labels"), "command": " ".join(seg)}
            log(f"validate {name} {mode}: mean Dice {e['mean_dice']:.3f} ({time.time() - t:.0f}s)")
            (args.work / "validation.json").write_text(json.dumps(res, indent=1))
    # markdown table: rows = labels, columns = case/mode
    cols = [c for c in res if "dice" in res[c]]
    lines = ["| label | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k, (_, n) in enumerate(TARGETS, 1):
        lines.append(f"| {k} {n} | " + " | ".join(f"{res[c]['dice'][k]:.3f}" for c in cols) + " |")
    lines.append("| mean | " + " | ".join(f"{res[c]['mean_dice']:.3f}" for c in cols) + " |")
    (args.work / "validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/cascadeseg-train"))
    ap.add_argument("--steps", default="data,dataset,stage1,stage2,baseline,measure,export,config,convert,validate")
    ap.add_argument("--validate-modes", default="cascade,stage1-only,baseline",
                    help="segment modes to validate: cascade, stage1-only, single-stage (the cascade's stage 2 "
                         "over the whole image), baseline (the separately trained single-stage model)")
    ap.add_argument("--quick", action="store_true", help="tiny run: 4 copies, a few steps per stage")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threads-after", type=int, default=0,
                    help="stage 2: switch to this many threads once --threads-after-flag exists")
    ap.add_argument("--threads-after-flag", default="")
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-val", type=int, default=3)
    ap.add_argument("--s1-minutes", type=float, default=25)
    ap.add_argument("--s1-steps", type=int, default=0, help="stop after this many steps (0: time budget)")
    ap.add_argument("--s1-batch", type=int, default=2)
    ap.add_argument("--s1-lr", type=float, default=3e-3)
    ap.add_argument("--s1-resume", type=Path, help="stage-1 checkpoint to continue from")
    ap.add_argument("--s2-minutes", type=float, default=45)
    ap.add_argument("--s2-steps", type=int, default=0)
    ap.add_argument("--s2-batch", type=int, default=1)
    ap.add_argument("--s2-crop", type=int, default=64)
    ap.add_argument("--s2-crop-big", type=int, default=80)
    ap.add_argument("--s2-lr", type=float, default=2e-3)
    ap.add_argument("--s2-resume", type=Path, help="stage-2 (or baseline) checkpoint to continue from")
    ap.add_argument("--s2-plain-ce", action="store_true",
                    help="stage 2 / baseline: unweighted cross-entropy (a last phase against over-segmentation)")
    ap.add_argument("--s2-hard", action="store_true",
                    help="stage 2 / baseline: sample Vermis_1_2 more often and weight it more (HARD_*)")
    ap.add_argument("--val-every", type=float, default=5, help="minutes between validations")
    ap.add_argument("--config", type=Path, default=REPO / "ModelZoo" / "brain-deepgrey.json")
    ap.add_argument("--output", type=Path, default=REPO / "ModelZoo" / "brain-deepgrey.cseg")
    ap.add_argument("--weights", default="float32", choices=["float32", "float16"])
    ap.add_argument("--cascadeseg", type=Path, default=REPO / ".build" / "debug" / "cascadeseg")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_val = 4, 1
        args.s1_steps, args.s2_steps = 20, 10
        args.s1_minutes, args.s2_minutes, args.val_every = 3, 5, 1
        if args.work == Path("/tmp/cascadeseg-train"):
            args.work = Path("/tmp/cascadeseg-train-quick")
        if args.output == REPO / "ModelZoo" / "brain-deepgrey.cseg":
            args.output = args.work / "brain-deepgrey-quick.cseg"
            args.config = args.work / "brain-deepgrey-quick.json"
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    steps = args.steps.split(",")
    for s in steps:
        fn = {"data": step_data, "dataset": step_dataset, "stage1": step_stage1, "stage2": step_stage2,
              "baseline": lambda a: step_stage2(a, sampling="patch"), "measure": step_measure,
              "export": step_export, "config": step_config, "convert": step_convert,
              "validate": step_validate}[s]
        t = time.time()
        fn(args)
        log(f"{s}: {time.time() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
