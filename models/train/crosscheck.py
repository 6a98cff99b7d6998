"""Two shipped models on each other's data: is a new recipe better, or only better on its own data?

    python -m models.train.crosscheck --work runs/w3 --work runs/w5 \\
        --model models/xray-npr-1.5.0 --model models/xray-npr-1.6.0 --split val [--out FILE.json]

A recipe that changes the shared augmentation (1.6.0: stronger quantum-like noise on both classes)
also changes its own validation and test images, so each model's report is measured on different
data. This scores every model on every work folder's ``--split`` images (patients none of them
trained on: the work folders come from one seed and one patient split), through the agent's chain
(decode -> native-grid tiles -> the manifest's FP32 ONNX file -> the manifest's aggregate), and
judges each at its OWN shipped thresholds, as the agent would. Per family: ROC-AUC against all real
images of that split, TPR at the shipped 1 % threshold, and the false-positive rate of the real
images per source. Each image is decoded once and scored by every model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import _family_table, _real_source_table
from .fakes import read_images
from .imaging import load_grey
from .scoring import aggregate, image_tiles, shipped_runner, tile_scores


def _open(model: Path) -> tuple[str, Any, dict[str, Any]]:
    run, man = shipped_runner(model)
    return f"{man['name']} {man['version']}", run, man


def crosscheck(works: list[Path], models: list[Path], split: str) -> dict[str, Any]:
    opened = [_open(m) for m in models]
    tilings = {(m["tiling"]["tile"], m["tiling"]["max_tiles"]) for _, _, m in opened}
    if len(tilings) != 1:
        raise SystemExit(f"the models tile differently ({sorted(tilings)}): compare them with their own evaluate stage")
    tile, max_tiles = tilings.pop()
    out: dict[str, Any] = {"split": split, "results": {}}
    for work in works:
        rows = [r for r in read_images(work) if r["split"] == split]
        scores = {name: np.empty(len(rows)) for name, _, _ in opened}
        for i, r in enumerate(rows):
            tiles = image_tiles(load_grey(r["path"]), tile, max_tiles)[0]
            for name, run, man in opened:
                t = man["tiling"]
                scores[name][i] = aggregate(tile_scores(tiles, run)[0], t["aggregate"], t["topk"])
        for name, _, man in opened:
            thr = {k: man["thresholds"][k] for k in ("suspicious_logit", "synthetic_logit")}
            out["results"][f"{name} @ {work.name}"] = {
                "families": _family_table(rows, scores[name], thr),
                "real_sources": _real_source_table(rows, scores[name], thr)}
    return out


def render(res: dict[str, Any]) -> str:
    runs = list(res["results"])
    fams = sorted({f for v in res["results"].values() for f in v["families"]})
    lines = [f"Split `{res['split']}`; each model at its own shipped 1 % threshold. AUC / TPR per family, "
             "real false-positive rate (`real FPR`).", "",
             "| model @ data | " + " | ".join(fams) + " | real FPR |", "|---|" + "---|" * (len(fams) + 1)]
    for run in runs:
        f = res["results"][run]["families"]
        cells = [f"{f[x]['auc']:.3f} / {100 * f[x]['tpr_at_1pct_fpr_valthr']:.0f} %" if x in f else "" for x in fams]
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {100 * f['all']['fpr_at_1pct_valthr']:.1f} % |")
    srcs = sorted({s for v in res["results"].values() for s in v["real_sources"]})
    lines += ["", "Real images flagged at the 1 % threshold, per source and kind:", "",
              "| source:kind | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for s in srcs:
        cells = []
        for run in runs:
            v = res["results"][run]["real_sources"].get(s)
            cells.append(f"{100 * v['flagged_suspicious']:.1f} % (n={v['n']})" if v else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m models.train.crosscheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, action="append", required=True, help="work folder (repeatable)")
    ap.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeatable)")
    ap.add_argument("--split", default="val", choices=("val", "test"))
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    res = crosscheck(args.work, args.model, args.split)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    print(render(res), end="")


if __name__ == "__main__":
    main()
