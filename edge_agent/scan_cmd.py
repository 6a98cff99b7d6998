"""``edge-agent scan PATH...``: verdicts for files and folders, as a table or JSON lines.

Exit status (documented in README.md):
  0  every image was read and judged authentic
  1  at least one image is suspicious or synthetic
  2  the command could not run (bad arguments, model missing or altered)
  4  at least one file is unreadable (added to 1 when both happen: 5)
An unreadable file is a verdict, not a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the runtime imports (pydicom, runtimes) wait until a scan runs: fast --help
    from .verdict import Verdict

__all__ = ["add_parser", "walk", "exit_status"]

EXIT_FLAGGED = 1
EXIT_UNREADABLE = 4


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("scan", help="judge image files and folders", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders are walked)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per verdict on stdout")
    p.add_argument("--heatmaps", type=Path, metavar="DIR", help="write a PNG evidence overlay per image here")
    p.add_argument("--model", type=Path, metavar="DIR", help="model folder with manifest.json (default: shipped model)")
    p.add_argument("--backend", default="auto", choices=("auto", "openvino", "onnxruntime"))
    p.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="inference threads")
    p.add_argument("--config", type=Path, metavar="AGENT_YAML",
                   help="take the model and the forensics settings (noise profile, fingerprint, device "
                        "identity, capture-signature trust, fusion) from the agent's config")
    p.add_argument("--copy-search", action="store_true",
                   help="also search each image for regions whose noise repeats elsewhere in it (copy-move, "
                        "pasted noise); seconds per radiograph (forensics.copy_search in the config)")
    p.set_defaults(func=run_scan)


def walk(paths: list[str]) -> Iterator[tuple[Path, str]]:
    """Files under each path, in a stable order, with the name to show (as given, joined)."""
    for given in paths:
        p = Path(given)
        if p.is_dir():
            for root, dirs, files in os.walk(given):  # not p: Path() drops a leading "./"
                dirs.sort()
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name, os.path.join(root, name)
        else:
            yield p, given  # a missing file becomes an "unreadable" verdict, not a crash


def exit_status(verdicts: list[Verdict]) -> int:
    status = 0
    if any(v.flagged for v in verdicts):
        status |= EXIT_FLAGGED
    if any(v.verdict == "unreadable" for v in verdicts):
        status |= EXIT_UNREADABLE
    return status


def run_scan(args: argparse.Namespace) -> int:
    from .heatmap import render_overlay
    from .pipeline import open_pipeline

    model, backend, precision, anchor, evidence = args.model, args.backend, args.precision, None, None
    if getattr(args, "config", None) is not None:
        from .config import load_config

        cfg = load_config(args.config)
        evidence = cfg.forensics
        model, backend, precision = cfg.model.chosen(model, backend, precision)
        anchor = cfg.model.trust_anchor
    if getattr(args, "copy_search", False):
        from dataclasses import replace

        from .evidence import EvidenceSettings

        evidence = replace(evidence or EvidenceSettings(), copy_search=True)
    pipeline = open_pipeline(model, backend, precision, args.threads, trust_anchor=anchor, evidence=evidence)
    items = list(walk(args.paths))
    out: TextIO = sys.stdout
    progress = None
    if not args.jsonl and sys.stderr.isatty() and len(items) > 1:
        from tqdm import tqdm

        progress = tqdm(total=len(items), unit="file", file=sys.stderr, leave=False)
    verdicts: list[Verdict] = []
    if not args.jsonl:
        out.write(_row("VERDICT", "SCORE", "FRAME", "MS", "PATH / REASON") + "\n")
    last_path = None
    for verdict, fs, decoded, findings in pipeline.process_many(items):
        verdicts.append(verdict)
        if args.heatmaps is not None and fs is not None and decoded is not None:
            frame = decoded.frames[verdict.frame or 0]
            render_overlay(frame, fs, _heatmap_name(args.heatmaps, verdict), verdict.verdict, findings,
                           score=verdict.score)
        if args.jsonl:
            out.write(json.dumps(verdict.to_dict(), separators=(",", ":")) + "\n")
            out.flush()
        else:
            _print_row(out, verdict, progress)
        if progress is not None and verdict.path != last_path:
            progress.update(1)
            last_path = verdict.path
    if progress is not None:
        progress.close()
    if not args.jsonl:
        counts = {k: sum(v.verdict == k for v in verdicts) for k in ("authentic", "suspicious", "synthetic", "unreadable")}
        out.write(", ".join(f"{n} {k}" for k, n in counts.items()) + f" ({len(items)} files)\n")
    return exit_status(verdicts)


def _row(verdict: str, score: str, frame: str, ms: str, text: str) -> str:
    return f"{verdict:<11} {score:>6} {frame:>5} {ms:>8}  {text}"


def _print_row(out: TextIO, v: Verdict, progress: object | None) -> None:
    line = _row(
        v.verdict,
        "-" if v.score is None else f"{v.score:.3f}",
        "-" if v.frame is None else str(v.frame),
        f"{v.timings_ms.total:.0f}",
        v.path,
    )
    if v.verdict != "authentic":
        line += "\n" + " " * 35 + "; ".join(r.message for r in v.reasons)
    if progress is not None:
        progress.write(line, file=out)  # type: ignore[attr-defined]
    else:
        out.write(line + "\n")


def _heatmap_name(directory: Path, v: Verdict) -> Path:
    # The path as given, flattened: "./in/a.dcm" -> "in__a.dcm", "../in/a.dcm" -> "up__in__a.dcm".
    # (Without normalising, "./in/a.dcm" became ".__in__a.dcm", a hidden file.)
    parts = [p for p in os.path.normpath(v.path).split(os.sep) if p]
    stem = "__".join("up" if p == ".." else p for p in parts).replace(":", "_")
    if stem.startswith("."):
        stem = "_" + stem
    suffix = "" if v.frame is None else f".frame{v.frame}"
    return directory / f"{stem}{suffix}.heatmap.png"
