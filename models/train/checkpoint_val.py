"""Detector checkpoints on the validation split, without exporting or shipping them.

    python -m models.train.checkpoint_val --work runs/w3 runs/w3/detector-1.7.0-last.pt runs/w3/detector-1.8.0-last.pt
    python -m models.train.checkpoint_val --work runs/w3 --jpeg 75 models/xray-npr-1.7.0 runs/w9/detector-1.9.0-last.pt

For a candidate recipe, before spending the export / evaluate / LOFO stages on it: each checkpoint
(PyTorch, FP32) scores every ``val`` image of the work folder through the evaluation's chain
(decode -> native-grid tiles -> tile logits -> image aggregate, ``--aggregate``, default the shipped
``mean``, or a shipped model's own). Printed per checkpoint: ROC-AUC, TPR at the 1 % threshold set on the validation REAL
images (just above their 99th percentile, as the manifest's thresholds are), AUC / TPR per family,
and the pointing game on the validation tamper images (``scoring.cam_peak_hit``, strict). The
validation split only: a candidate is chosen there, the test split stays for the shipped report.

A shipped model directory (``models/<name>-<version>``, its manifest's FP32 ONNX file) can stand
beside the checkpoints. ``--jpeg Q`` (repeatable) also scores every validation image re-encoded as
an 8-bit JPEG of quality Q, both classes alike, and prints the share of validation reals flagged at
the CLEAN images' 1 % threshold, the TPR there, and the AUC: what compression does to a model whose
threshold was set on uncompressed images.

``--split test`` prints the same figures on the test split, still at the thresholds of the
validation reals: for a candidate's record once it has been chosen, never for choosing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .augment import jpeg_roundtrip
from .evaluate import _auc
from .fakes import read_images
from .fit import load_detector
from .imaging import load_grey
from .scoring import Runner, aggregate, cam_peak_hit, image_tiles, shipped_runner, tile_scores, torch_runner


def _runner(path: Path, aggregate: str | None, topk: int | None) -> tuple[Runner, tuple[int, int], tuple[str, int]]:
    """A PyTorch checkpoint (256 px tiles, at most 64, as trained; aggregate ``mean`` unless given),
    or a shipped model directory (its manifest's FP32 ONNX file, tiling and aggregate unless given);
    returns the runner, its (tile, max_tiles) and its (aggregate, topk)."""
    if path.is_dir():
        run, man = shipped_runner(path)
        t = man["tiling"]
        return (run, (int(t["tile"]), int(t["max_tiles"])),
                (aggregate or str(t["aggregate"]), topk or int(t.get("topk", 1))))
    return torch_runner(load_detector(path)), (256, 64), (aggregate or "mean", topk or 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--aggregate", help="image aggregate of the tile logits (default: a shipped model's own, "
                    "else mean)")
    ap.add_argument("--topk", type=int, help="k of a top-k aggregate (default: a shipped model's own, else 1)")
    ap.add_argument("--jpeg", type=int, action="append", default=[], metavar="Q",
                    help="also score the images re-encoded as JPEG of this quality (repeatable)")
    ap.add_argument("--split", default="val", choices=("val", "test"),
                    help="split the figures are printed for (thresholds always from the validation reals)")
    ap.add_argument("checkpoints", type=Path, nargs="+", help="detector checkpoints (.pt) or shipped model directories")
    args = ap.parse_args()
    runs = {ck: _runner(ck, args.aggregate, args.topk) for ck in args.checkpoints}
    rows = [r for r in read_images(args.work) if r["split"] in ("val", args.split)]
    scores = {ck: np.empty(len(rows)) for ck in runs}
    squeezed = {(ck, q): np.empty(len(rows)) for ck in runs for q in args.jpeg}
    hits = {ck: 0 for ck in runs}
    for i, r in enumerate(rows):
        img = load_grey(r["path"])
        grids = {t: image_tiles(img, *t) for t in {t for _, t, _ in runs.values()}}
        for ck, (run, tiling, agg) in runs.items():
            tiles, origins = grids[tiling]
            logits, cam = tile_scores(np.asarray(tiles, np.float32), run)
            scores[ck][i] = aggregate(logits, *agg)
            if r["family"] == "tamper" and r["mask"] and r["split"] == args.split:
                hits[ck] += cam_peak_hit(cam, origins, tiling[0], r["mask"], 0)
        for q in args.jpeg if r["split"] == args.split else ():
            squeezed_img = jpeg_roundtrip(img, q)
            for ck, (run, tiling, agg) in runs.items():
                jt = np.asarray(image_tiles(squeezed_img, *tiling)[0], np.float32)
                squeezed[ck, q][i] = aggregate(tile_scores(jt, run)[0], *agg)
    y_all = np.array([int(r["label"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    rep = split == args.split
    y, fam = y_all[rep], np.array([r["family"] for r in rows])[rep]
    n_tamper = int(sum(1 for r in rows if r["family"] == "tamper" and r["mask"] and r["split"] == args.split))
    for ck, s in scores.items():
        thr = np.nextafter(np.quantile(s[(split == "val") & (y_all == 0)], 0.99), np.inf)
        s = s[rep]
        parts = [f"AUC {_auc(y, s):.4f}", f"TPR@1% {100 * np.mean(s[y == 1] > thr):.1f} %",
                 f"real FPR {100 * np.mean(s[y == 0] > thr):.1f} %"]
        for f in sorted(set(fam[y == 1])):
            m = (y == 0) | (fam == f)
            parts.append(f"{f} {_auc(y[m], s[m]):.3f} / {100 * np.mean(s[fam == f] > thr):.0f} %")
        parts.append(f"pointing {hits[ck]}/{n_tamper}")
        for q in args.jpeg:
            j = squeezed[ck, q][rep]
            parts.append(f"JPEG q{q}: real flagged {100 * np.mean(j[y == 0] > thr):.1f} %, "
                         f"TPR {100 * np.mean(j[y == 1] > thr):.1f} %, AUC {_auc(y, j):.4f}")
        print(f"{ck.name}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
