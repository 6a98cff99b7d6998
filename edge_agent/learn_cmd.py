"""``edge-agent learn``: learn this device's noise profile and fingerprint from its own
authentic acquisitions (issue 6: "enroll: estimate the fingerprint from the first N authentic
acquisitions on the device, or from the vendor's flat-field calibration frames").

    edge-agent learn --out /etc/edge-agent/device [--identity /var/lib/edge-agent/identity] /data/first-acquisitions/
    edge-agent learn --out DIR --flat-fields /factory/flat-fields/ [/data/first-acquisitions/]

reads every image under the given paths with the agent's own decoder, measures the noise of
each frame on the model's tiles as the check reads it (:func:`edge_agent.forensics.noise.image_noise`)
and accumulates the fixed-pattern fingerprint (:class:`edge_agent.forensics.FingerprintEnrollment`, Lukas, Fridrich
& Goljan 2006) over the frames of the detector's native size. It writes ``noise-profile.json``
and ``fingerprint.bin`` (8-bit quantised, a few hundred kB) and prints the ``forensics:`` lines
for ``agent.yaml`` / ``scan --config``, with the fingerprint's SHA-256 pin. With ``--identity``
(the device's enrolment folder, ``edge-agent enroll``) the device key signs both files
(``enrolment.sig.json``, :mod:`edge_agent.trust.enrolment_signing`) and the printed lines make
the agent check that signature against the fleet CA before it uses them.

It also runs the detector on the acquisitions and writes ``model-calibration.json``: percentiles
of the model's score on this device's authentic images against the same on its own validation
reals, so the agent reads the model's score on this device's scale (:mod:`edge_agent.site_calibration`;
a device the model never saw can otherwise raise far more false alarms than the 1 % its threshold
was set for). It needs at least 20 acquisitions and is skipped, with a note, below that or with
``--no-model-calibration``; learn again after a model update.

With ``--flat-fields`` the fingerprint comes from the vendor's flat-field calibration frames
(uniform exposures; no patient image needed, so a vendor can enrol at the factory) and the
acquisitions, if given, teach only the noise profile (a flat frame has one grey level: it cannot
show how noise follows the signal); without acquisitions no profile is written.

The fingerprint is a projection detector's (CR, DX, MG, IO, RF, XA): a CT, MR, PET,
nuclear-medicine or ultrasound image is computed from many readings, and its pixels carry no
detector's fixed pattern, so for those modalities only the noise profile and the model
calibration are learned (a fingerprint enrolled from them would call every later image
"absent"). For the same reason no fingerprint is written when the images share no fixed pattern
(fewer than a quarter of the 16-px blocks carry one: processed or resampled exports, or images of
several devices); the note says so.

The images must be authentic output of ONE detector (one modality); what cannot be used is named
on stderr and skipped, and nothing is written unless enough images remain.
Exit status: 0 written; 2 an error (too few usable images, mixed modalities, output exists, nothing learned).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import EdgeAgentError, ForensicsError, UnreadableImage
from .durable import write_atomically
from .tiling import grid_tiles

if TYPE_CHECKING:
    from .forensics import NoiseFeatures
    from .manifest import ModelManifest

__all__ = ["add_parser", "learn_device", "Learned", "MIN_IMAGES"]

MIN_IMAGES = 8  # fingerprint local map: N >= 8 gives 99-100 % pointing on simulated panels (docs/forensics.md)
# Reconstructed or otherwise computed images: no detector pixel grid, so no fingerprint is enrolled.
COMPUTED_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "US"})
# projection radiography (PS3.3 C.7.3.1.1.1): a detector whose fixed pattern lies on the pixel grid
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA", "RG", "DF"})
MIN_PATTERN_SHARE = 0.25  # share of 16-px blocks whose enrolled pattern is mostly sensor, below which none is written


@dataclass
class Learned:
    """What one enrolment produced, before anything is written."""

    profile_json: str | None  # None: learned from flat-field frames only, no noise profile
    fingerprint_bytes: bytes | None  # None: no fingerprint (a modality without one, or no fixed pattern found)
    fingerprint_sha256: str | None
    modality: str
    shape: tuple[int, int] | None
    noise_images: int
    fingerprint_images: int
    notes: list[str] = field(default_factory=list)
    model_logits: list[float] = field(default_factory=list)  # the detector's, one per file of the modality
    fingerprint_modality: str = ""  # the images the fingerprint judges ("": any)


Frames = Callable[[], Iterable[tuple[str, str, np.ndarray]]]


def learn_device(read: Frames | None, modality: str | None = None, min_images: int = MIN_IMAGES,
                 fingerprint_model: str = "additive", flat_fields: Frames | None = None,
                 score: Callable[[np.ndarray], float | None] | None = None) -> Learned:
    """Noise profile and fingerprint from authentic acquisitions.

    ``read()`` yields ``(name, modality, frame)`` with frames float32 grey in [0, 1] as the agent
    decodes them; it is called twice (noise and sizes, then the fingerprint), so at most one image is
    in memory at a time however many are learned from. The fingerprint takes the frames of the most
    common size (the detector's native grid); the profile takes every frame of the modality.
    ``flat_fields()``, when given, yields the vendor's flat-field calibration frames (uniform
    exposures, no anatomy): the fingerprint is enrolled from them instead, and ``read`` (may then be
    ``None``: no noise profile) feeds only the profile; flat frames have one grey level, so they
    cannot teach how noise follows the signal. ``score(frame)``, when given, is the detector's image
    logit: it is taken of the first frame of every file of exactly the modality (``Learned.model_logits``).
    Raises :class:`ForensicsError` when fewer than ``min_images`` frames are usable.
    """
    from .forensics import FingerprintEnrollment

    if min_images < 2:
        raise ForensicsError(f"min_images {min_images}: at least 2 images are needed to tell a fixed pattern from noise")
    if read is None and flat_fields is None:
        raise ForensicsError("nothing to learn from: give acquisitions, flat-field frames, or both")
    notes: list[str] = []
    profile_json, noise_images, shapes = None, 0, collections.Counter[tuple[int, int]]()
    logits: list[float] = []
    if read is not None:
        profile_json, noise_images, modality, shapes, logits = _learn_profile(read, modality, min_images, notes, score)
    source, chosen, fp_modality = read, modality, (modality or "").strip().upper()
    if flat_fields is not None:
        acquired = shapes.most_common(1)[0][0] if shapes else None
        source, chosen = flat_fields, None  # every flat frame is this detector's
        shapes, named = collections.Counter[tuple[int, int]](), set()
        for _, m, f in flat_fields():
            shapes[(int(f.shape[0]), int(f.shape[1]))] += 1
            if m.strip():
                named.add(m.strip().upper())
        # the fingerprint is the flat frames' alone: their modality, if they all name one projection
        # modality (the same factory enrolment then gives the same signed bytes when acquisitions of
        # that modality join it later). Calibration frames labelled otherwise (OT) would leave every
        # clinical image unsearched: then the acquisitions' modality (or --modality), or none.
        flat_modality = named.pop() if len(named) == 1 else ""
        if flat_modality in PROJECTION_MODALITIES and fp_modality in ("", flat_modality):
            fp_modality = flat_modality
        elif flat_modality and flat_modality != fp_modality:
            notes.append(f"the flat-field frames are labelled modality {flat_modality}; the fingerprint is recorded for "
                         + (f"{fp_modality} images ({'the acquisitions' if read is not None else '--modality'})"
                            if fp_modality else "images of any modality"))
        modality = modality or ""
        if acquired is not None and shapes and acquired not in shapes:
            flat = shapes.most_common(1)[0][0]
            fits = min(acquired) <= min(flat) and max(acquired) <= max(flat)  # inside it, in some orientation
            notes.append(f"the acquisitions are {acquired[0]}x{acquired[1]} but the flat-field frames "
                         f"{flat[0]}x{flat[1]}: " + (
                             "images of the acquisitions' size are checked where the search finds them inside the "
                             "flat-field frame (a crop, turned or mirrored: fingerprint.placed), and not at all if "
                             "they were scaled" if fits else
                             "images of the acquisitions' size will not be checked against the fingerprint "
                             "(fingerprint.geometry_mismatch)") + "; enrol from frames at the size the detector delivers")
    assert source is not None
    if flat_fields is None and modality in COMPUTED_MODALITIES:
        notes.append(f"no fingerprint: {modality} images are computed from many detector readings and carry no "
                     "detector's fixed pattern at their pixel grid (the fingerprint is for projection radiography: "
                     "CR, DX, MG, IO, RF, XA); the noise profile and model calibration are learned")
        return Learned(profile_json, None, None, modality, None, noise_images, 0, notes, logits)
    if not shapes:
        raise ForensicsError("no usable frame to enrol the fingerprint from")
    shape, count = shapes.most_common(1)[0]
    if count < min_images:
        raise ForensicsError(f"only {count} image(s) share the most common size {shape[0]}x{shape[1]}; the fingerprint "
                             f"needs at least {min_images} full-size images of the detector")
    if len(shapes) > 1:
        notes.append(f"{sum(shapes.values()) - count} frame(s) of another size than {shape[0]}x{shape[1]} left out of "
                     "the fingerprint (it is tied to the detector's native grid)")
    acc = FingerprintEnrollment(shape, fingerprint_model)
    for _, m, frame in source():
        if _of_modality(m, chosen) and frame.shape == shape:
            acc.add(frame)
    if acc.images != count:
        raise ForensicsError(f"the images changed while they were read ({acc.images} of {count} found again)")
    fp = replace(acc.finish(), modality=fp_modality).quantised(8)  # the check then leaves other modalities unsearched
    carried = float((fp.predictor > 0).mean())
    if carried < MIN_PATTERN_SHARE:
        # simulator (scratch check, docs/forensics.md): one panel's images carry a pattern in 54 % of the
        # blocks from 2 images, 97 % from 4; different panels' or generated images in at most 1 %
        # (tests/test_learn_device.py: ten images of one panel against one image each of ten panels)
        notes.append(f"no fingerprint: the {acc.images} image(s) of {shape[0]}x{shape[1]} share a fixed pattern in only "
                     f"{100 * carried:.0f} % of the image (a detector's own output shows it in most of it): they are "
                     "not one detector's native images (processed or resampled exports, or several devices'); a "
                     "fingerprint from them would call later images 'absent'. " + (
                         "Check that the flat-field frames are this detector's own, at its native size"
                         if flat_fields is not None else
                         "Enrol from the detector's unprocessed acquisitions or its flat-field frames (--flat-fields)"))
        return Learned(profile_json, None, None, modality or "", shape, noise_images, 0, notes, logits)
    return Learned(profile_json, fp.to_bytes(), fp.sha256, modality or "", shape, noise_images, acc.images, notes, logits,
                   fp.modality)


_LATER_FRAME = re.compile(r"\[[1-9][0-9]*\]$")  # "file.dcm[3]": a frame after the first (see _frames)


def _of_modality(m: str, chosen: str | None) -> bool:
    """A frame of modality ``m`` counts as this device's (no modality on either side: it does)."""
    return not m or not chosen or m == chosen


