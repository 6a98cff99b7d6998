"""Memory and start-up cost of the forensic layers (issue 6), each configuration in its own process.

    python -m benchmarks.bench_forensics_memory [--model DIR] [--repeat 3]

Configurations, on RG1 (pydicom-data CR, 1955x1841, 64 tiles): the model alone (the baseline), the
model + physics layer, and the model + physics + fingerprint layers (the fingerprint check compiles
its kernels with numba, edge_agent/forensics/kernels.py). The noise profile and the fingerprint are
made once beforehand and read from files, as the agent reads its device folder. Each configuration
runs in a fresh interpreter: start-up is the time from before ``import edge_agent`` to the first
verdict (pipeline opened, kernels compiled or loaded from numba's cache), then the same file is
judged 5 more times. Printed: start-up,
peak RSS (``VmHWM``) and RSS at the end split into anonymous and file-backed pages
(``/proc/self/status``; file-backed pages are shared library code the kernel can drop and reload),
with differences against the baseline. Medians over ``--repeat`` processes per configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = ("model", "model+physics", "model+physics+fingerprint")


def _worker(config: str, model: str | None, enrolled: Path) -> None:
    import time

    t0 = time.perf_counter()
    from edge_agent.detect import default_model_dir, open_detector
    from edge_agent.evidence import Evidence, EvidenceSettings
    from edge_agent.forensics import Fingerprint, NoiseProfile
    from edge_agent.pipeline import Pipeline

    path = Path((enrolled / "image.txt").read_text())
    det = open_detector(Path(model) if model else default_model_dir(), threads=2)
    settings = EvidenceSettings()
    if config != "model":  # what the agent reads from its device folder (edge-agent learn wrote it)
        profile = NoiseProfile.from_json((enrolled / "noise-profile.json").read_text())
        fp = (Fingerprint.from_bytes((enrolled / "fingerprint.bin").read_bytes())
              if config.endswith("fingerprint") else None)
        settings = EvidenceSettings(noise_profile=profile, fingerprint=fp)
    pipe = Pipeline(det, evidence=Evidence(settings))
    pipe.process(path)
    start_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(5):
        pipe.process(path)
    status = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
              if line.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile"))}
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec
    print(json.dumps({"start_ms": start_ms, "peak_mb": status.get("VmHWM"),
                      "rss_mb": status.get("VmRSS"), "anon_mb": status.get("RssAnon"), "file_mb": status.get("RssFile")}))


def _enrol(model: Path | None, out: Path) -> None:
    """The device folder the workers read: a noise profile and a fingerprint of RG1 (N = 1)."""
    from pydicom.data import get_testdata_file

    from edge_agent.decode import decode_path
    from edge_agent.detect import default_model_dir, open_detector
    from edge_agent.forensics import NoiseProfile, enroll, measure_noise

    path = Path(str(get_testdata_file("RG1_UNCR.dcm", download=False)))
    frame = decode_path(path).frames[0]
    tiles = open_detector(model or default_model_dir(), threads=2).prepare(frame).tiles
    (out / "noise-profile.json").write_text(NoiseProfile.fit([measure_noise(tiles)] * 3, modality="").to_json())
    (out / "fingerprint.bin").write_bytes(enroll([frame]).to_bytes())
    (out / "image.txt").write_text(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--enrolled", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, str(args.model) if args.model else None, args.enrolled)
        return
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        _enrol(args.model, Path(tmp))
        for _ in range(args.repeat):  # configurations alternate, so a busy spell weighs on all of them
            for c in CONFIGS:
                cmd = [sys.executable, "-m", "benchmarks.bench_forensics_memory", "--worker", c, "--enrolled", tmp]
                if args.model:
                    cmd += ["--model", str(args.model)]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                runs[c].append(json.loads(out.strip().splitlines()[-1]))
    keys = ("start_ms", "peak_mb", "rss_mb", "anon_mb", "file_mb")
    med = {c: {k: statistics.median(r[k] for r in runs[c]) for k in keys} for c in CONFIGS}
    base = med["model"]
    print(f"RG1, medians of {args.repeat} processes per configuration; differences against the model alone")
    print(f"{'configuration':<28}{'start ms':>10}{'peak MB':>9}{'RSS MB':>8}{'anon MB':>9}{'file MB':>9}"
          f"{'+start':>8}{'+peak':>7}{'+anon':>7}{'+file':>7}")
    for c in CONFIGS:
        m = med[c]
        print(f"{c:<28}{m['start_ms']:>10.0f}{m['peak_mb']:>9.0f}{m['rss_mb']:>8.0f}{m['anon_mb']:>9.0f}{m['file_mb']:>9.0f}"
              f"{m['start_ms'] - base['start_ms']:>8.0f}{m['peak_mb'] - base['peak_mb']:>7.0f}"
              f"{m['anon_mb'] - base['anon_mb']:>7.0f}{m['file_mb'] - base['file_mb']:>7.0f}")


if __name__ == "__main__":
    main()
