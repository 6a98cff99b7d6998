"""Evaluate the copy search (edge_agent/forensics/copysearch.py) on the detector's index: false
alarms on real radiographs, detections and pointing on the tamper family, per recipe.

    python -m benchmarks.eval_copysearch --index runs/w3/images.csv --split val    # choose the centre
    python -m benchmarks.eval_copysearch --index runs/w3/images.csv --split test --centre C --model models/xray-npr-1.7.0

Images are read by the agent's own decoder (first frame). Reals: every ``label 0`` image of the
split (the ``test`` split adds the pydicom-data DICOMs of ``dicom-heldout``); fakes: the tamper
family (its masks are in the index). With ``--split val`` the script prints the statistic at 1 %
and 0.1 % false positives on the reals (the value to ship as ``CENTRE`` is the 0.1 % one); with
``--centre`` it reports every figure at that decision point. Pointing: the copy map's peak falls
inside the tamper mask (the map marks the copy and its source alike, so a copy found by its
source counts as a miss); "marked": the map exceeds 0.5 somewhere inside the mask. Seconds per
image are medians. Results also go to ``--out`` as JSON (one row per image).

With ``--model``, every image also goes through the agent's pipeline twice, as ``edge-agent scan``
judges it with and without ``--copy-search`` (default fusion weights, or ``--fusion FILE``): the
table then adds what a user sees, the share flagged (suspicious or synthetic) by each.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.decode import decode_path  # noqa: E402
from edge_agent.forensics.copysearch import CopySearch, copy_map  # noqa: E402


def rows_of(index: Path, split: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(index.open()))
    splits = {split} | ({"dicom-heldout"} if split == "test" else set())
    return [r for r in rows if r["split"] in splits and (r["label"] == "0" or r["family"] == "tamper")]


def recipe(kind: str) -> str:
    """``copy_move+touchup+jpeg73`` -> ``copy_move+touchup`` (the tamper recipe without augmentation)."""
    parts = kind.split("+")
    return "+".join(p for p in parts if p in ("copy_move", "splice", "inpaint_remove", "nodule_add", "touchup"))


def verdicts(rows: list[dict[str, str]], model: Path, fusion: Path | None) -> dict[str, tuple[bool, bool]]:
    """Per image id: (flagged without the copy search, flagged with it), by the agent's pipeline."""
    from edge_agent.evidence import EvidenceSettings
    from edge_agent.fusion import FusionModel
    from edge_agent.pipeline import open_pipeline

    weights = FusionModel.from_json(fusion.read_text()) if fusion else FusionModel()
    plain = open_pipeline(model, "onnxruntime", "fp32", 2, evidence=EvidenceSettings(fusion=weights))
    searching = open_pipeline(model, "onnxruntime", "fp32", 2, evidence=EvidenceSettings(fusion=weights, copy_search=True))
    out = {}
    for row in rows:
        a, b = plain.process(row["path"])[0], searching.process(row["path"])[0]
        out[row["id"]] = (a.flagged, b.flagged)
    return out


def measure(row: dict[str, str], search: CopySearch) -> dict:
    frame = decode_path(row["path"]).frames[0]
    t0 = time.perf_counter()
    peak, r = search.measure(frame)
    out = {"id": row["id"], "family": row["family"], "kind": row["kind"], "source": row["source"],
           "shape": list(frame.shape), "pce": None if peak is None else peak.lead,
           "corr": None if peak is None else peak.corr, "seconds": time.perf_counter() - t0}
    if row["family"] == "tamper" and peak is not None and r is not None and row.get("mask"):
        from PIL import Image

        mask = np.asarray(Image.open(row["mask"])) > 0
        if mask.shape == r.shape:
            m = copy_map(r, peak.dy, peak.dx)
            out["pointing"] = bool(mask.flat[int(np.argmax(m))])
            out["marked"] = bool((m[mask] > 0.5).any())
    return out


def quantile_above(values: list[float], fpr: float) -> float:
    """The smallest decision point that flags at most ``fpr`` of ``values`` (strictly above)."""
    v = np.sort(np.asarray(values))
    k = int(np.floor(fpr * len(v)))
    return float(v[len(v) - 1 - k])


def report(results: list[dict], centre: float | None) -> list[str]:
    reals = [r["pce"] for r in results if r["family"] == "real" and r["pce"] is not None]
    lines = [f"reals judged: {len(reals)} (not judged, too small: "
             f"{sum(r['pce'] is None for r in results if r['family'] == 'real')})",
             f"median seconds per image: {statistics.median(r['seconds'] for r in results):.2f}"]
    if reals:
        lines.append(f"reals: statistic median {np.median(reals):.2f}, max {max(reals):.2f}; "
                     f"flagging 1 % above {quantile_above(reals, 0.01):.2f}, 0.1 % above {quantile_above(reals, 0.001):.2f}")
    if centre is None:
        return lines
    lines.append(f"decision point {centre:.2f}: reals flagged {sum(p > centre for p in reals)} / {len(reals)}")
    by = defaultdict(list)
    for r in results:
        if r["family"] == "tamper":
            by[recipe(r["kind"])].append(r)
    judged = any("flagged_plain" in r for r in results)
    if judged:
        real_rows = [r for r in results if r["family"] == "real"]
        lines.append(f"agent verdicts, reals flagged: model alone {sum(r['flagged_plain'] for r in real_rows)}, "
                     f"with the copy search {sum(r['flagged_search'] for r in real_rows)} / {len(real_rows)}")
    extra = " agent flags: model alone | with copy search |" if judged else ""
    lines.append("| recipe | n | flagged | pointing | marked |" + extra)
    lines.append("|---|---|---|---|---|" + ("---|---|" if judged else ""))
    for name in sorted(by) + ["all"]:
        rs = [r for k in by for r in by[k]] if name == "all" else by[name]
        hit = [r for r in rs if r["pce"] is not None and r["pce"] > centre]
        row = (f"| {name} | {len(rs)} | {len(hit)} ({100 * len(hit) / len(rs):.0f} %) | "
               f"{sum(r.get('pointing', False) for r in hit)} | {sum(r.get('marked', False) for r in hit)} |")
        if judged:
            row += f" {sum(r['flagged_plain'] for r in rs)} | {sum(r['flagged_search'] for r in rs)} |"
        lines.append(row)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True, help="the detector's images.csv")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--centre", type=float, help="decision point on the statistic")
    ap.add_argument("--limit", type=int, help="at most this many images (seeded subset), for a quick look")
    ap.add_argument("--out", type=Path, help="JSON rows per image")
    ap.add_argument("--model", type=Path, help="also judge each image with the agent's pipeline, with and without the search")
    ap.add_argument("--fusion", type=Path, help="fusion weights JSON for --model (default: the documented defaults)")
    args = ap.parse_args(argv)
    rows = rows_of(args.index, args.split)
    if args.limit:
        pick = np.random.default_rng(0).permutation(len(rows))[: args.limit]
        rows = [rows[i] for i in sorted(pick)]
    search = CopySearch()
    results = []
    for i, row in enumerate(rows):
        results.append(measure(row, search))
        if (i + 1) % 50 == 0:
            print(f"{i + 1} / {len(rows)}", file=sys.stderr, flush=True)
    if args.model:
        flags = verdicts(rows, args.model, args.fusion)
        for r in results:
            r["flagged_plain"], r["flagged_search"] = flags[r["id"]]
    if args.out:
        args.out.write_text(json.dumps(results))
    print("\n".join(report(results, args.centre)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
