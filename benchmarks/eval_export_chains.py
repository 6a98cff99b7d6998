"""False alarms of the shipped model on real radiographs passed through other hospitals' export chains.

    python -m benchmarks.eval_export_chains                                  # RG3 only (pydicom-data), 10 s
    python -m benchmarks.eval_export_chains --index runs/w9/index.csv        # + the test split's reals, ~4 min
    python -m benchmarks.eval_export_chains --index runs/w9/index.csv --calibrate

The external evaluation (issue 3) scans real radiographs from hospitals the project never saw. Before
an image leaves a hospital its console and archive have processed it: edge enhancement (unsharp
masking, multi-scale contrast), noise reduction, tone curves, histogram equalisation, down-scaling
for a dataset, 8-bit export. This takes the real images the detector never trained on (the index's
``test`` split, one row per source; the pydicom-data RG3 radiograph, held out of every split),
applies each chain, exports the result as an 8-bit PNG (or JPEG q95) and decodes it with the
agent's decoder, and counts how many the model flags at its manifest thresholds.

``--calibrate``: the site calibration (docs/site-calibration.md) a hospital whose console applies
that chain would learn: the model's logits on ``--site-images`` (default 20) of the same source's
``train``/``val`` images under the same chain (the model trained on those images, never on the
chain's output), then the test images' flagged share at the calibrated threshold.

Every chain is seeded and deterministic; only the model runs.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.decode import decode_bytes, decode_path  # noqa: E402
from edge_agent.detect import open_detector  # noqa: E402
from edge_agent.site_calibration import MIN_IMAGES, SiteCalibration  # noqa: E402


def _usm(x: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Unsharp masking: the edge enhancement of nearly every radiography console."""
    return x + amount * (x - ndimage.gaussian_filter(x, sigma))


def _equalise(x: np.ndarray) -> np.ndarray:
    q = np.round(np.clip(x, 0, 1) * 4095).astype(np.int64)
    cdf = np.bincount(q.ravel(), minlength=4096).cumsum()
    return (cdf[q] / cdf[-1]).astype(np.float32)


def _resize_long(x: np.ndarray, long: int) -> np.ndarray:
    h, w = x.shape
    if max(h, w) <= long:
        return x
    s = long / max(h, w)
    im = Image.fromarray(x.astype(np.float32), mode="F").resize((round(w * s), round(h * s)), Image.LANCZOS)
    return np.asarray(im)


def _edge_preserving(x: np.ndarray, sigma: float) -> np.ndarray:
    """Noise reduction that keeps edges: the blur blended back towards the original where the
    local gradient is strong (a cheap stand-in for a console's adaptive filter)."""
    blur = ndimage.gaussian_filter(x, sigma)
    edge = np.abs(ndimage.sobel(blur, 0)) + np.abs(ndimage.sobel(blur, 1))
    a = np.clip(edge / (np.percentile(edge, 95) + 1e-6), 0, 1)
    return blur * (1 - a) + x * a


# name -> (what a console or archive does, the pixels' function); every chain ends in an 8-bit PNG
# (jpeg95: 8-bit JPEG at quality 95)
CHAINS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "as-is": ("the image exported to 8 bits, nothing else", lambda x: x),
    "jpeg95": ("8-bit JPEG at quality 95", lambda x: x),
    "usm-fine": ("unsharp mask, sigma 3 px, amount 1", lambda x: _usm(x, 3, 1.0)),
    "usm-coarse": ("unsharp mask, sigma 10 px, amount 1", lambda x: _usm(x, 10, 1.0)),
    "usm-wide": ("unsharp mask, sigma 30 px, amount 0.7 (dynamic-range compression)", lambda x: _usm(x, 30, 0.7)),
    "multiscale": ("two unsharp masks, 2 px x 0.5 then 16 px x 0.8", lambda x: _usm(_usm(x, 2, 0.5), 16, 0.8)),
    "gamma-0.7": ("tone curve x^0.7", lambda x: np.clip(x, 0, 1) ** 0.7),
    "equalised": ("global histogram equalisation", _equalise),
    "median-3": ("3x3 median filter (impulse-noise removal)", lambda x: ndimage.median_filter(x, 3)),
    "blur-0.5": ("noise reduction: Gaussian blur sigma 0.5 px", lambda x: ndimage.gaussian_filter(x, 0.5)),
    "blur-0.8": ("noise reduction: Gaussian blur sigma 0.8 px", lambda x: ndimage.gaussian_filter(x, 0.8)),
    "edge-keeping-1.0": ("noise reduction keeping edges, sigma 1 px", lambda x: _edge_preserving(x, 1.0)),
    "1024px": ("down-scaled to 1024 px on the long side (Lanczos), as public datasets ship",
               lambda x: _resize_long(x, 1024)),
    "1024px+usm": ("down-scaled to 1024 px, then unsharp mask 4 px x 0.8",
                   lambda x: _usm(_resize_long(x, 1024), 4, 0.8)),
}


