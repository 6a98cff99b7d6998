"""Evaluate the fingerprint placement search (edge_agent.forensics.placement) on the physics simulator.

    python -m benchmarks.eval_placement              # ~4 min on 2 cores
    python -m benchmarks.eval_placement --per 4      # fewer images per case, for a quick look
    python -m benchmarks.eval_placement --only binned-calibration   # what BINNED_MARGIN was chosen from

Images that left the detector cropped, rotated or mirrored: before the search, a rotated or
mirrored image of a square detector read "fingerprint absent" (a false alarm) and any crop was not
judged. For each enrolled panel (12 enrolment images; panels 6xx, used by no other evaluation or
calibration) it prints how often the layer finds its own images at each of the 8 orientations and
at random crops, whether images of other panels of the same model and generator-like images are
ever placed (they must not be), whether a splice in a cropped and turned image is still pointed
at (in the image's own coordinates), and what the search costs. The same cases binned 2 x 2 (each
output pixel the mean of a 2 x 2 block, as a console that bins after correction delivers them; crops
at any row and column, binned, then turned): found by the search on the fingerprint binned alike,
at every phase of the bins. Seeded; the binned cases draw from their own generator.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.forensics import FingerprintCheck, enroll  # noqa: E402
from edge_agent.forensics.placement import ORIENTATIONS, PlacementSearch  # noqa: E402
from edge_agent.forensics.residual import block_mean  # noqa: E402
from edge_agent.forensics.simulator import Panel, PanelSpec, generated_like, jpeg_roundtrip, splice  # noqa: E402

PANELS = {(512, 512): (601, 602, 603), (512, 640): (611, 612, 613)}
FOREIGN = {(512, 512): (604, 605, 606), (512, 640): (614, 615, 616)}
GENERATED = ("uniform_grain", "too_smooth", "upsampled", "physics_noise")


def _crop(rng: np.random.Generator, img: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """A random crop of 50-95 % of each side (containing ``keep``'s True pixels, if given)."""
    h, w = img.shape
    ch, cw = int(h * rng.uniform(0.5, 0.95)), int(w * rng.uniform(0.5, 0.95))
    if keep is None:
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    else:
        ys, xs = np.nonzero(keep)
        ch, cw = max(ch, ys.max() - ys.min() + 1), max(cw, xs.max() - xs.min() + 1)
        y = int(rng.integers(max(0, ys.max() + 1 - ch), min(ys.min(), h - ch) + 1))
        x = int(rng.integers(max(0, xs.max() + 1 - cw), min(xs.min(), w - cw) + 1))
    return img[y : y + ch, x : x + cw], (y, x)


def _transformed(rng: np.random.Generator, img: np.ndarray, i: int, mask: np.ndarray | None = None
                 ) -> tuple[str, np.ndarray, np.ndarray | None]:
    """Case ``i``: the first 8 are the whole frame at each orientation, the rest random crops at a
    random orientation. Returns (label, image, mask in the image's coordinates)."""
    if i < len(ORIENTATIONS):
        o = ORIENTATIONS[i]
        return "whole", np.ascontiguousarray(o.to_image(img)), None if mask is None else o.to_image(mask)
    o = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    crop, (y, x) = _crop(rng, img, mask)
    m = None if mask is None else mask[y : y + crop.shape[0], x : x + crop.shape[1]]
    return "crop", np.ascontiguousarray(o.to_image(crop)), None if m is None else np.ascontiguousarray(o.to_image(m))


def _transformed_binned(rng: np.random.Generator, img: np.ndarray, i: int) -> tuple[str, np.ndarray]:
    """Case ``i`` as a console that bins delivers it: the whole frame binned 2 x 2 at each of the 8
    orientations, then crops (of 50-95 % of each side, at any row and column, so the bins need not
    start on an even one) binned and turned at random."""
    if i < len(ORIENTATIONS):
        return "whole", np.ascontiguousarray(ORIENTATIONS[i].to_image(block_mean(img, 2)))
    o = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    crop, _ = _crop(rng, img)
    return "crop", np.ascontiguousarray(o.to_image(block_mean(crop, 2)))


def _ratio(search: PlacementSearch, img: np.ndarray) -> float:
    """The search's best PCE over its threshold (placed at >= 1); NaN when the image does not fit."""
    best = search.search(img)
    return float("nan") if best is None else best.pce / best.threshold


def _placed(finding) -> bool:
    return "fingerprint.placed" in finding.flagged_codes


def run(per: int) -> None:
    rows: dict[str, list] = {}
    t0 = time.time()
    for shape, seeds in PANELS.items():
        foreign = [Panel(PanelSpec(s, shape=shape)) for s in FOREIGN[shape]]
        for seed in seeds:
            panel = Panel(PanelSpec(seed, shape=shape))
            rng = np.random.default_rng(seed)
            check = FingerprintCheck(enroll(panel.acquire(rng) for _ in range(12)).quantised(8))
            search = PlacementSearch(check.fingerprint.pattern)
            search_2 = PlacementSearch(check.fingerprint.pattern, binning=2)
            rng_b = np.random.default_rng((seed, 2))  # the binned cases' own draws: the others' stay as they were

            def margin(img: np.ndarray, s: PlacementSearch = search) -> float:
                return _ratio(s, img)
            n = len(ORIENTATIONS) + per
            for i in range(n):
                kind, img, _ = _transformed(rng, panel.acquire(rng), i)
                f = check.check(img)
                rows.setdefault(f"authentic {kind}", []).append((_placed(f) or (i == 0 and f.score < 0.5), f.score, margin(img)))
                if kind == "crop":
                    q_img = np.ascontiguousarray(jpeg_roundtrip(img, 90))
                    q = check.check(q_img)
                    rows.setdefault("authentic crop, JPEG q90", []).append((_placed(q), q.score, margin(q_img)))
                kind, img, _ = _transformed(rng, foreign[i % len(foreign)].acquire(rng), i)
                f = check.check(img)
                rows.setdefault(f"other panel {kind}", []).append((_placed(f), f.score, margin(img)))
                kind, img, _ = _transformed(rng, generated_like(rng, shape, GENERATED[i % len(GENERATED)]), i)
                f = check.check(img)
                rows.setdefault(f"generated {kind}", []).append((_placed(f), f.score, margin(img)))
                spliced, mask = splice(panel.acquire(rng), foreign[i % len(foreign)].acquire(rng), rng)
                kind, img, m = _transformed(rng, spliced, i, mask)
                f = check.check(img)
                hit = None
                for r in f.reasons:
                    if r.code == "fingerprint.local_mismatch":
                        words = r.message.split()
                        y, x = int(words[words.index("row") + 1].rstrip(",")), int(words[words.index("column") + 1])
                        hit = bool(m[min(y, m.shape[0] - 1), min(x, m.shape[1] - 1)])
                rows.setdefault(f"splice {kind}", []).append((_placed(f), f.score, margin(img), hit))
            for i in range(n):
                kind, img = _transformed_binned(rng_b, panel.acquire(rng_b), i)
                f = check.check(img)
                rows.setdefault(f"binned 2x2: authentic {kind}", []).append((_placed(f), f.score, margin(img, search_2)))
                q_img = np.ascontiguousarray(jpeg_roundtrip(img, 90))
                q = check.check(q_img)
                rows.setdefault(f"binned 2x2: authentic {kind}, JPEG q90", []).append((_placed(q), q.score, margin(q_img, search_2)))
                kind, img = _transformed_binned(rng_b, foreign[i % len(foreign)].acquire(rng_b), i)
                f = check.check(img)
                rows.setdefault(f"binned 2x2: other panel {kind}", []).append((_placed(f), f.score, margin(img, search_2)))
                kind, img = _transformed_binned(rng_b, generated_like(rng_b, shape, GENERATED[i % len(GENERATED)]), i)
                f = check.check(img)
                rows.setdefault(f"binned 2x2: generated {kind}", []).append((_placed(f), f.score, margin(img, search_2)))
    print(f"## Placement search on simulated panels ({time.time() - t0:.0f} s)\n")
    print("best PCE / threshold: the search's best position, its PCE over the threshold for the positions searched")
    print("(placed at >= 1); whole images at the native orientation are checked without a search.\n")
    print("| case | n | placed | layer score >= 0.5 | best PCE / threshold: min / median / max | local alarm | alarm points inside the splice |")
    print("|---|---|---|---|---|---|---|")
    for name, vals in rows.items():
        placed = sum(v[0] for v in vals)
        flagged = sum(v[1] is not None and v[1] >= 0.5 for v in vals)
        ratio = np.array([v[2] for v in vals])
        ratio = ratio[np.isfinite(ratio)]
        alarms = [v[3] for v in vals if len(v) > 3 and v[3] is not None]
        extra = f"{len(alarms)} | {sum(alarms)}" if name.startswith("splice") else "- | -"
        spread = f"{ratio.min():.3g} / {np.median(ratio):.3g} / {ratio.max():.3g}" if ratio.size else "-"
        print(f"| {name} | {len(vals)} | {placed} | {flagged} | {spread} | {extra} |")


def binned_calibration(per: int) -> None:
    """The binned search's null on calibration panels (301-306, 311-316: no evaluation uses them),
    with the threshold not raised: what ``placement.BINNED_MARGIN`` was chosen from."""
    from edge_agent.forensics import placement

    margin, placement.BINNED_MARGIN = placement.BINNED_MARGIN, 1.0
    try:
        own, own_jpeg, neg = [], [], {}
        for shape, seeds, others in (((512, 512), (301, 302, 303), (304, 305, 306)),
                                     ((512, 640), (311, 312, 313), (314, 315, 316))):
            foreign = [Panel(PanelSpec(s, shape=shape)) for s in others]
            for seed in seeds:
                panel = Panel(PanelSpec(seed, shape=shape))
                rng = np.random.default_rng(seed)
                binned = PlacementSearch(enroll(panel.acquire(rng) for _ in range(12)).quantised(8).pattern, binning=2)

                def ratio(img: np.ndarray) -> float:
                    return _ratio(binned, img)
                rng = np.random.default_rng((seed, 5))
                for i in range(len(ORIENTATIONS) + per):
                    kind, img = _transformed_binned(rng, panel.acquire(rng), i)
                    own.append(ratio(img))
                    own_jpeg.append(ratio(np.ascontiguousarray(jpeg_roundtrip(img, 90))))
                    kind, img = _transformed_binned(rng, foreign[i % len(foreign)].acquire(rng), i)
                    neg.setdefault(f"other panel {kind}", []).append(ratio(img))
                    for g in GENERATED:
                        kind, img = _transformed_binned(rng, generated_like(rng, shape, g), i)
                        neg.setdefault(f"{g} {kind}", []).append(ratio(img))
    finally:
        placement.BINNED_MARGIN = margin
    print("\n## Binned search on calibration panels, threshold not raised (best PCE / threshold)\n")
    print(f"this panel's binned images: min {min(own):.1f} of {len(own)}; the same after JPEG q90 reaching 1 / 1.5 / 2 / 3: "
          + " / ".join(str(sum(v >= f for v in own_jpeg)) for f in (1, 1.5, 2, 3)) + f" of {len(own_jpeg)}\n")
    print("| images | n | max | >= 1 | >= 1.5 | >= 2 | >= 3 |")
    print("|---|---|---|---|---|---|---|")
    for name, vals in sorted(neg.items()):
        v = np.array(vals)
        print(f"| {name} | {v.size} | {v.max():.2f} | " + " | ".join(str(int((v >= f).sum())) for f in (1, 1.5, 2, 3)) + " |")


def timing(repeat: int) -> None:
    print("\n## Cost of one search (median of runs; ms)\n")
    print("| detector | image | search ms | native check ms |")
    print("|---|---|---|---|")
    for shape in ((512, 512), (1760, 1760)):
        panel = Panel(PanelSpec(621, shape=shape))
        rng = np.random.default_rng(621)
        fp = enroll(panel.acquire(rng) for _ in range(2)).quantised(8)
        search = PlacementSearch(fp.pattern)
        check = FingerprintCheck(fp, placement=False)
        img = panel.acquire(rng)
        for label, x in (("whole, mirrored", np.ascontiguousarray(img[:, ::-1])),
                         ("80 % crop", np.ascontiguousarray(img[: shape[0] * 4 // 5, : shape[1] * 4 // 5]))):
            search.search(x)
            check.check(img)
            ts, tc = [], []
            for _ in range(repeat):
                t = time.perf_counter()
                search.search(x)
                ts.append(1e3 * (time.perf_counter() - t))
                t = time.perf_counter()
                check.check(img)
                tc.append(1e3 * (time.perf_counter() - t))
            print(f"| {shape[0]}x{shape[1]} | {label} | {statistics.median(ts):.0f} | {statistics.median(tc):.0f} |")
        binned = block_mean(img, 2)
        warm = FingerprintCheck(fp)
        warm.check(binned)
        first, later = [], []
        for _ in range(repeat):
            fresh = FingerprintCheck(fp)
            t = time.perf_counter()
            fresh.check(binned)  # both searches (native grid, then binned), then the check there
            first.append(1e3 * (time.perf_counter() - t))
            t = time.perf_counter()
            warm.check(binned)  # the placement remembered: the check only
            later.append(1e3 * (time.perf_counter() - t))
        print(f"| {shape[0]}x{shape[1]} | binned 2x2 whole, the layer's check: first image (searches) / later "
              f"(placement remembered) | {statistics.median(first):.0f} / {statistics.median(later):.0f} | "
              f"{statistics.median(tc):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per", type=int, default=8, help="random crops per panel and case (besides the 8 orientations)")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs")
    ap.add_argument("--only", choices=("placement", "binned-calibration", "timing"))
    args = ap.parse_args()
    if args.only in (None, "placement"):
        run(args.per)
    if args.only in (None, "binned-calibration"):
        binned_calibration(2 * args.per)
    if args.only in (None, "timing"):
        timing(args.repeat)


if __name__ == "__main__":
    main()