def _learn_profile(read: Frames, modality: str | None, min_images: int, notes: list[str],
                   score: Callable[[np.ndarray], float | None] | None = None
                   ) -> tuple[str, int, str, collections.Counter[tuple[int, int]], list[float]]:
    """One pass over the acquisitions: the noise profile (JSON), how many frames it learned from,
    the modality, the frame sizes of that modality and the detector's logits on them."""
    from .forensics import NoiseProfile
    from .forensics.noise import image_noise

    seen: list[tuple[str, tuple[int, int], NoiseFeatures | None, float | None]] = []  # modality, shape, noise, logit
    for name, m, frame in read():
        tiles, _ = grid_tiles(frame, 256, 64)
        f = image_noise(tiles)
        if f.flat_blocks < 8:
            notes.append(f"{name}: too few flat, unsaturated regions to measure its noise; left out of the profile")
        # one logit per FILE (a cine series must not count as 20 acquisitions): frame 0 of a multi-frame file
        logit = score(frame) if score is not None and not _LATER_FRAME.search(name) else None
        seen.append((m, (int(frame.shape[0]), int(frame.shape[1])), f if f.flat_blocks >= 8 else None, logit))
    if modality is None:
        named = sorted({m for m, _, _, _ in seen if m})
        if len(named) > 1:
            raise ForensicsError(f"the images are of several modalities ({', '.join(named)}): a noise profile "
                                 "is per modality; pass --modality to choose one")
        modality = named[0] if named else ""
    kept = [(sh, f) for m, sh, f, _ in seen if _of_modality(m, modality)]
    logits = [lo for m, _, _, lo in seen if lo is not None and m == modality]  # exactly: see site_calibration
    if len(kept) < len(seen):
        notes.append(f"{len(seen) - len(kept)} frame(s) of other modalities left out")
    feats = [f for _, f in kept if f is not None]
    if len(feats) < min_images:
        raise ForensicsError(f"{len(feats)} usable image(s) for the noise profile; at least {min_images} are needed")
    profile = NoiseProfile.fit(feats, modality=modality, source=f"edge-agent learn: {len(feats)} authentic images")
    return profile.to_json(), len(feats), modality, collections.Counter(sh for sh, _ in kept), logits


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


