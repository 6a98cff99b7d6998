"""What pixel evidence each tampered image still carries: the tamper family's ceiling (issue 3).

``python -m models.train.tamper_evidence --work runs/w3 [--split val --split test] [--out FILE.md]``

The fakes stage is deterministic in each image's id, so every tamper job can be replayed with its
**twin**: the same source image under the same augmentation draws, without the edit
(:func:`models.train.fakes.augmented_tamper`), encoded in the same container. Against the twin
and the tamper mask, three tests measure what evidence the edit left, each told where to look
(an oracle: a blind detector, which must also find the place, can only do worse):

* ``hf``: high-pass energy of (tampered - twin) inside the mask over the twin's own high-pass
  energy there. Near 0 the edit left no high-frequency trace (a smooth added blob): nothing for a
  residual-based detector to see.
* ``level``: how unusual the residual's level inside the mask is among same-shaped regions placed
  at random in the same image (a p-value); the noise-inconsistency cue of local-noise forensics
  (Mahdian & Saic, Image Vis. Comput. 27(10), 2009; Lyu, Pan & Zhang, IJCV 110, 2014).
* ``dup``: the best normalised correlation of the mask's residual with the residual anywhere else
  in the image (FFT template matching): a copied region, or copied noise (the "touch-up"), repeats
  somewhere else. This evidence is non-local, far outside the receptive field of a tile CNN; blind
  copy-move search is its own problem (block matching, Fridrich, Soukal & Lukas, DFRWS 2003; dense
  PatchMatch fields, Cozzolino, Poggi & Verdoliva, IEEE TIFS 10(11), 2015).

The same tests on the twin give their false-alarm rate. With ``--model DIR`` each row also gets what
a shipped detector makes of the image (its image logit, and whether its CAM peak falls inside the
mask: the pointing game), so the tables show which evidence the model uses. Pure functions; the
replay and the command line are at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from scipy import fft as sfft

from edge_agent.forensics.residual import laplacian

from .config import load_config
from .fakes import augmented_tamper, job_rng, plan_derived, plan_rng, split_reals
from .imaging import container_of, encode_like, load_grey_bytes
from .splits import read_index

__all__ = ["residual", "hf_ratio", "level_p", "dup_corr", "edit_evidence", "replay", "model_view", "summarise", "main"]

LEVEL_P = 0.01   # "level" evidence: the mask's residual level is rarer than 1 in 100 random placements
DUP_CORR = 0.5   # "dup" evidence: the mask's residual repeats elsewhere with correlation above this
HF_NONE = 0.1    # "no trace": the edit's high-pass energy is under a tenth of the image's own there
MIN_SHIFT = 8    # copies closer than this (pixels, both axes) are the residual's own neighbourhood


def residual(x: np.ndarray) -> np.ndarray:
    """``x`` minus the mean of its 4 neighbours, edges replicated (the fingerprint check's high-pass,
    :func:`edge_agent.forensics.residual.laplacian`, before its weighting), in float64."""
    return laplacian(x).astype(np.float64)


def hf_ratio(rt: np.ndarray, rc: np.ndarray, mask: np.ndarray) -> float:
    """High-pass energy of the edit inside the mask over the twin's own high-pass energy there, from
    the residuals of the tampered image ``rt`` and of its twin ``rc``."""
    m = mask.astype(bool)
    return float(((rt - rc)[m] ** 2).mean() / max(float((rc[m] ** 2).mean()), 1e-20))


def level_p(r: np.ndarray, mask: np.ndarray, rng: np.random.Generator, n: int = 300) -> float:
    """Fraction of ``n`` random placements of the mask's shape whose log residual level deviates
    from the image's median placement at least as much as the mask's own (small = unusual)."""
    m = mask.astype(bool)
    ys, xs = np.nonzero(m)
    y0, x0 = ys.min(), xs.min()
    shape = m[y0:ys.max() + 1, x0:xs.max() + 1]
    hh, ww = shape.shape
    h, w = r.shape
    e = r * r

    def level(top: int, left: int) -> float:
        return 0.5 * float(np.log(e[top:top + hh, left:left + ww][shape].mean() + 1e-20))

    vals = np.array([level(int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - ww + 1))) for _ in range(n)])
    med = float(np.median(vals))
    own = abs(level(int(y0), int(x0)) - med)
    return float((np.abs(vals - med) >= own).mean())


def dup_corr(r: np.ndarray, mask: np.ndarray) -> float:
    """Best normalised correlation of the residual inside the mask with the residual at any other
    shift (circular, as the tamper recipes copy), shifts under ``MIN_SHIFT`` in both axes excluded,
    and shifts where the target holds under a quarter of the patch's energy (flat or clipped areas,
    where the ratio is ill-conditioned)."""
    mb = mask.astype(np.float64)
    patch = r * mb
    h, w = r.shape
    energy = float((patch * patch).sum())
    if energy <= 0:
        return 0.0
    conj_patch, conj_mask = np.conj(sfft.rfft2(patch)), np.conj(sfft.rfft2(mb))
    num = sfft.irfft2(sfft.rfft2(r) * conj_patch, s=(h, w))          # sum_x patch(x) r(x + d)
    target = sfft.irfft2(sfft.rfft2(r * r) * conj_mask, s=(h, w))    # sum_x mask(x) r(x + d)^2
    ok = target > 0.25 * energy
    k = MIN_SHIFT
    for sy in (slice(0, k), slice(h - k + 1, h)):
        for sx in (slice(0, k), slice(w - k + 1, w)):
            ok[sy, sx] = False
    if not ok.any():
        return 0.0
    return float((num[ok] / np.sqrt(energy * target[ok])).max())


def edit_evidence(tampered: np.ndarray, twin: np.ndarray, mask: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The three tests on the tampered image and, as their false-alarm reference, on its twin."""
    rt, rc = residual(tampered), residual(twin)
    return {"hf": hf_ratio(rt, rc, mask),
            "level_p": level_p(rt, mask, np.random.default_rng(seed)),
            "level_p_twin": level_p(rc, mask, np.random.default_rng(seed)),
            "dup": dup_corr(rt, mask), "dup_twin": dup_corr(rc, mask)}


