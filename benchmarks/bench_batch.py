"""Model time per radiograph against the number of tiles per runtime call (``detect._BATCH``).

    python -m benchmarks.bench_batch [--repeat 15] [--model DIR]

The shipped model on RG1 (64 tiles) and RG3 (33 tiles) of pydicom-data, each backend the model
ships for (ONNX Runtime FP32, OpenVINO FP32 IR when present), 2 threads. Batch sizes are timed in
alternating rounds, so a busy spell of the shared machine weighs on all of them; medians, ms per
image, and the ratio against 16 tiles per call (the agent's setting until 2026-12-02). Scores do
not depend on the batch (checked here on every run: max |tile logit| difference).
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

from edge_agent import detect  # noqa: E402
from edge_agent.decode import decode_path  # noqa: E402

BATCHES = (16, 8, 4, 2, 1)
BASELINE = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    from pydicom.data import get_testdata_file

    frames = {n: decode_path(Path(str(get_testdata_file(f"{n}_UNCR.dcm", download=False)))).frames[0] for n in ("RG1", "RG3")}
    model_dir = args.model or detect.default_model_dir()
    print(f"model {model_dir.name}; medians of {args.repeat} runs, ms per image (ratio vs {BASELINE} tiles per call); "
          f"agent default: {detect._BATCH}")
    print(f"{'backend':<13}{'image':<6}" + "".join(f"{'b' + str(b):>15}" for b in BATCHES) + f"{'max diff':>10}")
    for backend in ("onnxruntime", "openvino"):
        try:
            det = detect.open_detector(model_dir, backend=backend, precision="fp32", threads=2)
        except Exception as exc:  # a model shipped without that backend's files
            print(f"{backend:<13}not timed: {exc}")
            continue
        for name, frame in frames.items():
            prep = det.prepare(frame)
            times: dict[int, list[float]] = {b: [] for b in BATCHES}
            logits: dict[int, np.ndarray] = {}
            while len(times[BATCHES[-1]]) < args.repeat:
                for b in BATCHES:
                    detect._BATCH = b
                    logits[b] = det.score(frame, prep).tile_logits  # untimed warm-up
                    for _ in range(min(5, args.repeat - len(times[b]))):
                        t0 = time.perf_counter()
                        det.score(frame, prep)
                        times[b].append((time.perf_counter() - t0) * 1e3)
            med = {b: statistics.median(v) for b, v in times.items()}
            diff = max(float(np.abs(logits[b] - logits[BASELINE]).max()) for b in BATCHES)
            print(f"{backend:<13}{name:<6}" + "".join(f"{med[b]:>8.1f} ({med[b] / med[BASELINE]:.2f})" for b in BATCHES)
                  + f"{diff:>10.1e}")


if __name__ == "__main__":
    main()
