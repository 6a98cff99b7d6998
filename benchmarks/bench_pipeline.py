"""Speed and memory of the agent's pipeline on real radiographs and CT slices (issue 2).

    python benchmarks/bench_pipeline.py [--model DIR] [--repeat 5]

For each backend (ORT FP32, ORT INT8, OpenVINO INT8/FP32 as the model ships them, and the same
weights in PyTorch eager when torch and the training code are present) it prints per-image
p50/p95 by stage, images per second, peak RSS and cold start, each in its own process so the
memory figures don't mix, and ratios against the baseline "plain pydicom read + decode + SHA-256
of the same file". Medians throughout: the machines are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _inputs(workdir: Path) -> dict[str, list[Path]]:
    """RG1/RG3 uncompressed and JPEG 2000 from pydicom-data, and 512x512 CT slices made from
    pydicom's CT_small (upsampled 4x, same header) so the decode cost is a real DICOM's."""
    import pydicom
    from pydicom.data import get_testdata_file

    sets: dict[str, list[Path]] = {}
    for name in ("RG1_UNCR", "RG1_J2KR", "RG3_UNCR", "RG3_J2KR"):
        sets[name] = [Path(get_testdata_file(f"{name}.dcm", download=False))]
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    arr = ct.pixel_array
    big = np.kron(arr, np.ones((4, 4), dtype=arr.dtype))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        ct.PixelData = (big + rng.integers(-3, 4, big.shape).astype(big.dtype)).tobytes()
        ct.Rows, ct.Columns = big.shape
        p = workdir / f"ct512_{i:02d}.dcm"
        ct.save_as(p, enforce_file_format=True)
        paths.append(p)
    sets["CT512"] = paths
    return sets


def _baseline(paths: list[Path], repeat: int) -> list[float]:
    import pydicom

    times = []
    for _ in range(repeat):
        for p in paths:
            t0 = time.perf_counter()
            data = p.read_bytes()
            hashlib.sha256(data).hexdigest()
            ds = pydicom.dcmread(p)
            ds.pixel_array  # noqa: B018 - decoding is the point
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _worker(args: argparse.Namespace) -> None:
    """Runs in its own process: one backend over all input sets, prints JSON."""
    t_start = time.perf_counter()
    sets = json.loads(Path(args.sets).read_text())
    result: dict[str, object] = {"config": args.worker}
    if args.worker == "baseline":
        result["sets"] = {k: {"total": _baseline([Path(p) for p in v], args.repeat)} for k, v in sets.items()}
    else:
        backend, precision = args.worker.split(":")
        from edge_agent.detect import open_detector
        from edge_agent.pipeline import Pipeline

        if backend == "torch":
            from benchmarks.torch_backend import open_torch_detector

            detector = open_torch_detector(Path(args.model))
        else:
            detector = open_detector(Path(args.model), backend, precision, threads=2,
                                     cache_dir=Path(args.cache) if args.cache else None)
        pipe = Pipeline(detector)
        first = next(iter(sets.values()))[0]
        pipe.process(first)
        result["cold_start_ms"] = (time.perf_counter() - t_start) * 1e3
        per_set = {}
        for name, paths in sets.items():
            stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "infer": [], "forensics": [], "total": []}
            items = [(Path(p), p) for p in paths] * args.repeat
            t0 = time.perf_counter()
            n = 0
            for v, *_ in pipe.process_many(items):
                n += 1
                for k in stages:
                    stages[k].append(getattr(v.timings_ms, k))
            wall = time.perf_counter() - t0
            per_set[name] = {**stages, "images_per_s": n / wall}
        result["sets"] = per_set
        result["model_file"] = detector.model_ref.to_dict()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sets", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return

    from edge_agent.detect import default_model_dir
    from edge_agent.manifest import load_manifest

    model = args.model or default_model_dir()
    manifest = load_manifest(model)
    configs = ["baseline"]
    for f in manifest.files:
        if f.format == "onnx":
            configs.append(f"onnxruntime:{f.precision}")
        elif f.format == "openvino-xml":
            configs.append(f"openvino:{f.precision}")
    if (model / "model.pt").exists() or (model / "torch").exists():
        try:
            import torch  # noqa: F401

            configs.append("torch:fp32")
        except ImportError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        sets = {k: [str(p) for p in v] for k, v in _inputs(tmpdir).items()}
        (tmpdir / "sets.json").write_text(json.dumps(sets))
        cache = tmpdir / "ov-cache"
        results = {}
        for cfg in configs:
            cmd = [sys.executable, __file__, "--worker", cfg, "--sets", str(tmpdir / "sets.json"),
                   "--model", str(model), "--repeat", str(args.repeat), "--cache", str(cache)]
            if cfg.startswith("openvino"):  # warm the compile cache first, as a device would be
                subprocess.run(cmd, check=True, capture_output=True, text=True)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            results[cfg] = json.loads(out.stdout.strip().splitlines()[-1])
    _report(manifest.name, manifest.version, results)


def _report(name: str, version: str, results: dict[str, dict]) -> None:
    base = results["baseline"]["sets"]
    print(f"model {name} {version}; {os.cpu_count()} cores; medians (p50) and p95 in ms per image")
    print(f"{'config':<18}{'set':<10}{'decode':>8}{'prep':>7}{'infer':>8}{'foren':>7}{'p50':>8}{'p95':>8}{'img/s':>8}"
          f"{'vs base':>9}{'RSS MB':>8}{'cold ms':>9}")
    for cfg, r in results.items():
        for s, st in r["sets"].items():
            p50 = statistics.median(st["total"])
            ratio = p50 / statistics.median(base[s]["total"])
            ips = st.get("images_per_s", 1000.0 / p50)
            print(f"{cfg:<18}{s:<10}{_med(st, 'decode'):>8}{_med(st, 'preprocess'):>7}{_med(st, 'infer'):>8}{_med(st, 'forensics'):>7}"
                  f"{p50:>8.1f}{_pct(st['total'], 95):>8.1f}{ips:>8.1f}{ratio:>8.2f}x"
                  f"{r['peak_rss_mb']:>8.0f}{r.get('cold_start_ms', float('nan')):>9.0f}")
    print("vs base = pipeline p50 / (pydicom read + decode + SHA-256) p50 for the same file; target <= 1.0x")


def _med(st: dict, key: str) -> str:
    return f"{statistics.median(st[key]):.1f}" if key in st else "-"


if __name__ == "__main__":
    main()
