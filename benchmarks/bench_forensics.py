"""Per-image cost of the forensic layers vs the model (issue 6: all layers together must add at
most half of the model's own time per image).

    python -m benchmarks.bench_forensics [--repeat 15] [--model DIR]

Inputs: RG1 and RG3 (pydicom-data CR radiographs, 1955x1841 and 1760x1760: 64 and 33 tiles once
the flat ones are left out) and 512x512 slices (pydicom's CT_small enlarged 4x, as in
bench_pipeline: 4 tiles). The layers get the model's tiles (``grid_tiles``, 256 px, <= 64), as
they will in the pipeline. The model time is the shipped model's when one is installed (ONNX
Runtime, 2 threads), else a stand-in with the same layer shapes (benchmarks/standin_model.py). The fingerprint is the image's own (N=1 enrolment: cost does not
depend on the values); its per-geometry cache is warm, as on a device that keeps one detector size.
Medians, ms per image; the machine is shared, so compare ratios more than absolute numbers. The
model and the layers are timed in alternating rounds, so a busy spell weighs on both sides.

``ratio`` is the layers' own time over the model's (run one after the other); ``added`` is what
they add to the model in the agent's pipeline (``Pipeline.score_frame``: model, physics and
fingerprint of one frame), where, with a fingerprint, the layers run on a second thread while the
model infers (on its narrow session, one thread fewer, for images of fewer than
``CONCURRENT_BELOW_TILES`` tiles): (pipeline - model) / model, ``model`` being the two-thread
session the agent runs when no layer is configured. The agent's
ONNX Runtime session stops its worker threads spinning when a run returns
(``runtime.SPIN_STOP``); ``spin`` times the same model with the runtime's default (workers spin
on), which is faster back to back on small images, and ``model`` in the ratios is the faster of
the two, so the layers are not flattered by a slower model.

``--cold`` times every call after an idle pause with no warm-up call before it, as images arrive
one at a time from an X-ray room (seconds apart) rather than as a burst of CT slices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.decode import decode_path  # noqa: E402
from edge_agent.forensics import FingerprintCheck, NoiseCheck, NoiseProfile, check_metadata, enroll, measure_noise  # noqa: E402
from edge_agent.learn_cmd import COMPUTED_MODALITIES  # noqa: E402
from edge_agent.tiling import grid_tiles  # noqa: E402

TILE, MAX_TILES = 256, 64


def _median_ms(fns: dict[str, Callable[[], object]], repeat: int, block: int = 5,
               settle: float = 0.15, cold: bool = False) -> dict[str, float]:
    """Median ms of each function over ``repeat`` runs, taken in rounds: every round runs each
    function once untimed, then ``block`` times timed. A slow spell of the shared machine then falls
    on the model and the layers alike, so their ratio stays fair. Before each function's turn the
    bench waits ``settle`` s: ONNX Runtime's worker threads keep spinning for ~80 ms after a run
    (measured on RG1), which slows whatever runs next 2-3x; that is the runtime's cost, not the
    layers' (with ``session.intra_op.allow_spinning`` 0 it is gone). ``cold``: one timed call per
    pause and no untimed call before it."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    while len(times[next(iter(fns))]) < repeat:
        for k, fn in fns.items():
            time.sleep(settle)
            if not cold:
                fn()
            for _ in range(1 if cold else min(block, repeat - len(times[k]))):
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _inputs(workdir: Path) -> dict[str, Path]:
    import pydicom
    from pydicom.data import get_testdata_file

    sets = {n: Path(str(get_testdata_file(f"{n}_UNCR.dcm", download=False))) for n in ("RG1", "RG3")}
    ct = pydicom.dcmread(str(get_testdata_file("CT_small.dcm", download=False)))
    big = np.kron(ct.pixel_array, np.ones((4, 4), dtype=ct.pixel_array.dtype))
    ct.PixelData = (big + np.random.default_rng(0).integers(-3, 4, big.shape).astype(big.dtype)).tobytes()
    ct.Rows, ct.Columns = big.shape
    p = workdir / "ct512.dcm"
    ct.save_as(p, enforce_file_format=True)
    sets["CT512"] = p
    return sets


