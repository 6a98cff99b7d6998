"""Evaluate the forensic layers (issue 6): detector fingerprint and noise physics on the physics
simulator, metadata rules on the real DICOM files shipped with pydicom, pydicom-data, pynetdicom.

    python -m benchmarks.eval_forensics                # everything (~5-8 min on 2 busy cores)
    python -m benchmarks.eval_forensics --only metadata
    python -m benchmarks.eval_forensics --scale 0.3    # fewer images, for a quick look
    python -m benchmarks.eval_forensics --only calibration   # the local map's settings, on other panels
    python -m benchmarks.eval_forensics --only flat    # fingerprint enrolled from flat-field frames

Prints markdown tables (the ones in docs/forensics.md). Everything is seeded; the simulator is
``edge_agent.forensics.simulator``. Real-panel validation is NOT here: it needs raw frames from
real detectors (see docs/forensics.md).
"""

from __future__ import annotations

import argparse
import collections
import glob
import inspect
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.forensics.fingerprint import Fingerprint, FingerprintEnrollment  # noqa: E402
from edge_agent.forensics.fingerprint_check import FingerprintCheck  # noqa: E402
from edge_agent.forensics.noise import NoiseCheck, NoiseProfile, image_noise  # noqa: E402
from edge_agent.forensics.simulator import (  # noqa: E402
    Panel, PanelSpec, copy_move, generated_like, jpeg_roundtrip, splice)
from edge_agent.tiling import grid_tiles  # noqa: E402

SHAPE = (512, 640)
TILE, MAX_TILES = 256, 64
ENROLLED = (101, 102, 103)
OTHERS = (104, 105, 106, 107, 108)
PROFILE_PANELS = (201, 202, 203, 204)  # the noise profile is learned on panels never tested
CALIBRATION = (301, 302, 303, 311, 312, 313, 314, 315, 316)  # local-map settings are chosen here, never tested
CALIBRATION_DONORS = (304, 305, 306, 307, 308)
NS = (1, 2, 4, 8, 16, 32)
LOCAL_Z = float(inspect.signature(FingerprintCheck).parameters["local_z"].default)  # the shipped default


def tpr_at_fpr(neg: np.ndarray, pos: np.ndarray, fpr: float = 1e-3) -> tuple[float, float, int]:
    """Higher = more suspicious. Threshold: the smallest value that at most ``fpr`` of the
    negatives reach; returns (TPR, achieved FPR, negatives). With fewer than 1/fpr negatives the
    achievable FPR is 0 at the maximum negative score (reported as such)."""
    neg, pos = np.sort(np.asarray(neg, float)), np.asarray(pos, float)
    allowed = int(np.floor(fpr * len(neg)))
    thr = neg[len(neg) - 1 - allowed]  # scores strictly above this are flagged
    return float(np.mean(pos > thr)), float(np.mean(neg > thr)), len(neg)


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    neg, pos = np.asarray(neg, float), np.asarray(pos, float)
    allv = np.concatenate([neg, pos])
    ranks = allv.argsort().argsort() + 1.0
    return float((ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(neg) * len(pos)))


@dataclass
class Sample:
    kind: str
    image: np.ndarray
    mask: np.ndarray | None = None


def _n(x: int, scale: float) -> int:
    return max(4, int(round(x * scale)))


