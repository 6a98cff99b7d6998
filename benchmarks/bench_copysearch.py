"""Per-image cost of the copy search (``forensics.copy_search``, off by default) against the model.

    python -m benchmarks.bench_copysearch [--repeat 5] [--model DIR]

Same inputs, model and timing rounds as ``benchmarks.bench_forensics`` (RG1 1955x1841, RG3
1760x1760, a 512x512 CT slice; ONNX Runtime, 2 threads). ``blocks`` is the number of blocks the
search correlates with the whole image (one FFT pair each); ``ratio`` is the search's time over the
model's. Medians, ms per image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_forensics import _inputs, _median_ms, _model_runner  # noqa: E402
from edge_agent.decode import decode_path  # noqa: E402
from edge_agent.forensics.copysearch import CopySearch, block_count  # noqa: E402
from edge_agent.tiling import grid_tiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    search = CopySearch()
    with tempfile.TemporaryDirectory() as tmp:
        label, run_model, _, det = _model_runner(args.model, Path(tmp))
        tile = det.manifest.tiling.tile if det is not None else 256
        print(f"{label}; medians of {args.repeat} runs, ms per image")
        print(f"{'set':<7}{'size':>11}{'blocks':>8}{'model':>9}{'copy':>9}{'ratio':>8}")
        for name, path in _inputs(Path(tmp)).items():
            frame = decode_path(path).frames[0]
            tiles, origins = grid_tiles(frame, tile, 64)
            blocks = block_count(frame.shape)
            med = _median_ms({"model": lambda: run_model(frame),
                              "copy": lambda: search.check(frame, tiles, origins)}, args.repeat, block=1)
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            print(f"{name:<7}{size:>11}{blocks:>8}{med['model']:>9.1f}{med['copy']:>9.1f}{med['copy'] / med['model']:>8.1f}")


if __name__ == "__main__":
    main()
