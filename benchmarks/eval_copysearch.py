"""Evaluate the copy search (edge_agent/forensics/copysearch.py) on the detector's index: false
alarms on real radiographs, detections and pointing on the tamper family, per recipe.

    python -m benchmarks.eval_copysearch --index runs/w3/images.csv --split val    # choose the centre
    python -m benchmarks.eval_copysearch --index runs/w3/images.csv --split test --centre C --model models/xray-npr-1.7.0

Images are read by the agent's own decoder (first frame). Reals: every ``label 0`` image of the
split (the ``test`` split adds the pydicom-data DICOMs of ``dicom-heldout``, ``--pydicom-data`` all
8 of its CR radiographs); fakes: the tamper
family (its masks are in the index). With ``--split val`` the script prints the statistic at 1 %
and 0.1 % false positives on the reals (the value to ship as ``CENTRE`` is the 0.1 % one); with
``--centre`` it reports every figure at that decision point. Pointing: the copy map's peak falls
inside the tamper mask (the map marks the copy and its source alike, so a copy found by its
source counts as a miss); "marked": the map exceeds 0.5 somewhere inside the mask. Seconds per
image are medians. Results also go to ``--out`` as JSON (one row per image).

With ``--model``, every image also goes through the agent's pipeline as ``edge-agent scan`` judges it
(model and metadata rules; default fusion weights, or ``--fusion FILE``), and the copy layer's term is
added to that fused logit as :func:`edge_agent.fusion.fuse` adds it: the table then adds what a user
sees without and with ``--copy-search``, the images flagged (suspicious or synthetic) by each.
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

from benchmarks.fit_fusion import RG_FILES, _logit, threshold_above  # noqa: E402
from edge_agent.decode import decode_path  # noqa: E402
from edge_agent.forensics.copysearch import CopySearch, copy_map  # noqa: E402
from edge_agent.forensics.finding import logistic  # noqa: E402
from edge_agent.fusion import FusionModel  # noqa: E402


def rows_of(index: Path, split: str, pydicom_data: bool = False) -> list[dict[str, str]]:
    rows = list(csv.DictReader(index.open()))
    splits = {split} | ({"dicom-heldout"} if split == "test" else set())
    out = [r for r in rows if r["split"] in splits and (r["label"] == "0" or r["family"] == "tamper")]
    if pydicom_data:  # all 8 CR radiographs of pydicom-data (RG1 may have been in training: no matter here)
        from pydicom.data import get_testdata_file

        have = {r["path"] for r in out}
        for name in RG_FILES:
            path = str(get_testdata_file(name, download=False))
            if path not in have:
                out.append({"id": name, "path": path, "split": split, "label": "0", "family": "real",
                            "kind": "original", "source": "pydicom-data", "mask": ""})
    return out


def recipe(kind: str) -> str:
    """``copy_move+touchup+jpeg73`` -> ``copy_move+touchup`` (the tamper recipe without augmentation)."""
    parts = kind.split("+")
    return "+".join(p for p in parts if p in ("copy_move", "splice", "inpaint_remove", "nodule_add", "touchup"))


def plain_logits(rows: list[dict[str, str]], model: Path, fusion: Path | None
                 ) -> tuple[dict[str, float], float, FusionModel]:
    """Per image id the fused logit of the agent's pipeline without the copy search (model and
    metadata rules, as ``edge-agent scan`` runs), the suspicious threshold's logit, the weights."""
    from edge_agent.evidence import EvidenceSettings
    from edge_agent.pipeline import open_pipeline

    weights = FusionModel.from_json(fusion.read_text()) if fusion else FusionModel()
    plain = open_pipeline(model, "onnxruntime", "fp32", 2, evidence=EvidenceSettings(fusion=weights))
    out, threshold = {}, 0.5
    for row in rows:
        v = plain.process(row["path"])[0]
        if v.score is not None and v.threshold is not None:
            out[row["id"]], threshold = _logit(v.score), v.threshold
    return out, _logit(threshold), weights


def measure(row: dict[str, str], search: CopySearch) -> dict:
    frame = decode_path(row["path"]).frames[0]
    t0 = time.perf_counter()
    peak, r = search.measure(frame)
    out = {"id": row["id"], "family": row["family"], "kind": row["kind"], "source": row["source"],
           "shape": list(frame.shape), "lead": None if peak is None else peak.lead,
           "corr": None if peak is None else peak.corr, "seconds": time.perf_counter() - t0}
    if row["family"] == "tamper" and peak is not None and r is not None and row.get("mask"):
        from PIL import Image

        mask = np.asarray(Image.open(row["mask"])) > 0
        if mask.shape == frame.shape:
            m = copy_map(r, peak.dy, peak.dx)[: frame.shape[0], : frame.shape[1]]  # r is padded
            out["pointing"] = bool(mask.flat[int(np.argmax(m))])
            out["marked"] = bool((m[mask] > 0.5).any())
    return out


def report(results: list[dict], centre: float | None) -> list[str]:
    reals = [r["lead"] for r in results if r["family"] == "real" and r["lead"] is not None]
    lines = [f"reals judged: {len(reals)} (not judged, too small: "
             f"{sum(r['lead'] is None for r in results if r['family'] == 'real')})",
             f"median seconds per image: {statistics.median(r['seconds'] for r in results):.2f}"]
    if reals:
        lines.append(f"reals: statistic median {np.median(reals):.2f}, max {max(reals):.2f}; "
                     f"flagging at most 1 % from {threshold_above(reals, 0.01):.2f}, 0.1 % from {threshold_above(reals, 0.001):.2f}")
    if centre is None:
        return lines
    lines.append(f"decision point {centre:.2f}: reals flagged {sum(p >= centre for p in reals)} / {len(reals)}")
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
        hit = [r for r in rs if r["lead"] is not None and r["lead"] >= centre]
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
    ap.add_argument("--pydicom-data", action="store_true", help="add the 8 CR radiographs of pydicom-data to the reals")
    ap.add_argument("--tamper-only", action="store_true", help="only the tamper images (their figures, no false alarms)")
    ap.add_argument("--limit", type=int, help="at most this many images (seeded subset), for a quick look")
    ap.add_argument("--out", type=Path, help="JSON rows per image")
    ap.add_argument("--model", type=Path, help="also judge each image with the agent's pipeline, with and without the search")
    ap.add_argument("--fusion", type=Path, help="fusion weights JSON for --model (default: the documented defaults)")
    args = ap.parse_args(argv)
    rows = rows_of(args.index, args.split, args.pydicom_data)
    if args.tamper_only:
        rows = [r for r in rows if r["family"] == "tamper"]
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
        # fuse() adds weight * score per layer to the logit, so the verdict with the search is the
        # verdict without it plus the copy layer's term (tests/test_forensics_copysearch.py runs both
        # through scan); the search itself runs once per image
        logits, cut, weights = plain_logits(rows, args.model, args.fusion)
        for r in results:
            z = logits.get(r["id"])
            term = 0.0 if r["lead"] is None else weights.copy_judged + weights.copy * logistic(r["lead"], search.centre, search.steepness)
            r["flagged_plain"] = z is not None and z >= cut
            r["flagged_search"] = z is not None and z + term >= cut
    if args.out:
        args.out.write_text(json.dumps(results))
    print("\n".join(report(results, args.centre)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
