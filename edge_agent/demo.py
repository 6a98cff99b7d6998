"""``edge-agent demo``: the main job end to end on one machine, on embedded defaults.

Gathers the bundled sample images (``samples/``: real radiographs and fakes made by this
project's own generators, with licences in ``samples/README.md``), the real CR radiographs of
the ``pydicom-data`` package when it is installed, and a copy-move forgery made on the spot from
a real sample. It also renders a detector of its own (:mod:`.demo_device`: a simulated flat panel
that learns its noise profile and fingerprint from ten first acquisitions, as ``edge-agent learn``
does on a device) and the images it "acquires": authentic ones, one from another panel, one with a
pasted region, one generated. Then:

1. ``scan`` over them with the shipped model (or ``--model``): the verdict table, and heat maps
   of where the model saw evidence in ``OUT/heatmaps/``;
2. the whole loop (:mod:`.demo_loop`) in ``OUT/loop/``: a demo fleet CA, Mosquitto on a free
   loopback port with TLS and the generated ACL, the collector on SQLite, the agent judging the
   same images from its hot folder and sending signed verdicts; the collector's verified verdicts
   and alerts are printed, then everything stops (SIGTERM, reverse order).

Exit status: 0 the demo ran (flagged images are its point, not an error); 2 it could not run, or
a step of the loop failed (the message names the step and the logs; nothing is left running).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
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


def _prepare(out: Path) -> tuple[Path, dict[str, str]]:
    """The images to judge, and the ``forensics:`` section of the demo device that acquired some."""
    from .demo_device import make_device

    images = out / "images"
    for old in (images, out / "device"):
        if old.exists():
            shutil.rmtree(old)
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
    forensics = make_device(out / "device", images / "this-device")
    return images, forensics


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("demo", help="the main job on one machine: scan the bundled samples, then CA, broker, "
                                    "collector and agent end to end (loopback only)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="where images, heat maps and the loop's folder go")
    p.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    p.add_argument("--backend", default="auto", choices=("auto", "openvino", "onnxruntime"))
    p.add_argument("--keep", action="store_true",
                   help="keep OUT/loop (CA, keys, configs, logs, the collector's SQLite store) after a clean run")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S",
                   help="how long to wait for the collector to store every verdict (default 180)")
    p.set_defaults(func=run_demo)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM to the demo: unwind, so the loop stops what it started


def run_demo(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    images, forensics = _prepare(args.out)
    device_yaml = args.out / "device" / "device.yaml"
    device_yaml.write_text(json.dumps({"forensics": forensics}, indent=2) + "\n")  # JSON is YAML
    print(f"demo: a simulated detector learned its noise profile and fingerprint from 10 acquisitions "
          f"({args.out / 'device'}); its new images are in {images / 'this-device'}")
    print(f"demo: scanning {images} (heat maps in {args.out / 'heatmaps'}: the model's evidence red, "
          "a missing device fingerprint cyan)")
    scan_args = argparse.Namespace(
        paths=[str(images)], jsonl=False, heatmaps=args.out / "heatmaps", model=args.model,
        backend=args.backend, precision="auto", threads=2, config=device_yaml,
    )
    status = scan_cmd.run_scan(scan_args)
    if status == 2:
        return status  # the model or the arguments are unusable: the loop would fail the same way
    from .demo_loop import run_loop  # the trust and transport stacks load only here

    work = args.out / "loop"
    if work.exists():
        shutil.rmtree(work)
    files = sorted(p for p in images.rglob("*") if p.is_file())
    print(f"\ndemo: the whole loop on this machine, in {work}")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_loop(files, work.resolve(), args.model.resolve() if args.model else None, args.timeout,
                          forensics=forensics)
    finally:
        signal.signal(signal.SIGTERM, previous)
    flagged = sum(1 for v in result.verdicts if v.get("label") in ("suspicious", "synthetic"))
    print(f"demo: done. {len(result.verdicts)} images judged on the device, signed, sent over MQTT/TLS and verified by "
          f"the collector; {flagged} flagged, {len(result.alerts)} alert(s) raised. Clean shutdown.")
    print(f"  heat maps       {args.out / 'heatmaps'}")
    print(f"  images          {images}")
    if args.keep:
        print(f"  loop folder     {work}  (fleet-ca/, broker/, *-identity/, agent.yaml, collector.yaml, logs/)")
        print(f"  collector store {work / 'collector.sqlite3'}: edge-collector verdicts --config {work / 'collector.yaml'}")
    else:
        shutil.rmtree(work)
        print("  loop folder     removed (pass --keep to keep the CA, keys, configs, logs and the collector's store)")
    return 0