CALIBRATION_NAME = "model-calibration.json"


def _model_scorer(args: argparse.Namespace, notes: list[str]
                  ) -> tuple[Callable[[np.ndarray], float | None] | None, ModelManifest | None]:
    """The detector's image logit, for the site calibration; (None, None) when it is not wanted or
    cannot be had (said in ``notes``: the enrolment itself does not depend on it)."""
    if args.no_model_calibration or not args.paths:
        return None, None
    from .detect import open_detector
    from .site_calibration import reference_quantiles

    try:
        model, backend, precision, anchor = args.model, args.backend, args.precision, None
        if args.config is not None:  # the agent's own model settings, unless given here
            from .config import load_config

            cfg = load_config(args.config).model
            model, backend, precision = cfg.chosen(model, backend, precision)
            anchor = cfg.trust_anchor.read_bytes() if cfg.trust_anchor is not None else None
        det = open_detector(model, backend, precision, threads=2, trust_anchor=anchor)
        reference_quantiles(det.manifest)
    except EdgeAgentError as exc:
        notes.append(f"no model calibration: {exc}")
        return None, None

    def score(frame: np.ndarray) -> float | None:
        try:
            return det.score(frame).logit
        except Exception as exc:  # one odd frame must not cost the enrolment
            notes.append(f"the model could not score a frame ({type(exc).__name__}: {exc}); left out of the calibration")
            return None
    return score, det.manifest