def _model_runner(model: Path | None, workdir: Path
                  ) -> tuple[str, Callable[[np.ndarray], object], Callable[[np.ndarray], object] | None, object | None]:
    """(label, the agent's model, the same model with ONNX Runtime's spinning default or None,
    the detector for the pipeline or None)."""
    global TILE, MAX_TILES
    try:
        from edge_agent import runtime
        from edge_agent.detect import default_model_dir, open_detector

        det = open_detector(model or default_model_dir(), threads=2)
        runtime.SPIN_STOP = False
        try:
            spinning = open_detector(model or default_model_dir(), threads=2)
        finally:
            runtime.SPIN_STOP = True
        TILE, MAX_TILES = det.manifest.tiling.tile, det.manifest.tiling.max_tiles  # the model's own tiles
        return f"shipped model {det.model_ref.name} {det.model_ref.version} ({det.model_ref.backend})", \
            lambda frame: det.score(frame), lambda frame: spinning.score(frame), det
    except Exception:
        from benchmarks.standin_model import StandinRunner, build_standin

        runner = StandinRunner(build_standin(workdir / "standin.onnx"))
        return "stand-in model (same layer shapes, ORT FP32, 2 threads)", \
            lambda frame: runner.run(grid_tiles(frame, TILE, MAX_TILES)[0]), None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--cold", action="store_true", help="time each call after an idle pause, without warm-up")
    args = ap.parse_args()
    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        label, run_model, run_spinning, det = _model_runner(args.model, workdir)
        print(f"{label}; medians of {args.repeat} {'cold ' if args.cold else ''}runs, ms per image")
        print(f"{'set':<7}{'tiles':>6}{'model':>9}{'spin':>7}{'physics':>9}{'fingerpr':>10}{'metadata':>10}{'layers':>9}{'ratio':>8}"
              f"{'fp cold':>9}{'pipeline':>10}{'added':>7}")
        for name, path in _inputs(workdir).items():
            decoded = decode_path(path)
            frame = decoded.frames[0]
            ds = pydicom.dcmread(path)
            tiles, origins = grid_tiles(frame, TILE, MAX_TILES)
            profile = NoiseProfile.fit([measure_noise(tiles)] * 3, modality="")
            noise = NoiseCheck(profile)
            fp_check = FingerprintCheck(enroll([frame]))
            t0 = time.perf_counter()
            fp_check.check(frame, tiles, origins)
            cold = (time.perf_counter() - t0) * 1e3
            fns: dict[str, Callable[[], object]] = {
                "model": lambda: run_model(frame),
                "physics": lambda: noise.check(frame, tiles, origins),
                "fingerprint": lambda: fp_check.check(frame, tiles, origins),
                "metadata": lambda: check_metadata(ds),
            }
            if run_spinning is not None:
                fns["spin"] = lambda: run_spinning(frame)
            if det is not None:
                from edge_agent.evidence import Evidence, EvidenceSettings
                from edge_agent.pipeline import Pipeline

                pipe = Pipeline(det, evidence=Evidence(EvidenceSettings(noise_profile=profile, fingerprint=fp_check.fingerprint)))  # type: ignore[arg-type]
                fns["pipeline"] = lambda: pipe.score_frame(frame, decoded)
            med = _median_ms(fns, args.repeat, cold=args.cold)
            spin = med.get("spin", float("nan"))
            m = min(med["model"], spin) if run_spinning is not None else med["model"]
            tn, tf, tm = med["physics"], med["fingerprint"], med["metadata"]
            total = tn + tf + tm
            pipe_ms = med.get("pipeline", float("nan"))
            added = (pipe_ms + tm - m) / m
            print(f"{name:<7}{len(origins):>6}{med['model']:>9.1f}{spin:>7.1f}{tn:>9.1f}{tf:>10.1f}{tm:>10.2f}{total:>9.1f}{total / m:>8.2f}{cold:>9.0f}"
                  f"{pipe_ms:>10.1f}{added:>7.2f}")
            if det is not None and (decoded.facts.modality or "") in COMPUTED_MODALITIES:
                # edge-agent learn enrols no fingerprint for a CT device: what such a device runs
                plain = Pipeline(det, evidence=Evidence(EvidenceSettings(noise_profile=profile)))  # type: ignore[arg-type]
                med2 = _median_ms({"model": lambda: run_model(frame), "pipeline": lambda: plain.score_frame(frame, decoded)},
                                  args.repeat, cold=args.cold)
                m2 = min(med2["model"], spin) if run_spinning is not None else med2["model"]
                added2 = (med2["pipeline"] + tm - m2) / m2
                label = f"{name} as a {decoded.facts.modality} device runs it (no fingerprint)"
                print(f"{label:<58}{tn + tm:>9.1f}{(tn + tm) / m2:>8.2f}{'':>9}{med2['pipeline']:>10.1f}{added2:>7.2f}")


if __name__ == "__main__":
    main()
