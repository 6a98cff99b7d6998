"""Stages `detector`, `baseline`, `lofo`: training loops (resumable from checkpoints).

Sampling balances the classes 50/50 and, inside each class, the sampling groups (fake
families; real source x kind), so Kermany's 2000 small images do not dominate and no group's
size/format can become the decision rule. Tiles are trained as random 128 px crops (the network
is fully convolutional with global pooling) and fine-tuned on full 256 px tiles at the end, to
fit the CPU budget.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .baseline import SmallCNN, whole_image_input
from .config import Config
from .detector import NPRDetector
from .fakes import FAMILIES, read_images
from .imaging import load_grey
from .tilebank import group_of, load_tilebank

__all__ = ["train_detector", "train_baseline", "train_lofo", "sampling_probs", "load_detector", "load_baseline"]


def _resume(ck: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, seed: int,
            steps: int, log: Callable[[str], None] | None = None) -> tuple[int, np.random.Generator]:
    """Load the last checkpoint of a run into model/optimizer/schedule: the step to go on from and
    the batch sampler's random generator as it stood there, so a resumed run draws the same
    batches as one that was never interrupted (same seed, config and ``--threads``: the same
    weights). Checkpoints written before the generator was saved restart it at ``seed + step``."""
    if not ck.exists():
        return 0, np.random.default_rng(seed)
    st = torch.load(ck, weights_only=False)
    model.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
    start = int(st["step"])
    rng = np.random.default_rng(seed + start)
    if "rng" in st:
        rng.bit_generator.state = st["rng"]
    elif log is not None and start < steps:  # a finished run has nothing left to draw
        log(f"{ck.name}: an older checkpoint without the sampler's state: batches from step {start} on differ "
            "from an uninterrupted run's")
    return start, rng

def sampling_probs(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """P(sample) = 0.5 / (#groups in its class) / (#items in its group)."""
    p = np.zeros(len(labels))
    for lab in (0, 1):
        gs = np.unique(groups[labels == lab])
        for g in gs:
            sel = (labels == lab) & (groups == g)
            p[sel] = 0.5 / len(gs) / sel.sum()
    return p / p.sum()


def _augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flips and 90-degree rotations (keep 2x2 grid alignment: tile sizes are even)."""
    out = np.empty_like(x)
    for i in range(len(x)):
        t = x[i]
        if rng.random() < 0.5:
            t = t[:, ::-1]
        out[i] = np.rot90(t, int(rng.integers(4)))
    return out


def _collimate(x: np.ndarray, cells: np.ndarray, family: np.ndarray, rng: np.random.Generator, p: float = 0.25) -> None:
    """Shared (both classes) augmentation: a saturated collimator/air band along one tile edge.

    Real radiographs have exactly flat regions (collimator shadow, direct exposure, burnt-in
    borders); without them in training, flatness itself would read as "too smooth = fake"
    (found on the held-out RG3 extremity CR). Tamper tiles are skipped so the edit stays visible.
    """
    n, h, w = x.shape
    for i in range(n):
        if family[i] == "tamper" or rng.random() >= p:
            continue
        v = float(rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0)]))
        cut = int(rng.uniform(0.1, 0.6) * h)
        side = int(rng.integers(4))
        c = cells.shape[1]
        cc = cut * c // h  # cells fully covered carry no evidence either way
        if side == 0:
            x[i, :cut] = v; cells[i, :cc] = 0
        elif side == 1:
            x[i, h - cut:] = v; cells[i, c - cc:] = 0
        elif side == 2:
            x[i, :, :cut] = v; cells[i, :, :cc] = 0
        else:
            x[i, :, w - cut:] = v; cells[i, :, c - cc:] = 0


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def train_detector(work: Path, cfg: Config, log: Callable[[str], None], tag: str,
                   exclude_family: str | None = None, steps: int | None = None,
                   exclude_sources: frozenset[str] = frozenset(), checkpoint_every: int = 100) -> Path:
    """Train the tile detector; returns the final checkpoint path (resumes from ``tag``-last.pt).
    ``exclude_sources``: leave out the real images of these sources and every fake made from them
    (a hospital the detector never saw; the generators' output is kept)."""
    dc = cfg.detector
    steps = steps or dc["steps"]
    seed = int(dc.get("seed", cfg.seed))  # detector.seed: a second training run on the same data
    dense_weight = float(dc.get("dense_weight", 0.3))  # detector.dense_weight: the CAM cells' loss (below)
    bank = load_tilebank(work, "train")
    keep = np.ones(len(bank["label"]), bool) if exclude_family is None else bank["family"] != exclude_family
    if exclude_sources:
        source = {r["id"]: r["source"] for r in read_images(work)}
        keep &= np.array([source[i] not in exclude_sources for i in bank["id"]])
    idx_all = np.nonzero(keep)[0]
    probs = sampling_probs(bank["label"][idx_all], bank["group"][idx_all])
    tiles = np.asarray(bank["tiles"])  # into RAM
    torch.manual_seed(seed)
    model = NPRDetector(tuple(dc["width"]))
    opt = torch.optim.AdamW(model.parameters(), lr=dc["lr"], weight_decay=dc["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=dc["lr"], total_steps=steps, pct_start=0.1)
    ck = work / f"{tag}-last.pt"
    start, rng = _resume(ck, model, opt, sched, seed, steps, log)
    if start >= steps:
        return ck
    if start:
        log(f"{tag}: resuming at step {start}")
    full_from = int(steps * 0.9)
    t0, run_loss = time.time(), 0.0
    model.train()
    for step in range(start, steps):
        full = step >= full_from
        bs = dc["batch"] // 2 if full else dc["batch"]
        crop = cfg.tiles["tile"] if full else cfg.tiles["tile"] // 2
        pick = idx_all[rng.choice(len(idx_all), size=bs, p=probs)]
        T = cfg.tiles["tile"]
        x = np.empty((bs, crop, crop), np.float32)
        cells = np.empty((bs, crop // 16, crop // 16), np.float32)
        for i, j in enumerate(pick):
            oy = int(rng.integers(0, (T - crop) // 16 + 1)) * 16
            ox = int(rng.integers(0, (T - crop) // 16 + 1)) * 16
            if bank["family"][j] == "tamper" and not full:  # keep the edit inside the crop
                c = bank["cells"][j].astype(np.float32)
                cy, cx = np.unravel_index(np.argmax(c), c.shape)
                oy = int(np.clip(cy - (crop // 32), 0, (T - crop) // 16)) * 16
                ox = int(np.clip(cx - (crop // 32), 0, (T - crop) // 16)) * 16
            x[i] = tiles[j, oy:oy + crop, ox:ox + crop]
            cells[i] = bank["cells"][j, oy // 16:(oy + crop) // 16, ox // 16:(ox + crop) // 16]
        _collimate(x, cells, bank["family"][pick], rng)
        # same geometric aug on pixels and cells: stack cells as upsampled? keep simple: flip/rot both
        k = rng.integers(4, size=bs); fl = rng.random(bs) < 0.5
        for i in range(bs):
            if fl[i]:
                x[i] = x[i][:, ::-1]; cells[i] = cells[i][:, ::-1]
            x[i] = np.rot90(x[i], k[i]); cells[i] = np.rot90(cells[i], k[i])
        y = torch.from_numpy(bank["label"][pick].astype(np.float32))
        logits, cam = model(torch.from_numpy(x)[:, None])
        loss = F.binary_cross_entropy_with_logits(logits, y)
        # dense CAM supervision: every cell of a real tile is real, and a tampered tile is fake
        # only inside its mask (localisation, pointing game)
        # (whole-image fakes are left to the tile loss: forcing EVERY cell of a fake to "fake" taught
        # "any smooth region is fake", which flagged a real low-noise CR extremity in an earlier run)
        target = (torch.from_numpy(np.ascontiguousarray(cells)) > 0.5).float()
        dense = torch.from_numpy((bank["label"][pick] == 0) | (bank["family"][pick] == "tamper"))
        if dense.any():
            loss = loss + dense_weight * F.binary_cross_entropy_with_logits(cam[dense], target[dense])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        run_loss = 0.98 * run_loss + 0.02 * loss.item() if step > start else loss.item()
        if (step + 1) % 50 == 0:
            log(f"{tag}: step {step + 1}/{steps} loss {run_loss:.4f} ({(time.time() - t0) / (step + 1 - start):.2f} s/step)")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step + 1,
                        "rng": rng.bit_generator.state, "width": list(dc["width"]), "exclude": exclude_family,
                        "exclude_sources": sorted(exclude_sources)}, ck)
    _val_report(work, model, log, tag)
    return ck


@torch.no_grad()
def _val_report(work: Path, model: NPRDetector, log: Callable[[str], None], tag: str, max_tiles: int = 3000) -> None:
    bank = load_tilebank(work, "val")
    n = len(bank["label"])
    sel = np.random.default_rng(0).permutation(n)[:max_tiles]
    model.eval()
    s = np.concatenate([model(torch.from_numpy(np.asarray(bank["tiles"][sel[i:i + 64]], np.float32))[:, None])[0].numpy()
                        for i in range(0, len(sel), 64)])
    y, fam = bank["label"][sel], bank["family"][sel]
    msg = [f"all {_auc(y, s):.4f}"]
    for f in np.unique(fam[y == 1]):
        m = (y == 0) | (fam == f)
        msg.append(f"{f} {_auc(y[m], s[m]):.4f}")
    log(f"{tag}: val tile AUC " + ", ".join(msg))
    model.train()


def load_detector(ck: Path) -> NPRDetector:
    st = torch.load(ck, weights_only=False)
    m = NPRDetector(tuple(st["width"]))
    m.load_state_dict(st["model"])
    return m.eval()


def _baseline_arrays(work: Path, cfg: Config, split: str) -> tuple[np.ndarray, list[dict[str, str]]]:
    path = work / f"whole224-{split}.npy"
    rows = [r for r in read_images(work) if r["split"] == split]
    if path.exists():
        return np.load(path), rows
    arr = np.stack([whole_image_input(load_grey(r["path"]), cfg.baseline["size"]).astype(np.float16) for r in rows])
    np.save(path, arr)
    return arr, rows


def train_baseline(work: Path, cfg: Config, log: Callable[[str], None], tag: str = "baseline",
                   exclude_family: str | None = None, steps: int | None = None) -> Path:
    bc = cfg.baseline
    steps = steps or bc["steps"]
    arr, rows = _baseline_arrays(work, cfg, "train")
    labels = np.array([int(r["label"]) for r in rows])
    groups = np.array([group_of(r) for r in rows])
    fams = np.array([r["family"] for r in rows])
    idx_all = np.nonzero(fams != exclude_family)[0] if exclude_family else np.arange(len(rows))
    probs = sampling_probs(labels[idx_all], groups[idx_all])
    torch.manual_seed(cfg.seed)
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=bc["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=bc["lr"], total_steps=steps, pct_start=0.1)
    ck = work / f"{tag}-last.pt"
    start, rng = _resume(ck, model, opt, sched, cfg.seed + 7, steps, log)
    if start >= steps:
        return ck
    t0 = time.time()
    for step in range(start, steps):
        pick = idx_all[rng.choice(len(idx_all), size=bc["batch"], p=probs)]
        x = _augment_batch(arr[pick].astype(np.float32), rng)
        logits = model(torch.from_numpy(np.ascontiguousarray(x))[:, None])
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels[pick].astype(np.float32)))
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if (step + 1) % 50 == 0:
            log(f"{tag}: step {step + 1}/{steps} loss {loss.item():.4f} ({(time.time() - t0) / (step + 1 - start):.2f} s/step)")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step + 1,
                        "rng": rng.bit_generator.state}, ck)
    return ck


def load_baseline(ck: Path) -> SmallCNN:
    m = SmallCNN()
    m.load_state_dict(torch.load(ck, weights_only=False)["model"])
    return m.eval()


def train_lofo(work: Path, cfg: Config, log: Callable[[str], None]) -> None:
    """Leave-one-family-out: shorter runs of both models without family X (tested on X later)."""
    for fam in FAMILIES:
        train_detector(work, cfg, log, tag=f"lofo-detector-{fam}", exclude_family=fam, steps=cfg.lofo["steps"])
    for fam in FAMILIES:
        train_baseline(work, cfg, log, tag=f"lofo-baseline-{fam}", exclude_family=fam, steps=cfg.lofo_baseline_steps)
