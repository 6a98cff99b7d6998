"""The shipped model's image-logit percentiles on the real validation images: the scale a site
calibrates against (``thresholds.reference_logit_quantiles``, edge_agent/site_calibration.py).

    python -m models.train.reference_scale --work runs/w3 --model models/xray-npr-1.5.0 [--write]

Models shipped from this field's introduction on get it from `--stage evaluate`; this command adds
it to a model shipped before (1.5.0). It scores the same real validation images, through the same
chain (decode -> grid tiles -> the shipped FP32 ONNX model -> the manifest's aggregate), and first
checks that the threshold derived from them is the one in the manifest, bit for bit: proof that
the work folder holds the images the threshold was chosen on. ``--write`` then adds the figure to
``manifest.json`` (the model files and their hashes do not change).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edge_agent.site_calibration import QUANTILES

from .evaluate import thresholds_from_reals
from .fakes import read_images
from .imaging import load_grey
from .scoring import aggregate, image_tiles, shipped_runner, tile_scores


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m models.train.reference_scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    path = args.model / "manifest.json"
    run, man = shipped_runner(args.model)
    t = man["tiling"]
    reals = [r for r in read_images(args.work) if r["split"] == "val" and r["label"] == "0"]
    def logit(path: str, half: bool) -> float:
        tiles = image_tiles(load_grey(path), t["tile"], t["max_tiles"])[0]
        if half:  # the evaluate stage cached tiles as float16 up to 1.5.0 (evaluate._TileCache)
            tiles = tiles.astype(np.float16).astype(np.float32)
        return aggregate(tile_scores(tiles, run)[0], t["aggregate"], t["topk"])

    half = np.array([logit(r["path"], True) for r in reals])
    logits = np.array([logit(r["path"], False) for r in reals])
    thr = thresholds_from_reals(half)
    same = thr["suspicious_logit"] == man["thresholds"]["suspicious_logit"]
    med = float(np.median(logits))
    print(f"{len(reals)} real validation images; 1 % FPR threshold as the evaluate stage scored them {thr['suspicious_logit']!r} "
          f"({'equal to' if same else 'DIFFERENT from'} the manifest's {man['thresholds']['suspicious_logit']!r}); "
          f"median logit {float(np.median(half)):.6f} so, {med:.6f} on float32 tiles as the agent scores them "
          f"(max |difference| per image {float(np.abs(half - logits).max()):.4f})")
    if not same:
        raise SystemExit("the work folder does not hold the images this model's threshold was chosen on; nothing written")
    ref = {str(q): float(np.quantile(logits, q)) for q in QUANTILES}
    print(f"percentiles (float32 tiles): {ref}")
    if args.write:
        man["thresholds"].pop("reference_median_logit", None)
        man["thresholds"]["reference_logit_quantiles"] = ref
        path.write_text(json.dumps(man, indent=2) + "\n")
        print(f"wrote thresholds.reference_logit_quantiles to {path}")


if __name__ == "__main__":
    main()
