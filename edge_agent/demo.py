"""``edge-agent demo``: the main job end to end on embedded defaults.

Gathers the bundled sample images (``samples/``: real radiographs and fakes made by this
project's own generators, with licences in ``samples/README.md``), the real CR radiographs of
the ``pydicom-data`` package when it is installed, and a copy-move forgery made on the spot from
a real sample; then runs ``scan`` over them with the shipped model, writing heat maps.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from typing import TYPE_CHECKING

from . import scan_cmd

if TYPE_CHECKING:
    import numpy as np

__all__ = ["add_parser", "samples_dir", "copy_move"]


def samples_dir() -> Path:
    here = Path(__file__).resolve().parent
    for d in (here / "bundled_samples", here.parent / "samples"):
        if d.is_dir():
            return d
    raise FileNotFoundError("bundled samples not found (samples/ beside the package)")


def copy_move(image: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Copy a ``size`` x ``size`` block of the image onto another place with a feathered edge,
    the classic copy-move forgery (e.g. duplicating a nodule). Returns the image and the box
    ``(y, x, h, w)`` that was overwritten."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = image.shape
    sy, sx = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 8, w // 3))
    dy, dx = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 2, w - size - w // 8))
    out = image.astype(np.float32).copy()
    ramp = np.minimum(np.arange(size) + 1, np.arange(size)[::-1] + 1).astype(np.float32)
    feather = np.clip(np.minimum.outer(ramp, ramp) / 12.0, 0.0, 1.0)
    src = out[sy : sy + size, sx : sx + size]
    dst = out[dy : dy + size, dx : dx + size]
    out[dy : dy + size, dx : dx + size] = feather * src + (1 - feather) * dst
    return out, (dy, dx, size, size)


def _prepare(out: Path) -> Path:
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    shutil.copytree(samples_dir(), images, ignore=shutil.ignore_patterns("*.md", "LICENSE*"))
    try:
        from pydicom.data import get_testdata_file

        for name in ("RG1_UNCR.dcm", "RG3_J2KR.dcm"):
            src = get_testdata_file(name, download=False)
            if src:
                (images / "real-dicom").mkdir(exist_ok=True)
                shutil.copy(src, images / "real-dicom" / name)
    except ImportError:
        pass
    reals = sorted((images / "real").glob("*.png"))
    if reals:
        import numpy as np
        from PIL import Image

        grey = np.asarray(Image.open(reals[0]).convert("L"), dtype=np.float32)
        forged, _ = copy_move(grey, size=max(32, min(grey.shape) // 6))
        (images / "tampered").mkdir(exist_ok=True)
        Image.fromarray(np.clip(forged, 0, 255).astype(np.uint8), "L").save(images / "tampered" / f"copy-move-{reals[0].name}")
    return images


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("demo", help="scan the bundled samples with the shipped model (main job, embedded defaults)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="where images, heat maps and verdicts go")
    p.add_argument("--backend", default="auto", choices=("auto", "openvino", "onnxruntime"))
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    images = _prepare(args.out)
    print(f"demo: scanning {images} (heat maps in {args.out / 'heatmaps'})")
    scan_args = argparse.Namespace(
        paths=[str(images)], jsonl=False, heatmaps=args.out / "heatmaps", model=None,
        backend=args.backend, precision="auto", threads=2,
    )
    status = scan_cmd.run_scan(scan_args)
    # Flagged images are the point of the demo; only a failure to run is an error.
    return 0 if status in (0, 1) else status