def replay(work: Path, cfg: Any, split: str) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]]:
    """Every tamper job of ``split`` as the fakes stage made it: (row, tampered, twin, mask), both
    images encoded in the source's container and decoded by the agent's decoder."""
    reals = split_reals(read_index(work / "index.csv"), split)
    for job in plan_derived(reals, split, cfg, plan_rng(cfg, split), ("tamper",)):
        spec = container_of(job["src"]["path"])
        out, mask, kind, ops, twin = augmented_tamper(job, cfg, job_rng(cfg, job["id"]), spec.kind != "dicom", twin=True)
        assert twin is not None
        row = {"id": job["id"], "split": split, "source": job["src"]["source"], "kind": kind, "ops": "+".join(ops)}
        yield row, load_grey_bytes(encode_like(out, spec)[0]), load_grey_bytes(encode_like(twin, spec)[0]), mask


def model_view(model_dir: Path) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    """What the detector in ``model_dir`` (its manifest's FP32 ONNX file, tiling and aggregate) makes
    of an image: ``{"logit": image logit, "pointing": 1.0 if its CAM peak is inside the mask}``
    (the command also scores the twin: "above its twin" is the share of edits that raise the logit).
    Imports the training-side scoring (PyTorch) only when asked."""
    from .scoring import aggregate, cam_peak_hit, image_tiles, shipped_runner, tile_scores
    runner, man = shipped_runner(model_dir)
    t = man["tiling"]

    def view(img: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        tiles, origins = image_tiles(img, t["tile"], t["max_tiles"])
        logits, cams = tile_scores(np.asarray(tiles, np.float32), runner)
        return {"logit": aggregate(logits, t["aggregate"], int(t.get("topk", 1))),
                "pointing": float(cam_peak_hit(cams, origins, t["tile"], mask, 0))}
    return view


def _flags(r: dict[str, Any], twin: bool = False) -> tuple[bool, bool]:
    sfx = "_twin" if twin else ""
    return r["level_p" + sfx] < LEVEL_P, r["dup" + sfx] > DUP_CORR


def _evidence(r: dict[str, Any]) -> str:
    lv, du = _flags(r)
    return "copied (dup)" if du else "local level" if lv else "no trace" if r["hf"] < HF_NONE else "neither"


def summarise(rows: list[dict[str, Any]], by: str) -> list[str]:
    """Markdown table of the evidence per value of ``by`` (``kind``, ``source``, ``split``, or
    ``evidence``: the strongest evidence each image carries, copied before level)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[_evidence(r) if by == "evidence" else str(r[by])].append(r)
    groups["all"] = rows
    model = all("pointing" in r for r in rows)
    out = [f"| {by} | n | median hf | no trace (hf < {HF_NONE}) | level p < {LEVEL_P} | dup > {DUP_CORR} | either | either, on the twin |"
           + (" model: median logit | model: above its twin | model: pointing |" if model else ""),
           "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if model else "")]
    for key in sorted(groups, key=lambda k: (k == "all", k)):
        g = groups[key]
        pct = lambda xs: f"{100 * float(np.mean(xs)):.0f} %"  # noqa: E731
        lv = [_flags(r)[0] for r in g]
        du = [_flags(r)[1] for r in g]
        out.append(f"| {key} | {len(g)} | {np.median([r['hf'] for r in g]):.2f} | {pct([r['hf'] < HF_NONE for r in g])} "
                   f"| {pct(lv)} | {pct(du)} | {pct([a or b for a, b in zip(lv, du)])} "
                   f"| {pct([any(_flags(r, twin=True)) for r in g])} |"
                   + (f" {np.median([r['logit'] for r in g]):.2f} | {pct([r['logit'] > r['logit_twin'] for r in g])} "
                      f"| {pct([r['pointing'] for r in g])} |" if model else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.train.tamper_evidence", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="work folder of the fakes stage (index.csv)")
    ap.add_argument("--config", type=Path, default=Path(__file__).with_name("config.yaml"))
    ap.add_argument("--split", action="append", choices=("train", "val", "test"), help="default: val and test")
    ap.add_argument("--model", type=Path, help="also score each image with this shipped model (models/<name>-<version>)")
    ap.add_argument("--out", type=Path, help="write the tables here (markdown) and the rows beside it (.json)")
    a = ap.parse_args(argv)
    if not (a.work / "index.csv").is_file():
        print(f"error: {a.work / 'index.csv'} not found; run `python -m models.train --stage index` first", file=sys.stderr)
        return 2
    cfg = load_config(a.config)
    view = model_view(a.model) if a.model else None
    rows: list[dict[str, Any]] = []
    for split in a.split or ["val", "test"]:
        for i, (row, tampered, twin, mask) in enumerate(replay(a.work, cfg, split)):
            seen = {**view(tampered, mask), "logit_twin": view(twin, mask)["logit"]} if view else {}
            rows.append({**row, **edit_evidence(tampered, twin, mask, seed=i), **seen})
    text = [f"Tamper evidence, work folder `{a.work}`, config sha256 {cfg.sha256[:12]}, {len(rows)} images"
            + (f", model `{a.model}`" if a.model else ""), ""]
    for by in ("kind", "source", "split", "evidence"):
        text += summarise(rows, by) + [""]
    print("\n".join(text))
    if a.out:
        a.out.write_text("\n".join(text))
        a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
