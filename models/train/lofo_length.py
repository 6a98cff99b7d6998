"""Does a longer leave-one-family-out run generalise better? (a check of the report's LOFO figures)

The report's LOFO runs train the detector for ``lofo.steps`` (2000) steps without one family, a tenth
of the shipped model's 20000. If the held-out family's AUC were limited by that, the report would
understate the recipe. This trains the same runs for ``--steps`` steps (checkpoints
``lofo<steps>-detector-<family>-last.pt`` in the work folder, resumable) and scores them exactly as
the evaluate stage scores its LOFO runs (thresholds from 300 seeded validation reals, the report's
fixed real test subset against the held-out family's test fakes), beside the report's figures:

    python -m models.train.lofo_length --work runs/w9 --steps 8000 gan grain tamper

About 10 minutes per family on two cores. Writes ``lofo<steps>-scores.json`` into the work folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from . import evaluate as ev
from .config import load_config
from .fakes import FAMILIES, read_images
from .fit import load_detector, train_detector
from .scoring import torch_runner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the work folder of a model whose evaluate stage has run")
    ap.add_argument("--config", type=Path, default=Path(__file__).with_name("config.yaml"))
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("families", nargs="+", choices=FAMILIES)
    args = ap.parse_args()
    cfg = load_config(args.config)

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    report = json.loads((args.work / f"eval-{cfg.version}" / "eval.json").read_text())
    method, k = report["aggregate"]["method"], report["aggregate"]["topk"]
    rows = read_images(args.work)
    by_id = {r["id"]: r for r in rows}
    val_reals = [r for r in rows if r["split"] == "val" and r["label"] == "0"]
    pick = np.random.default_rng(cfg.seed).choice(len(val_reals), size=min(300, len(val_reals)), replace=False)
    val_reals = [val_reals[i] for i in sorted(pick)]
    real_sub = [by_id[i] for i in report["subset_ids"]]
    tile, max_tiles = cfg.tiles["tile"], cfg.tiles["max_tiles"]
    out_path = args.work / f"lofo{args.steps}-scores.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    for fam in args.families:
        ck = train_detector(args.work, cfg, log, tag=f"lofo{args.steps}-detector-{fam}", exclude_family=fam,
                            steps=args.steps)
        runner = torch_runner(load_detector(ck))
        vs, _ = ev._score(val_reals, runner, ev._TileCache(tile, max_tiles))
        thr = ev.thresholds_from_reals(ev._agg(vs, val_reals, method, k))
        test = real_sub + [r for r in rows if r["split"] == "test" and r["family"] == fam]
        ts, _ = ev._score(test, runner, ev._TileCache(tile, max_tiles))
        y = np.array([int(r["label"]) for r in test])
        out[fam] = ev._metrics(y, ev._agg(ts, test, method, k), thr)
        out_path.write_text(json.dumps(out, indent=1))
        before = report.get("lofo", {}).get(fam, {}).get("detector", {})  # written by the compare stage
        log(f"held out {fam}: {args.steps} steps AUC {out[fam]['auc']:.3f}, TPR@1% {out[fam]['tpr_at_1pct_fpr_valthr']:.1%}; "
            f"report ({cfg.lofo['steps']} steps) AUC {before.get('auc', float('nan')):.3f}, "
            f"TPR@1% {before.get('tpr_at_1pct_fpr_valthr', float('nan')):.1%}")


if __name__ == "__main__":
    main()
