"""``edge-agent learn``: learn this device's noise profile and fingerprint from its own
authentic acquisitions (issue 6: "enroll: estimate the fingerprint from the first N authentic
acquisitions on the device, or from the vendor's flat-field calibration frames").

    edge-agent learn --out /etc/edge-agent/device [--identity /var/lib/edge-agent/identity] /data/first-acquisitions/

reads every image under the given paths with the agent's own decoder, measures the noise of
each frame on the model's tiles as the check reads it (:func:`edge_agent.forensics.noise.image_noise`)
and accumulates the fixed-pattern fingerprint (:class:`edge_agent.forensics.FingerprintEnrollment`, Lukas, Fridrich
& Goljan 2006) over the frames of the detector's native size. It writes ``noise-profile.json``
and ``fingerprint.bin`` (8-bit quantised, a few hundred kB) and prints the ``forensics:`` lines
for ``agent.yaml`` / ``scan --config``, with the fingerprint's SHA-256 pin. With ``--identity``
(the device's enrolment folder, ``edge-agent enroll``) the device key signs both files
(``enrolment.sig.json``, :mod:`edge_agent.trust.enrolment_signing`) and the printed lines make
the agent check that signature against the fleet CA before it uses them.

The images must be authentic output of ONE detector (one modality); what cannot be used is named
on stderr and skipped, and nothing is written unless enough images remain.
Exit status: 0 written; 2 an error (too few usable images, mixed modalities, output exists).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import EdgeAgentError, ForensicsError, UnreadableImage
from .tiling import grid_tiles

if TYPE_CHECKING:
    from .forensics import NoiseFeatures

__all__ = ["add_parser", "learn_device", "Learned", "MIN_IMAGES"]

MIN_IMAGES = 8  # fingerprint local map: N >= 8 gives 99-100 % pointing on simulated panels (docs/forensics.md)


@dataclass
class Learned:
    """What one enrolment produced, before anything is written."""

    profile_json: str
    fingerprint_bytes: bytes
    fingerprint_sha256: str
    modality: str
    shape: tuple[int, int]
    noise_images: int
    fingerprint_images: int
    notes: list[str] = field(default_factory=list)


Frames = Callable[[], Iterable[tuple[str, str, np.ndarray]]]


def learn_device(read: Frames, modality: str | None = None, min_images: int = MIN_IMAGES,
                 fingerprint_model: str = "additive") -> Learned:
    """Noise profile and fingerprint from authentic acquisitions.

    ``read()`` yields ``(name, modality, frame)`` with frames float32 grey in [0, 1] as the agent
    decodes them; it is called twice (noise and sizes, then the fingerprint), so at most one image is
    in memory at a time however many are learned from. The fingerprint takes the frames of the most
    common size (the detector's native grid); the profile takes every frame of the modality.
    Raises :class:`ForensicsError` when fewer than ``min_images`` frames are usable.
    """
    from .forensics import FingerprintEnrollment, NoiseProfile
    from .forensics.noise import image_noise

    if min_images < 2:
        raise ForensicsError(f"min_images {min_images}: at least 2 images are needed to tell a fixed pattern from noise")
    notes: list[str] = []
    seen: list[tuple[str, tuple[int, int], NoiseFeatures | None]] = []  # modality, shape, noise per frame
    for name, m, frame in read():
        tiles, _ = grid_tiles(frame, 256, 64)
        f = image_noise(tiles)
        if f.flat_blocks < 8:
            notes.append(f"{name}: too few flat, unsaturated regions to measure its noise; left out of the profile")
        seen.append((m, (int(frame.shape[0]), int(frame.shape[1])), f if f.flat_blocks >= 8 else None))
    if modality is None:
        named = sorted({m for m, _, _ in seen if m})
        if len(named) > 1:
            raise ForensicsError(f"the images are of several modalities ({', '.join(named)}): a noise profile "
                                 "is per modality; pass --modality to choose one")
        modality = named[0] if named else ""

    def ours(m: str) -> bool:
        return not m or not modality or m == modality

    kept = [(sh, f) for m, sh, f in seen if ours(m)]
    if len(kept) < len(seen):
        notes.append(f"{len(seen) - len(kept)} frame(s) of other modalities left out")
    feats = [f for _, f in kept if f is not None]
    if len(feats) < min_images:
        raise ForensicsError(f"{len(feats)} usable image(s) for the noise profile; at least {min_images} are needed")
    shapes = collections.Counter(sh for sh, _ in kept)
    shape, count = shapes.most_common(1)[0]
    if count < min_images:
        raise ForensicsError(f"only {count} image(s) share the most common size {shape[0]}x{shape[1]}; the fingerprint "
                             f"needs at least {min_images} full-size images of the detector")
    if len(shapes) > 1:
        notes.append(f"{len(kept) - count} frame(s) of another size than {shape[0]}x{shape[1]} left out of the "
                     "fingerprint (it is tied to the detector's native grid)")
    acc = FingerprintEnrollment(shape, fingerprint_model)
    for _, m, frame in read():
        if ours(m) and frame.shape == shape:
            acc.add(frame)
    if acc.images != count:
        raise ForensicsError(f"the images changed while they were read ({acc.images} of {count} found again)")
    fp = acc.finish().quantised(8)
    profile = NoiseProfile.fit(feats, modality=modality, source=f"edge-agent learn: {len(feats)} authentic images")
    return Learned(profile.to_json(), fp.to_bytes(), fp.sha256, modality, shape, len(feats), acc.images, notes)


def _frames(paths: list[str], report: bool) -> Iterator[tuple[str, str, np.ndarray]]:
    from .decode import decode_path
    from .scan_cmd import walk

    lossy = 0
    for path, shown in walk(paths):
        try:
            decoded = decode_path(path)
        except UnreadableImage as exc:
            if report:
                print(f"edge-agent learn: skipped {shown}: {exc}", file=sys.stderr)
            continue
        facts = decoded.facts
        if facts.container in ("jpeg", "webp") or facts.bits_stored <= 8:
            lossy += 1
        for i, frame in enumerate(decoded.frames):
            yield (f"{shown}[{i}]" if len(decoded.frames) > 1 else shown), facts.modality, frame
    if lossy and report:
        print(f"edge-agent learn: warning: {lossy} image(s) are 8-bit or lossy exports; learn from the detector's own "
              "full-bit-depth output where you can (an export keeps little of the fingerprint)", file=sys.stderr)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run_learn(args: argparse.Namespace) -> int:
    out: Path = args.out
    targets = (out / "noise-profile.json", out / "fingerprint.bin")
    sig_path = out / "enrolment.sig.json"
    existing = [p for p in (*targets, sig_path) if p.exists()]
    if existing and not args.force:
        print(f"edge-agent learn: {existing[0]} exists; pass --force to replace it", file=sys.stderr)
        return 2
    try:
        device = None
        if args.identity is not None:  # before the long pass: a broken identity fails fast
            from .trust.enrollment import DeviceState

            device = DeviceState(args.identity).load()
        first = [True]

        def read() -> Iterator[tuple[str, str, np.ndarray]]:
            report, first[0] = first[0], False
            return _frames(args.paths, report)

        learned = learn_device(read, args.modality, args.min_images, args.fingerprint_model)
    except EdgeAgentError as exc:
        print(f"edge-agent learn: {exc}; nothing written", file=sys.stderr)
        return 2
    for note in learned.notes:
        print(f"edge-agent learn: {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    _write(targets[0], learned.profile_json.encode())
    _write(targets[1], learned.fingerprint_bytes)
    if device is not None:
        from .trust.certs import utcnow
        from .trust.enrolment_signing import sign_enrolment

        files = {targets[0].name: learned.profile_json.encode(), targets[1].name: learned.fingerprint_bytes}
        _write(sig_path, sign_enrolment(device.device_id, files, device.key, device.chain, utcnow()))
    elif sig_path.exists():  # --force without --identity: an old signature would not match
        sig_path.unlink()
    h, w = learned.shape
    print(f"# learned from {learned.noise_images} authentic {learned.modality or 'image'} frame(s) (noise profile) and "
          f"{learned.fingerprint_images} of {h}x{w} (fingerprint); add to agent.yaml or a scan --config file:")
    print("forensics:")
    print(f"  noise_profile: {targets[0].resolve()}")
    print(f"  fingerprint: {targets[1].resolve()}")
    print(f"  fingerprint_sha256: {learned.fingerprint_sha256}")
    if device is not None:
        print(f"  enrolment_trust: {(args.identity / 'fleet-ca.pem').resolve()}   # signed by device {device.device_id}")
    print(f"  # refine_profile: {(args.out / 'noise-profile.refined.json').resolve()}   "
          "# let the agent follow slow drift (docs/forensics.md)")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("learn", help="learn this device's noise profile and fingerprint from authentic images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="authentic acquisitions of this detector (files or folders)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for noise-profile.json and fingerprint.bin")
    p.add_argument("--modality", help="use only images of this DICOM modality (e.g. DX, CR)")
    p.add_argument("--min-images", type=int, default=MIN_IMAGES, help=f"fewest usable images (default {MIN_IMAGES})")
    p.add_argument("--fingerprint-model", default="additive", choices=("additive", "multiplicative"),
                   help="how the fixed pattern enters the image (docs/forensics.md)")
    p.add_argument("--identity", type=Path, metavar="DIR",
                   help="the device's enrolment folder (edge-agent enroll): sign what was learned with the device key")
    p.add_argument("--force", action="store_true", help="replace an existing profile and fingerprint")
    p.set_defaults(func=run_learn)