def _calibration(learned: Learned, manifest: ModelManifest | None, notes: list[str]) -> bytes | None:
    from .site_calibration import MIN_IMAGES as CAL_MIN, SiteCalibration

    if manifest is None:
        return None
    if len(learned.model_logits) < CAL_MIN:
        notes.append(f"no model calibration: {len(learned.model_logits)} acquisition(s) of the modality; it needs at "
                     f"least {CAL_MIN} files (frames of one file count once; the 90th percentile of fewer moves too "
                     "much between sets of images)")
        return None
    try:
        cal = SiteCalibration.learn(learned.model_logits, manifest,
                                    f"edge-agent learn: {len(learned.model_logits)} authentic {learned.modality or 'image'} file(s)",
                                    learned.modality)
    except ValueError as exc:
        notes.append(f"no model calibration: {exc}")
        return None
    if cal.large:
        notes.append(f"warning: this device's authentic images score far above the model's scale (offset "
                     f"{cal.offset:.1f} logits): the model hardly tells them from fakes, so after calibration it will "
                     "pass most fakes too; rely on the fingerprint and physics checks and report the device to the "
                     "model's vendor (docs/site-calibration.md)")
    return cal.to_json().encode()


def run_learn(args: argparse.Namespace) -> int:
    out: Path = args.out
    targets = (out / "noise-profile.json", out / "fingerprint.bin")
    sig_path = out / "enrolment.sig.json"
    cal_path = out / CALIBRATION_NAME
    existing = [p for p in (*targets, cal_path, sig_path) if p.exists()]
    if existing and not args.force:
        print(f"edge-agent learn: {existing[0]} exists; pass --force to replace it", file=sys.stderr)
        return 2
    try:
        device = None
        if args.identity is not None:  # before the long pass: a broken identity fails fast
            from .trust.enrollment import DeviceState

            device = DeviceState(args.identity).load()
        if not args.paths and not args.flat_fields:
            raise ForensicsError("give acquisitions (PATH...), flat-field frames (--flat-fields PATH...), or both")

        def reader(paths: list[str]) -> Frames:
            first = [True]

            def read() -> Iterator[tuple[str, str, np.ndarray]]:
                report, first[0] = first[0], False
                return _frames(paths, report)
            return read

        early: list[str] = []
        score, manifest = _model_scorer(args, early)
        learned = learn_device(reader(args.paths) if args.paths else None, args.modality, args.min_images,
                               args.fingerprint_model, reader(args.flat_fields) if args.flat_fields else None, score)
    except EdgeAgentError as exc:
        print(f"edge-agent learn: {exc}; nothing written", file=sys.stderr)
        return 2
    learned.notes[:0] = early
    calibration = _calibration(learned, manifest, learned.notes)
    for note in learned.notes:
        print(f"edge-agent learn: {note}", file=sys.stderr)
    if learned.profile_json is None and learned.fingerprint_bytes is None and calibration is None:
        # before anything is replaced or signed: an enrolment that learned nothing leaves the old one
        print("edge-agent learn: nothing was learned (see the notes above); nothing written", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    if learned.fingerprint_bytes is not None:
        files[targets[1].name] = learned.fingerprint_bytes
    elif targets[1].exists():  # --force: the folder holds exactly what this enrolment learned
        targets[1].unlink()
    if learned.profile_json is not None:
        files[targets[0].name] = learned.profile_json.encode()
    elif targets[0].exists():
        targets[0].unlink()
    if calibration is not None:
        files[CALIBRATION_NAME] = calibration
    elif cal_path.exists():
        cal_path.unlink()
    for name, data in files.items():
        write_atomically(out / name, data)
    if device is not None:
        from .trust.certs import utcnow
        from .trust.enrolment_signing import sign_enrolment

        write_atomically(sig_path, sign_enrolment(device.device_id, files, device.key, device.chain, utcnow()))
    elif sig_path.exists():  # --force without --identity: an old signature would not match
        sig_path.unlink()
    whence = "flat-field frame(s)" if args.flat_fields else "frame(s)"
    parts = [f"{learned.noise_images} authentic {learned.modality or 'image'} frame(s) (noise profile)"
             if learned.profile_json is not None else ""]
    if learned.fingerprint_bytes is not None and learned.shape is not None:
        judges = f", for {learned.fingerprint_modality} images" if learned.fingerprint_modality else ""
        parts.append(f"{learned.fingerprint_images} {whence} of {learned.shape[0]}x{learned.shape[1]} (fingerprint{judges})")
    else:
        parts.append("no fingerprint (see the note above)")
    print(f"# learned from {' and '.join(p for p in parts if p)}; add to agent.yaml or a scan --config file:")
    print("forensics:")
    if learned.profile_json is not None:
        print(f"  noise_profile: {targets[0].resolve()}")
    if learned.fingerprint_bytes is not None:
        print(f"  fingerprint: {targets[1].resolve()}")
        print(f"  fingerprint_sha256: {learned.fingerprint_sha256}")
    if calibration is not None:
        print(f"  model_calibration: {cal_path.resolve()}   # the model's scale on this device "
              "(docs/site-calibration.md); learn again after a model update")
    if device is not None:
        print(f"  enrolment_trust: {(args.identity / 'fleet-ca.pem').resolve()}   # signed by device {device.device_id}")
    if learned.profile_json is not None:
        print("  # refine_profile: STATE_DIR/noise-profile.refined.json   # a file the agent may write, beside its "
              "state: let it follow slow drift (docs/forensics.md)")
        if device is not None:
            print(f"  # device_identity: {args.identity.resolve()}   # with refine_profile: the device key signs "
                  "what the agent learns (required with enrolment_trust)")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("learn", help="learn this device's noise profile and fingerprint from authentic images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH", help="authentic acquisitions of this detector (files or folders)")
    p.add_argument("--flat-fields", action="append", metavar="PATH", default=[],
                   help="the vendor's flat-field calibration frames of this detector (a file or folder; repeat for "
                        "more): enrol the fingerprint from them (e.g. at the factory); PATHs, if any, then teach only "
                        "the noise profile")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for noise-profile.json and fingerprint.bin")
    p.add_argument("--modality", help="use only images of this DICOM modality (e.g. DX, CR)")
    p.add_argument("--min-images", type=int, default=MIN_IMAGES, help=f"fewest usable images (default {MIN_IMAGES})")
    p.add_argument("--fingerprint-model", default="additive", choices=("additive", "multiplicative"),
                   help="how the fixed pattern enters the image (docs/forensics.md)")
    p.add_argument("--identity", type=Path, metavar="DIR",
                   help="the device's enrolment folder (edge-agent enroll): sign what was learned with the device key")
    p.add_argument("--model", type=Path, metavar="DIR",
                   help="the model the agent runs (default: the shipped one), for the site calibration")
    p.add_argument("--backend", default="auto", choices=("auto", "openvino", "onnxruntime"),
                   help="the runtime the agent uses (model.backend), so the calibration is on its scale")
    p.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"),
                   help="the precision the agent uses (model.precision)")
    p.add_argument("--config", type=Path, metavar="AGENT_YAML",
                   help="take the model, backend, precision and trust anchor from the agent's config (its model: "
                        "section), so the calibration is on the scale the agent reads; --model/--backend/--precision "
                        "still override")
    p.add_argument("--no-model-calibration", action="store_true",
                   help="do not measure the model on the acquisitions (no model-calibration.json)")
    p.add_argument("--force", action="store_true", help="replace an existing profile and fingerprint")
    p.set_defaults(func=run_learn)
