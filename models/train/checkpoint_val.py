"""Detector checkpoints on the validation split, without exporting or shipping them.

    python -m models.train.checkpoint_val --work runs/w3 runs/w3/detector-1.7.0-last.pt runs/w3/detector-1.8.0-last.pt

For a candidate recipe, before spending the export / evaluate / LOFO stages on it: each checkpoint
(PyTorch, FP32) scores every ``val`` image of the work folder through the evaluation's chain
(decode -> native-grid tiles -> tile logits -> image aggregate, ``--aggregate``, default the shipped
``mean``). Printed per checkpoint: ROC-AUC, TPR at the 1 % threshold set on the validation REAL
images (just above their 99th percentile, as the manifest's thresholds are), AUC / TPR per family,
and the pointing game on the validation tamper images (``scoring.cam_peak_hit``, strict). The
validation split only: a candidate is chosen there, the test split stays for the shipped report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .evaluate import _auc
from .fakes import read_images
from .fit import load_detector
from .imaging import load_grey
from .scoring import aggregate, cam_peak_hit, image_tiles, tile_scores, torch_runner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--aggregate", default="mean", help="image aggregate of the tile logits (default: mean)")
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    args = ap.parse_args()
    runs = {ck: torch_runner(load_detector(ck)) for ck in args.checkpoints}
    rows = [r for r in read_images(args.work) if r["split"] == "val"]
    scores = {ck: np.empty(len(rows)) for ck in runs}
    hits = {ck: 0 for ck in runs}
    for i, r in enumerate(rows):
        tiles, origins = image_tiles(load_grey(r["path"]), 256, 64)
        for ck, run in runs.items():
            logits, cam = tile_scores(np.asarray(tiles, np.float32), run)
            scores[ck][i] = aggregate(logits, args.aggregate, args.topk)
            if r["family"] == "tamper" and r["mask"]:
                hits[ck] += cam_peak_hit(cam, origins, 256, r["mask"], 0)
    y = np.array([int(r["label"]) for r in rows])
    fam = np.array([r["family"] for r in rows])
    n_tamper = int(sum(1 for r in rows if r["family"] == "tamper" and r["mask"]))
    for ck, s in scores.items():
        thr = np.nextafter(np.quantile(s[y == 0], 0.99), np.inf)
        parts = [f"AUC {_auc(y, s):.4f}", f"TPR@1% {100 * np.mean(s[y == 1] > thr):.1f} %",
                 f"real FPR {100 * np.mean(s[y == 0] > thr):.1f} %"]
        for f in sorted(set(fam[y == 1])):
            m = (y == 0) | (fam == f)
            parts.append(f"{f} {_auc(y[m], s[m]):.3f} / {100 * np.mean(s[fam == f] > thr):.0f} %")
        parts.append(f"pointing {hits[ck]}/{n_tamper}")
        print(f"{ck.name}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
