"""Command line: ``python -m models.train --data DIR [--data DIR2] --work WORKDIR --config CFG [--stage NAME]``.

Stages (in order): index, generators, fakes, tiles, detector, baseline, lofo, loso, export,
evaluate, compare, ship (``loso`` is not part of the default run: it trains four more detectors). Each writes its outputs under WORKDIR and is skipped when its
``.done`` marker exists (delete the marker or pass ``--force`` to redo it). Long stages
also checkpoint inside, so a killed run resumes. Wall time per stage is appended to
``WORKDIR/stage_times.json`` for the report.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import torch

from .config import Config, load_config

STAGES = ("index", "generators", "fakes", "tiles", "detector", "baseline", "lofo", "loso", "export", "evaluate", "compare", "ship")


def _logger(work: Path) -> Callable[[str], None]:
    logf = open(work / "train.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()
    return log


def _run_stage(name: str, data: list[Path], work: Path, cfg: Config, log: Callable[[str], None], args: argparse.Namespace) -> bool:
    """Run one stage; False when it could not finish here (its marker is then not written)."""
    if name == "index":
        from .splits import build_index
        build_index(data, cfg, work / "index.csv")
    elif name == "generators":
        from .fakes import run_generators
        run_generators(work, cfg, log)
    elif name == "fakes":
        from .fakes import run_fakes
        run_fakes(work, cfg, log)
    elif name == "tiles":
        from .tilebank import build_tilebank
        build_tilebank(work, cfg, log)
    elif name == "detector":
        from .fit import train_detector
        train_detector(work, cfg, log, tag=f"detector-{cfg.version}")
    elif name == "baseline":
        from .fit import train_baseline
        train_baseline(work, cfg, log)
    elif name == "lofo":
        from .fit import train_lofo
        train_lofo(work, cfg, log)
    elif name == "loso":
        from .loso import score_loso, train_loso
        train_loso(work, cfg, log)
        return score_loso(work, cfg, log) is not None
    elif name == "export":
        from .export import export_all
        export_all(work, cfg, log)
    elif name == "evaluate":
        from .evaluate import evaluate_all
        evaluate_all(work, cfg, log)
    elif name == "compare":
        from .evaluate import compare_all
        compare_all(work, cfg, log)
    elif name == "ship":
        from .ship import ship
        ship(work, cfg, log, Path(args.out))
    else:
        raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__)
    ap.add_argument("--data", action="append", type=Path, default=None, help="data folder with manifest.csv (repeatable)")
    ap.add_argument("--work", type=Path, required=True, help="work folder outside git (images, checkpoints)")
    ap.add_argument("--config", type=Path, default=Path("models/train/config.yaml"))
    ap.add_argument("--stage", action="append", choices=STAGES, help="run only these stages (repeatable)")
    ap.add_argument("--force", action="store_true", help="redo stages even if marked done")
    ap.add_argument("--out", default="models", help="folder that receives <name>-<version>/")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = _logger(work)
    data = args.data or [Path("/work/shared/data")]
    times_path = work / "stage_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for name in args.stage or [s for s in STAGES if s != "loso"]:
        # data stages are shared by every model version trained in this work folder
        shared = name in ("index", "generators", "fakes", "tiles")
        marker = work / (f".{name}.done" if shared else f".{name}-{cfg.version}.done")
        if marker.exists() and not args.force:
            log(f"stage {name}: already done ({marker.name}), skipping")
            continue
        log(f"stage {name}: start (config sha256 {cfg.sha256[:12]})")
        t0 = time.time()
        if not _run_stage(name, data, work, cfg, log, args):
            log(f"stage {name}: not finished here")
            continue
        dt = time.time() - t0
        key = name if shared else f"{name}@{cfg.version}"
        # re-read: stages of one work folder may run in parallel processes
        times = json.loads(times_path.read_text()) if times_path.exists() else {}
        times[key] = round(times.get(key, 0.0) + dt, 1)
        times_path.write_text(json.dumps(times, indent=1))
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        log(f"stage {name}: done in {dt:.1f} s")


if __name__ == "__main__":
    main()