def _export(x: np.ndarray, chain: str) -> np.ndarray:
    """The chain's output as the receiving side decodes it: 8-bit PNG or JPEG q95, agent's decoder."""
    a = np.clip(np.round(np.clip(x, 0, 1) * 255), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG" if chain == "jpeg95" else "PNG", quality=95)
    return decode_bytes(buf.getvalue()).frames[0]


def _rows(index: Path | None, per: int, splits: tuple[str, ...]) -> dict[str, list[Path]]:
    """Real images per source: the index's rows of ``splits`` (the first ``per`` of each source,
    in index order), and pydicom-data's RG3 (uncompressed) under ``dicom-rg3`` for the test split."""
    out: dict[str, list[Path]] = collections.defaultdict(list)
    if "test" in splits:
        import warnings

        import pydicom.data

        with warnings.catch_warnings():  # pydicom tries to download its other test files, offline here
            warnings.simplefilter("ignore")
            out["dicom-rg3"] = [Path(p) for p in pydicom.data.get_testdata_files("RG3_UNCR.dcm")]
    if index is None:
        return out
    for r in csv.DictReader(index.open()):
        if r["split"] in splits and r["label"] == "real" and not r["source"].startswith("dicom"):
            if len(out[r["source"]]) < per:
                p = Path(r["path"])
                out[r["source"]].append(p if p.is_absolute() else index.parent / p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, help="a work folder's index.csv (models/train --stage index)")
    ap.add_argument("--per", type=int, default=30, help="test images per source (default 30)")
    ap.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    ap.add_argument("--calibrate", action="store_true", help="also the site-calibrated rate per chain and source")
    ap.add_argument("--site-images", type=int, default=20)
    ap.add_argument("--only", nargs="*", choices=sorted(CHAINS), help="these chains only")
    args = ap.parse_args()
    if args.calibrate and args.site_images < MIN_IMAGES:
        ap.error(f"--site-images must be at least {MIN_IMAGES}, the fewest a site calibration is learned from")
    det = open_detector(args.model)
    th = det.manifest.thresholds
    sus, syn = (math.log(p / (1 - p)) for p in (th.suspicious, th.synthetic))
    chains = {k: v for k, v in CHAINS.items() if not args.only or k in args.only}
    test = {s: v for s, v in _rows(args.index, args.per, ("test",)).items() if v}
    if not test:
        ap.error("no real images to test: give --index, or install pydicom-data for RG3")
    site = _rows(args.index, args.site_images, ("train", "val")) if args.calibrate else {}
    t0 = time.time()
    cache: dict[Path, np.ndarray] = {}

    def logits(paths: list[Path], chain: str) -> list[float]:
        fn = chains[chain][1]
        out = []
        for p in paths:
            if p not in cache:
                cache[p] = decode_path(p).frames[0]
            out.append(float(det.score(_export(fn(cache[p].astype(np.float32)), chain)).logit))
        return out

    print(f"model {det.manifest.name} {det.manifest.version}; suspicious at logit {sus:.2f}, synthetic at {syn:.2f}; "
          f"images per source: " + ", ".join(f"{s} {len(v)}" for s, v in sorted(test.items())), flush=True)
    sources = sorted(test)
    head = "| chain | what it does | " + " | ".join(sources) + " |"
    lines = [head, "|" + "---|" * (len(sources) + 2)]
    for chain, (what, _) in chains.items():
        cells = []
        for s in sources:
            lg = logits(test[s], chain)
            flagged = sum(v >= sus for v in lg)
            cell = f"{flagged}/{len(lg)} ({statistics.median(lg):+.1f})"
            if args.calibrate and len(site.get(s, ())) >= args.site_images:
                cal = SiteCalibration.learn(logits(site[s], chain), det.manifest)
                cell += f" -> {sum(v - cal.offset >= sus for v in lg)}/{len(lg)}"
            cells.append(cell)
        lines.append(f"| {chain} | {what} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    print("\nflagged (suspicious or synthetic) / images (median logit)"
          + (f" -> flagged after a site calibration on {args.site_images} train/val images of that source "
             "under the same chain" if args.calibrate else "") + f"; {time.time() - t0:.0f} s\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