def evaluate_fingerprint_and_noise(scale: float, out: list[str]) -> None:
    t0 = time.perf_counter()
    rng = np.random.default_rng(20261122)
    panels = {s: Panel(PanelSpec(s, shape=SHAPE)) for s in ENROLLED + OTHERS + PROFILE_PANELS}

    # --- noise profile, learned on panels that are never tested
    feats = []
    for i in range(_n(240, scale)):
        img = panels[PROFILE_PANELS[i % len(PROFILE_PANELS)]].acquire(rng)
        tiles, _ = grid_tiles(img, TILE, MAX_TILES)
        feats.append(image_noise(tiles))
    profile = NoiseProfile.fit(feats, modality="DX", source="simulator panels 201-204")
    noise = NoiseCheck(profile)

    # --- enrolment, with snapshots at each N
    fps: dict[int, dict[int, Fingerprint]] = {}
    for s in ENROLLED:
        acc = FingerprintEnrollment(SHAPE)
        fps[s] = {}
        for k in range(1, max(NS) + 1):
            acc.add(panels[s].acquire(rng))
            if k in NS:
                fps[s][k] = acc.finish().quantised(8)
    t_enrol = time.perf_counter() - t0

    # --- test images per enrolled panel
    n_auth, n_foreign, n_gen, n_tamper = _n(340, scale), _n(100, scale), _n(40, scale), _n(40, scale)
    rows: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    point: dict[str, list] = collections.defaultdict(list)
    local_alarm: dict[str, list] = collections.defaultdict(list)
    noise_scores: dict[str, list] = collections.defaultdict(list)
    curve: dict[int, dict[str, list]] = {k: collections.defaultdict(list) for k in NS}
    others_all = [p for p in ENROLLED + OTHERS]
    for s in ENROLLED:
        checks = {k: FingerprintCheck(fps[s][k]) for k in NS}
        main = checks[max(NS)]
        samples: list[Sample] = []
        samples += [Sample("authentic", panels[s].acquire(rng)) for _ in range(n_auth)]
        foreign = [p for p in others_all if p != s]
        samples += [Sample("foreign", panels[foreign[i % len(foreign)]].acquire(rng)) for i in range(n_foreign)]
        samples += [Sample(f"generated:{k}", generated_like(rng, SHAPE, k))
                    for k in ("uniform_grain", "too_smooth", "upsampled", "physics_noise") for _ in range(n_gen // 2)]
        for i in range(n_tamper):
            donor = panels[foreign[i % len(foreign)]].acquire(rng)
            img, mask = splice(panels[s].acquire(rng), donor, rng)
            samples.append(Sample("splice", img, mask))
            img, mask = copy_move(panels[s].acquire(rng), rng)
            samples.append(Sample("copy_move", img, mask))
        for j, smp in enumerate(samples):
            for cond in ("none", "jpeg90", "jpeg75"):
                if cond != "none" and not (smp.kind == "authentic" and j % 3 == 0 or smp.kind != "authentic"):
                    continue  # JPEG: a third of the authentic images, all of the others
                img = smp.image if cond == "none" else jpeg_roundtrip(smp.image, 90 if cond == "jpeg90" else 75)
                tiles, origins = grid_tiles(img, TILE, MAX_TILES)
                m = main.measure(img, tiles, origins)
                kind = smp.kind.split(":")[0]
                rows[cond][kind].append(-m.pce)
                if kind == "generated":
                    rows[cond][smp.kind].append(-m.pce)
                zmax = float(m.mismatch_z.max())
                local_alarm[f"{cond}:{kind}"].append(zmax)
                if smp.mask is not None:
                    n, yy, xx = m.peak()
                    oy, ox = origins[n]
                    cy, cx = oy + yy * m.cell + m.cell // 2, ox + xx * m.cell + m.cell // 2
                    point[f"{cond}:{kind}"].append(bool(smp.mask[cy, cx]))
                nf = noise.check(img, tiles, origins)
                noise_scores[f"{cond}:{smp.kind}"].append(nf.score if nf.score is not None else 0.0)
                if cond == "none" and (smp.kind in ("authentic", "foreign", "generated:uniform_grain",
                                                    "generated:physics_noise") or smp.mask is not None) and j % 3 == 0:
                    for k in NS:
                        mk = checks[k].measure(img, tiles, origins)
                        curve[k][kind].append(-mk.pce)
                        curve[k][f"z:{kind}"].append(float(mk.mismatch_z.max()))
                        if smp.mask is not None:
                            n, yy, xx = mk.peak()
                            oy, ox = origins[n]
                            curve[k][f"pt:{kind}"].append(bool(smp.mask[oy + yy * mk.cell + mk.cell // 2,
                                                                         ox + xx * mk.cell + mk.cell // 2]))
    elapsed = time.perf_counter() - t0

    out.append(f"### Detector fingerprint (simulated panels {SHAPE[0]}x{SHAPE[1]}, fingerprint from N=32 images, int8)\n")
    out.append("Statistic: overall PCE (lower = fingerprint absent). Threshold for 0.1 % FPR set on the authentic "
               "images of the same condition. (Splice/copy-move rows: the global statistic is not meant to see "
               "them - the rest of the image carries the pattern; the local map below is.)\n")
    out.append("| condition | class | n | AUC | TPR @ 0.1 % FPR | achieved FPR (authentic n) | flagged at PCE<50 | median PCE |")
    out.append("|---|---|---|---|---|---|---|---|")
    for cond in ("none", "jpeg90", "jpeg75"):
        neg = np.array(rows[cond]["authentic"])
        for kind in ("foreign", "generated", "generated:uniform_grain", "generated:too_smooth", "generated:upsampled",
                     "generated:physics_noise", "splice", "copy_move"):
            pos = np.array(rows[cond][kind])
            if len(pos) == 0:
                continue
            tpr, fpr, nn = tpr_at_fpr(neg, pos)
            out.append(f"| {cond} | {kind} | {len(pos)} | {auc(neg, pos):.4f} | {tpr:.3f} | {fpr:.4f} ({nn}) | "
                       f"{np.mean(-pos < 50):.3f} | {np.median(-pos):.0f} |")
        out.append(f"| {cond} | authentic | {len(neg)} | - | - | - | {np.mean(-neg < 50):.4f} (false) | {np.median(-neg):.0f} |")
    out.append("")
    out.append("### Local tampering (fingerprint mismatch map, 32-px cells, 3x3-cell windows; only for images whose "
               "fingerprint is present)\n")
    out.append(f"| condition | class | n | pointing game (peak inside mask) | flagged (z >= {LOCAL_Z:g}) | "
               f"authentic flagged (z >= {LOCAL_Z:g}) | TPR @ 0.1 % FPR (max z) |")
    out.append("|---|---|---|---|---|---|---|")
    for cond in ("none", "jpeg90", "jpeg75"):
        auth_z = np.array(local_alarm[f"{cond}:authentic"])
        for kind in ("splice", "copy_move"):
            pts = point[f"{cond}:{kind}"]
            z = np.array(local_alarm[f"{cond}:{kind}"])
            out.append(f"| {cond} | {kind} | {len(pts)} | {np.mean(pts):.3f} | {np.mean(z >= LOCAL_Z):.3f} | "
                       f"{np.mean(auth_z >= LOCAL_Z):.4f} of {len(auth_z)} | {tpr_at_fpr(auth_z, z)[0]:.3f} |")
    out.append("")
    out.append("### How many enrolment images (uncompressed; a third of the test images per N)\n")
    out.append(f"| N | min authentic PCE | median authentic PCE | foreign flagged (PCE<50) | generated flagged | authentic flagged | "
               f"TPR foreign+generated @ 0.1 % FPR | pointing game (splice+copy-move) | local alarm on authentic (z >= {LOCAL_Z:g}) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for k in NS:
        c = curve[k]
        neg = np.array(c["authentic"])
        pos = np.array(c["foreign"] + c["generated"])
        tpr, _, _ = tpr_at_fpr(neg, pos)
        pts = c["pt:splice"] + c["pt:copy_move"]
        out.append(f"| {k} | {-neg.max():.0f} | {np.median(-neg):.0f} | {np.mean(-np.array(c['foreign']) < 50):.3f} | "
                   f"{np.mean(-np.array(c['generated']) < 50):.3f} | {np.mean(-neg < 50):.4f} | {tpr:.3f} | "
                   f"{np.mean(pts):.3f} | {np.mean(np.array(c['z:authentic']) >= LOCAL_Z):.4f} |")
    out.append("")
    out.append(f"### Noise physics (profile learned on {len(feats)} images of panels {PROFILE_PANELS}, tested on other panels)\n")
    out.append("| condition | class | n | AUC vs authentic | TPR @ 0.1 % FPR | flagged at score >= 0.5 |")
    out.append("|---|---|---|---|---|---|")
    for cond in ("none", "jpeg90", "jpeg75"):
        neg = np.array(noise_scores[f"{cond}:authentic"])
        for kind in ("foreign", "generated:uniform_grain", "generated:too_smooth", "generated:upsampled",
                     "generated:physics_noise", "splice", "copy_move"):
            pos = np.array(noise_scores[f"{cond}:{kind}"])
            if len(pos) == 0:
                continue
            tpr, _, _ = tpr_at_fpr(neg, pos)
            out.append(f"| {cond} | {kind} | {len(pos)} | {auc(neg, pos):.3f} | {tpr:.3f} | {np.mean(pos >= 0.5):.3f} |")
        out.append(f"| {cond} | authentic | {len(neg)} | - | - | {np.mean(neg >= 0.5):.4f} (false) |")
    out.append("")
    out.append(f"_fingerprint+noise evaluation: {elapsed:.0f} s (enrolment {t_enrol:.0f} s)_\n")


def evaluate_local_calibration(scale: float, out: list[str]) -> None:
    """The local map's own settings (``model_error``, ``min_intact``) on calibration panels that the
    evaluation above never uses, with their own seed: where they were chosen."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(20260301)
    donors = [Panel(PanelSpec(s, shape=SHAPE)) for s in CALIBRATION_DONORS]
    # (min_intact, model_error), one changed from the defaults (0.5, 0.03) at a time
    settings = [(0.5, e) for e in (0.0, 0.02, 0.03, 0.05)] + [(m, 0.03) for m in (0.25, 0.75)]
    zs: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    hits: dict[tuple[int, str], list[bool]] = collections.defaultdict(list)
    for s in CALIBRATION:
        panel = Panel(PanelSpec(s, shape=SHAPE))
        fp = FingerprintEnrollment(SHAPE)
        for _ in range(max(NS)):
            fp.add(panel.acquire(rng))
        enrolled = fp.finish().quantised(8)
        checks = [FingerprintCheck(enrolled, min_intact=mi, model_error=me) for mi, me in settings]
        samples = [Sample("authentic", panel.acquire(rng)) for _ in range(_n(150, scale))]
        for i in range(_n(20, scale)):
            samples.append(Sample("splice", *splice(panel.acquire(rng), donors[i % len(donors)].acquire(rng), rng)))
            samples.append(Sample("copy_move", *copy_move(panel.acquire(rng), rng)))
        for smp in samples:
            tiles, origins = grid_tiles(smp.image, TILE, MAX_TILES)
            for k, check in enumerate(checks):
                m = check.measure(smp.image, tiles, origins)
                zs[(k, smp.kind)].append(float(m.mismatch_z.max()))
                if smp.mask is not None:
                    n, yy, xx = m.peak()
                    oy, ox = origins[n]
                    cy, cx = oy + yy * m.cell + m.cell // 2, ox + xx * m.cell + m.cell // 2
                    hits[(k, smp.kind)].append(bool(smp.mask[cy, cx]))
    out.append(f"### Local map settings on calibration panels {CALIBRATION} (N=32, int8; not the evaluation's panels)\n")
    out.append("(One setting changed per row, the other at its default: `min_intact` 0.5, `model_error` 0.03.)\n")
    out.append(f"| setting | pointing splice | pointing copy-move | flagged splice / copy-move (z >= {LOCAL_Z:g}) | "
               f"authentic flagged | max z on authentic (99 %) |")
    out.append("|---|---|---|---|---|---|")
    for k, (mi, me) in enumerate(settings):
        auth = np.array(zs[(k, "authentic")])
        name = f"model_error={me:g}" if k < 4 else f"min_intact={mi:g}"
        flagged = [np.mean(np.array(zs[(k, kind)]) >= LOCAL_Z) for kind in ("splice", "copy_move")]
        out.append(f"| {name} | {np.mean(hits[(k, 'splice')]):.3f} | {np.mean(hits[(k, 'copy_move')]):.3f} | "
                   f"{flagged[0]:.3f} / {flagged[1]:.3f} | {np.mean(auth >= LOCAL_Z):.4f} of {len(auth)} | "
                   f"{auth.max():.1f} ({np.quantile(auth, 0.99):.1f}) |")
    out.append(f"\n_calibration: {time.perf_counter() - t0:.0f} s_\n")


# ------------------------------------------------------------------------------- metadata
# Which shipped files are real images from real devices, and which of those are acquisitions.
# Decided by provenance (the data sets' READMEs / headers), not by the rules' own attributes:
#   real acquisitions: clinical exposures in their original encoding - the WG04 set's *_UNCR (RG1,
#     RG3 CR; MR2; US1; CT 693), CT_small / CTImageStorage (GE CT), the dicomdirtests patients'
#     CR (Agfa), CT (GE LightSpeed) and MR (Philips) ORIGINAL series, bad_sequence (Siemens CT),
#     J2K_pixelrep_mismatch (CT), the Philips/ALOKA/GE ultrasound files, RTImageStorage (Elekta
#     portal image);
#   real but not acquisitions: re-encodings (*_J2KI/_J2KR/_UNCI, *_rle, *_expb, ...), NM
#     re-encodings, reformats (MR MPR/MIP, MR700 projections, Toshiba MR_small SECONDARY), SEG,
#     RT dose/plan, SR, ECG;
#   synthetic test constructs (not counted): pydicom's colour secondary captures (SC_*), the
#     TINY_ALPHA DICOMDIR stubs (no pixels), DICOMDIRs, files without Manufacturer made for
#     codec/VR tests, "Acme" examples, OFFIS LUT examples.
_REAL_ACQUISITIONS = {
    "RG1_UNCR.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "693_UNCR.dcm", "CT_small.dcm",
    "CTImageStorage.dcm", "bad_sequence.dcm", "J2K_pixelrep_mismatch.dcm", "OBXXXX1A.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm", "gdcm-US-ALOKA-16.dcm", "ExplVR_BigEnd.dcm", "RTImageStorage.dcm",
    "6154", "6247", "6278", "17106", "17136", "17166", "17196", "6293", "6924", "2062", "2392", "2693", "3023",
    "3353", "15820", "4919", "5641", "15970", "4950", "4981", "5011", "6273", "6605", "6935",
}
_SYNTHETIC_MANUFACTURERS = {"", "ACME PRODUCTS", "ACME MEDICAL DEVICES", "DEBUG", "OFFIS", "MANUFACTURER NAME HERE"}


def _dicom_roots() -> list[str]:
    import pydicom
    import pynetdicom

    roots = [os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"),
             os.path.join(os.path.dirname(pynetdicom.__file__), "tests", "dicom_files")]
    try:
        from pydicom.data import get_testdata_file

        roots.append(os.path.dirname(str(get_testdata_file("RG1_UNCR.dcm", download=False))))
    except Exception:  # pydicom-data not installed
        pass
    return roots


def evaluate_metadata(out: list[str]) -> None:
    import pydicom

    from edge_agent.forensics.metadata import RULES, evaluate_rules

    groups: dict[str, list[str]] = {"real acquisition": [], "real, not an acquisition": [], "synthetic test construct": []}
    fires: dict[str, collections.Counter] = {g: collections.Counter() for g in groups}
    examples: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    seen = 0
    for root in _dicom_roots():
        for p in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
            if not os.path.isfile(p) or p.endswith((".py", ".pyc", ".json", ".txt", ".md")):
                continue
            try:
                ds = pydicom.dcmread(p)
            except Exception:
                continue
            if "SOPClassUID" not in ds:
                continue  # DICOMDIR and bare data sets: not images
            seen += 1
            name = os.path.basename(p)
            manu = str(ds.get("Manufacturer", "")).strip().upper()
            if name in _REAL_ACQUISITIONS:
                group = "real acquisition"
            elif "TINY_ALPHA" in p or name.startswith("SC_") or manu in _SYNTHETIC_MANUFACTURERS:
                group = "synthetic test construct"
            else:
                group = "real, not an acquisition"
            groups[group].append(name)
            for rule, _ in evaluate_rules(ds):
                fires[group][rule.code] += 1
                examples[(group, rule.code)].append(name)
    out.append(f"### Metadata rules on shipped DICOM files (no DeviceIdentity; {seen} files with a SOP class)\n")
    out.append("| rule | severity | needs identity | real acquisitions (n={}) | real, not acquisitions (n={}) | synthetic test constructs (n={}) |".format(
        len(groups["real acquisition"]), len(groups["real, not an acquisition"]), len(groups["synthetic test construct"])))
    out.append("|---|---|---|---|---|---|")
    for rule in RULES:
        cells = []
        for g in groups:
            n = fires[g][rule.code]
            ex = examples[(g, rule.code)][:2]
            cells.append(f"{n}" + (f" ({', '.join(ex)}...)" if n else ""))
        skip = "yes (skipped)" if rule.needs_identity else "no"
        out.append(f"| `{rule.code}` | {rule.severity} | {skip} | {cells[0]} | {cells[1]} | {cells[2]} |")
    out.append("")


FLAT_PANELS = (501, 502, 503)  # enrolled from flat-field frames only (4xx: calibration panels)
FLAT_DONORS = (504, 505)


def evaluate_flat_field_enrolment(scale: float, out: list[str]) -> None:
    """The fingerprint enrolled from flat-field calibration frames (uniform exposures at random
    doses, no anatomy; ``edge-agent learn --flat-fields``), checked on anatomy images."""
    from edge_agent.forensics.simulator import copy_move, splice

    rng = np.random.default_rng(4000)
    donors = [Panel(PanelSpec(s, shape=SHAPE)) for s in FLAT_DONORS]
    out.append("#### Fingerprint enrolled from flat-field frames (additive model, int8; `--only flat`)\n")
    out.append("| panel | flat frames | PCE own images (min / median) | PCE other panels (max) | authentic flagged | "
               "splices found (local) | copy-moves found (local) |")
    out.append("|---|---|---|---|---|---|---|")
    n_auth, n_att = _n(30, scale), _n(10, scale)
    for seed in FLAT_PANELS:
        panel = Panel(PanelSpec(seed, shape=SHAPE))
        for frames in (8, 16):
            acc = FingerprintEnrollment(SHAPE, "additive")
            for _ in range(frames):
                acc.add(panel.acquire(rng, dose=float(rng.uniform(3000, 20000)), grid=False,
                                      attenuation=np.full(SHAPE, 0.5, np.float32)))
            check = FingerprintCheck(acc.finish().quantised(8))
            own = [check.check(panel.acquire(rng)) for _ in range(n_auth)]
            pce_own = [check.measure(panel.acquire(rng)).pce for _ in range(min(10, n_auth))]
            pce_other = [check.measure(d.acquire(rng)).pce for d in donors for _ in range(3)]
            spl = sum("fingerprint.local_mismatch" in check.check(
                splice(panel.acquire(rng), donors[i % 2].acquire(rng), rng)[0]).flagged_codes for i in range(n_att))
            cm = sum("fingerprint.local_mismatch" in check.check(copy_move(panel.acquire(rng), rng)[0]).flagged_codes
                     for _ in range(n_att))
            out.append(f"| {seed} | {frames} | {min(pce_own):.0f} / {np.median(pce_own):.0f} | {max(pce_other):.1f} | "
                       f"{sum(bool(f.flagged_codes) for f in own)} / {n_auth} | {spl} / {n_att} | {cm} / {n_att} |")
    out.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("fingerprint", "metadata", "calibration", "flat"),
                    help="run one part (fingerprint includes noise; calibration is run only when asked for)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the default image counts")
    args = ap.parse_args()
    out: list[str] = []
    if args.only in (None, "metadata"):
        evaluate_metadata(out)
    if args.only in (None, "fingerprint"):
        evaluate_fingerprint_and_noise(args.scale, out)
    if args.only == "calibration":
        evaluate_local_calibration(args.scale, out)
    if args.only in (None, "flat"):
        evaluate_flat_field_enrolment(args.scale, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
