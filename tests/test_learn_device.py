"""``edge-agent learn``: a device learns its noise profile and fingerprint from its own
authentic acquisitions; ``scan --config`` then tells its images from another detector's."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from agent_harness import run_cli
from sample_images import dx_acquisitions, new_image, save
from trust_factory import new_fleet

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.forensics import Fingerprint, NoiseProfile
from edge_agent.forensics.simulator import Panel, PanelSpec
from edge_agent.trust.enrollment import DeviceState
from edge_agent.trust.fleet_ca import FleetCA
from edge_agent.trust.keys import PassphraseSource

SHAPE = (512, 640)


_cli = functools.partial(run_cli, timeout=300)


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("learn")
    dx_acquisitions(work / "first-acquisitions", panel_seed=31, n=10, seed=1)
    (work / "first-acquisitions" / "notes.txt").write_text("not an image")
    run = _cli("learn", "--out", work / "device", "first-acquisitions", cwd=work)
    return work, run


def test_learn_writes_a_profile_and_a_fingerprint_and_prints_the_config_lines(learned) -> None:
    work, run = learned
    assert run.returncode == 0, run.stderr
    profile = NoiseProfile.from_json((work / "device" / "noise-profile.json").read_text())
    assert profile.modality == "DX" and profile.images == 10
    data = (work / "device" / "fingerprint.bin").read_bytes()
    fp = Fingerprint.from_bytes(data)
    assert fp.shape == SHAPE and fp.images == 10 and fp.modality == "DX"
    assert f"fingerprint_sha256: {fp.sha256}" in run.stdout
    assert "10 frame(s) of 512x640 (fingerprint, for DX images)" in run.stdout
    assert "skipped first-acquisitions/notes.txt" in run.stderr  # named, not fatal


def test_scan_with_the_learned_files_passes_this_device_and_flags_another(learned) -> None:
    work, run = learned
    (work / "agent.yaml").write_text(run.stdout)  # the printed lines are a valid config
    dx_acquisitions(work / "ours", panel_seed=31, n=2, seed=99)
    dx_acquisitions(work / "theirs", panel_seed=32, n=2, seed=99)
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "ours", "theirs", cwd=work)
    verdicts = {v["path"]: v for v in map(json.loads, scan.stdout.splitlines())}
    assert len(verdicts) == 4, scan.stderr
    for path, v in verdicts.items():
        codes = {r["code"] for r in v["reasons"]}
        if path.startswith("ours"):
            assert "fingerprint.absent" not in codes, v
        else:
            assert v["verdict"] in ("suspicious", "synthetic") and "fingerprint.absent" in codes, v


def test_a_ct_series_is_not_searched_for_the_dx_panels_fingerprint_but_a_relabelled_frame_is_judged(learned) -> None:
    """A CT slice says nothing about the DX panel: searching every slice for the panel's pattern
    costs time and reads "not placed". A frame of the panel's own size relabelled CT is judged."""
    work, run = learned
    (work / "agent-ct.yaml").write_text(run.stdout)
    dx_acquisitions(work / "ct-slices", panel_seed=77, n=1, seed=5, shape=(512, 512), modality="CT")
    dx_acquisitions(work / "relabelled", panel_seed=77, n=1, seed=5, modality="CT")  # the panel's 512x640
    scan = _cli("scan", "--jsonl", "--config", "agent-ct.yaml", "ct-slices", "relabelled", cwd=work)
    verdicts = {v["path"].split("/")[0]: v for v in map(json.loads, scan.stdout.splitlines())}
    ct = {r["code"]: r["message"] for r in verdicts["ct-slices"]["reasons"]}
    assert "fingerprint.other_modality" in ct and "fingerprint.geometry_mismatch" not in ct, ct
    assert "modality CT" in ct["fingerprint.other_modality"] and "DX" in ct["fingerprint.other_modality"]
    assert "fingerprint.absent" in {r["code"] for r in verdicts["relabelled"]["reasons"]}


def test_too_few_images_writes_nothing_and_says_how_many_are_needed(tmp_path: Path) -> None:
    dx_acquisitions(tmp_path / "few", panel_seed=33, n=3, seed=2)
    run = _cli("learn", "--out", tmp_path / "device", "few", cwd=tmp_path)
    assert run.returncode == 2
    assert "at least 8 are needed" in run.stderr and "nothing written" in run.stderr
    assert not (tmp_path / "device").exists()


def test_learn_does_not_overwrite_an_enrolment_without_force(learned) -> None:
    work, _ = learned
    before = (work / "device" / "fingerprint.bin").read_bytes()
    run = _cli("learn", "--out", work / "device", "first-acquisitions", cwd=work)
    assert run.returncode == 2 and "--force" in run.stderr
    assert (work / "device" / "fingerprint.bin").read_bytes() == before


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """An enrolled device (fleet CA, key, certificate) learns and signs what it learned."""
    work = tmp_path_factory.mktemp("signed")
    ca = new_fleet(work / "ca")
    state = DeviceState(work / "identity")
    cert = ca.issue_device(state.init("dx-0007"))
    state.install(cert.public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    dx_acquisitions(work / "first", panel_seed=41, n=8, seed=5)
    dx_acquisitions(work / "ours", panel_seed=41, n=1, seed=77)
    run = _cli("learn", "--identity", "identity", "--out", "device", "first", cwd=work)
    return work, run


def test_an_enrolled_device_signs_what_it_learned_and_scan_checks_the_signature(signed) -> None:
    work, run = signed
    assert run.returncode == 0, run.stderr
    assert (work / "device" / "enrolment.sig.json").is_file()
    assert "enrolment_trust:" in run.stdout and "dx-0007" in run.stdout
    (work / "agent.yaml").write_text(run.stdout)
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "ours", cwd=work)
    assert scan.returncode in (0, 1), scan.stderr
    (v,) = map(json.loads, scan.stdout.splitlines())
    assert "fingerprint.absent" not in {r["code"] for r in v["reasons"]}
    # the printed comments switched on: refinement, signed by the same enrolment
    assert "# device_identity: " in run.stdout
    refining = run.stdout.replace("  # refine_profile:", "  refine_profile:").replace("  # device_identity:", "  device_identity:")
    (work / "refining.yaml").write_text(refining)
    settings = load_config(work / "refining.yaml").forensics
    assert settings.device_identity == (work / "identity").resolve() and settings.enrolment_anchors
    scan = _cli("scan", "--jsonl", "--config", "refining.yaml", "ours", cwd=work)
    assert scan.returncode in (0, 1), scan.stderr
    assert json.loads(scan.stdout)["verdict"] == v["verdict"]  # nothing refined yet: the same judgement
    # the enrolment folder of another device cannot sign this device's refinements
    other = DeviceState(work / "other-identity")
    ca = FleetCA(work / "ca", PassphraseSource())
    other.install(ca.issue_device(other.init("dx-0008")).public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    (work / "foreign.yaml").write_text(refining.replace(str((work / "identity").resolve()), str(work / "other-identity")))
    with pytest.raises(ConfigError, match="is device 'dx-0008', but the learned files were signed by 'dx-0007'"):
        load_config(work / "foreign.yaml")


def test_a_profile_edited_after_signing_stops_the_scan_naming_the_file(signed, tmp_path: Path) -> None:
    work, run = signed
    import shutil

    device = shutil.copytree(work / "device", tmp_path / "device")
    profile = json.loads((device / "noise-profile.json").read_text())
    profile["source"] = "tampered"
    (device / "noise-profile.json").write_text(json.dumps(profile))
    config = run.stdout.replace(str((work / "device").resolve()), str(device))
    (tmp_path / "agent.yaml").write_text(config)
    scan = _cli("scan", "--jsonl", "--config", tmp_path / "agent.yaml", work / "ours", cwd=tmp_path)
    assert scan.returncode == 2
    assert "noise-profile.json differs from what device dx-0007 signed" in scan.stderr


def test_an_unsigned_enrolment_is_refused_when_the_config_asks_for_a_signature(signed, tmp_path: Path) -> None:
    work, run = signed
    import shutil

    device = shutil.copytree(work / "device", tmp_path / "device")
    (device / "enrolment.sig.json").unlink()
    (tmp_path / "agent.yaml").write_text(run.stdout.replace(str((work / "device").resolve()), str(device)))
    scan = _cli("scan", "--jsonl", "--config", tmp_path / "agent.yaml", work / "ours", cwd=tmp_path)
    assert scan.returncode == 2 and "enrolment is unsigned" in scan.stderr


def test_layers_running_beside_the_model_give_the_same_verdict_as_after_it(learned, monkeypatch) -> None:
    from edge_agent import pipeline as pipeline_module
    from edge_agent.evidence import EvidenceSettings
    from edge_agent.pipeline import open_pipeline

    work, _ = learned
    settings = EvidenceSettings(noise_profile=NoiseProfile.from_json((work / "device" / "noise-profile.json").read_text()),
                                fingerprint=Fingerprint.from_bytes((work / "device" / "fingerprint.bin").read_bytes()))
    images = [*dx_acquisitions(work / "beside-ours", 31, 1, 7), *dx_acquisitions(work / "beside-theirs", 34, 1, 7)]

    def verdicts() -> tuple[list[dict], bool]:
        pipe = open_pipeline(None, "onnxruntime", "fp32", 2, evidence=settings)
        out = [v.to_dict() for p in images for v in pipe.process(p)]
        for v in out:
            v.pop("timings_ms")
        return out, pipe._narrow

    # 512x640: 6 tiles, below CONCURRENT_BELOW_TILES: the model runs on its narrow session (one thread
    # here) beside the layers; larger images run it on all its threads beside them; and without a
    # fingerprint the layers run after the model, the check's tiles split over two threads
    beside, narrow = verdicts()
    monkeypatch.setattr(pipeline_module, "CONCURRENT_BELOW_TILES", 0)
    beside_wide, _ = verdicts()
    from edge_agent.evidence import Evidence

    monkeypatch.setattr(Evidence, "worth_a_core", property(lambda self: False))
    after, narrow_after = verdicts()
    assert narrow and not narrow_after
    assert beside == beside_wide == after
    assert {r["code"] for r in beside[1]["reasons"]} >= {"fingerprint.absent"}


def test_the_physics_layer_alone_runs_after_the_model_on_all_its_threads(learned) -> None:
    # ~1 ms of physics does not pay for a model on one thread fewer (a CT device has no fingerprint)
    from edge_agent.evidence import EvidenceSettings
    from edge_agent.pipeline import open_pipeline

    work, _ = learned
    settings = EvidenceSettings(noise_profile=NoiseProfile.from_json((work / "device" / "noise-profile.json").read_text()))
    from edge_agent.forensics.simulator import generated_like

    smooth = generated_like(np.random.default_rng(3), SHAPE, "too_smooth")  # noise far below the detector's
    path = save(new_image(np.round(smooth * 4095).astype(np.uint16), bits_stored=12, Modality="DX"),
                work / "physics-only" / "smooth.dcm")
    pipe = open_pipeline(None, "onnxruntime", "fp32", 2, evidence=settings)
    [verdict] = pipe.process(path)
    assert pipe.evidence.judges_frames and not pipe._narrow and pipe._layers is None
    assert any(r.code.startswith("physics.") for r in verdict.reasons), verdict.reasons


def test_this_devices_images_mirrored_rotated_or_cropped_at_the_console_still_pass(learned) -> None:
    # Consoles turn and mirror views and crop to the collimated field; the fingerprint is then found
    # where the image lies on the detector, instead of reading as another detector's image.
    work, run = learned
    (work / "agent.yaml").write_text(run.stdout)
    rng = np.random.default_rng(12)
    ours, theirs = Panel(PanelSpec(31, shape=SHAPE)), Panel(PanelSpec(32, shape=SHAPE))
    folder = work / "console"
    views = {"mirrored": lambda a: a[:, ::-1], "rotated": lambda a: np.rot90(a), "collimated": lambda a: a[40:460, 60:590]}
    for name, turn in views.items():
        for who, panel in (("ours", ours), ("theirs", theirs)):
            px = np.ascontiguousarray(turn(np.round(panel.acquire(rng) * 4095).astype(np.uint16)))
            # the collimated view declares where it lies (DX Detector module, PS3.3 C.8.11.4.1.1)
            fov = {"FieldOfViewOrigin": [40, 60], "FieldOfViewRotation": "0", "FieldOfViewHorizontalFlip": "NO"}
            save(new_image(px, bits_stored=12, Modality="DX", **(fov if name == "collimated" else {})),
                 folder / f"{who}-{name}.dcm")
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "console", cwd=work)
    verdicts = {v["path"]: v for v in map(json.loads, scan.stdout.splitlines())}
    assert len(verdicts) == 6, scan.stderr
    for name in views:
        v = verdicts[f"console/ours-{name}.dcm"]
        codes = {r["code"] for r in v["reasons"]}
        assert v["verdict"] == "authentic" and "fingerprint.placed" in codes, v
        assert "fingerprint.header_placement_differs" not in codes, v
        other = {r["code"] for r in verdicts[f"console/theirs-{name}.dcm"]["reasons"]}
        assert "fingerprint.placed" not in other, other
    placed = next(r["message"] for r in verdicts["console/ours-collimated.dcm"]["reasons"] if r["code"] == "fingerprint.placed")
    assert "where its header's Field of View places it" in placed


def test_the_heatmap_marks_where_a_region_from_another_detector_was_pasted(learned) -> None:
    from PIL import Image

    from edge_agent.forensics.simulator import splice

    work, run = learned
    (work / "agent.yaml").write_text(run.stdout)
    rng = np.random.default_rng(5)
    ours, theirs = Panel(PanelSpec(31, shape=SHAPE)), Panel(PanelSpec(35, shape=SHAPE))
    forged, mask = splice(ours.acquire(rng), theirs.acquire(rng), rng, size=(120, 160))
    folder = work / "heat"
    save(new_image(np.round(forged * 4095).astype(np.uint16), bits_stored=12, Modality="DX"), folder / "forged.dcm")
    save(new_image(np.round(ours.acquire(rng) * 4095).astype(np.uint16), bits_stored=12, Modality="DX"),
         folder / "clean.dcm")
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "--heatmaps", "maps", "heat", cwd=work)
    verdicts = {v["path"]: v for v in map(json.loads, scan.stdout.splitlines())}
    assert "fingerprint.local_mismatch" in {r["code"] for r in verdicts["heat/forged.dcm"]["reasons"]}, scan.stderr

    def cyan(name: str) -> np.ndarray:  # the layer's colour: G and B over R (grey, red and yellow have G <= R);
        # the model's red beside it is the model's own evidence, not "less cyan": floored at 0
        rgb = np.asarray(Image.open(work / "maps" / f"heat__{name}.heatmap.png").convert("RGB"), dtype=np.int16)
        return np.maximum(rgb[..., 1] - rgb[..., 0], 0)

    forged_map, clean_map = cyan("forged.dcm"), cyan("clean.dcm")
    assert forged_map.shape == SHAPE
    ys, xs = np.nonzero(mask)
    near = np.zeros(SHAPE, bool)
    near[max(0, ys.min() - 48): ys.max() + 48, max(0, xs.min() - 48): xs.max() + 48] = True
    assert forged_map[mask].mean() > 60, "the pasted region is not marked"
    assert forged_map[~near].max() < 30, "fingerprint evidence drawn away from the pasted region"
    assert clean_map.max() < 30


def _flat_fields(folder: Path, panel_seed: int, n: int, seed: int, modality: str = "DX") -> None:
    """``n`` flat-field calibration frames: uniform exposures at several doses, no anatomy."""
    panel, rng = Panel(PanelSpec(panel_seed, shape=SHAPE)), np.random.default_rng(seed)
    for i in range(n):
        px = panel.acquire(rng, dose=float(rng.uniform(3000, 20000)), grid=False,
                           attenuation=np.full(SHAPE, 0.5, np.float32))
        save(new_image(np.round(px * 4095).astype(np.uint16), bits_stored=12, Modality=modality), folder / f"flat{i:02d}.dcm")


def test_a_vendor_enrols_the_fingerprint_from_flat_field_frames_at_the_factory(tmp_path: Path) -> None:
    from edge_agent.forensics.simulator import splice

    _flat_fields(tmp_path / "flats", panel_seed=37, n=12, seed=3)
    run = _cli("learn", "--out", tmp_path / "device", "--flat-fields", "flats", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == ["fingerprint.bin"]  # no anatomy: no profile
    assert "noise_profile" not in run.stdout and "12 flat-field frame(s)" in run.stdout
    (tmp_path / "agent.yaml").write_text(run.stdout)
    rng = np.random.default_rng(4)
    ours, theirs = Panel(PanelSpec(37, shape=SHAPE)), Panel(PanelSpec(38, shape=SHAPE))
    patients = tmp_path / "patients"
    for name, img in (("ours.dcm", ours.acquire(rng)), ("theirs.dcm", theirs.acquire(rng)),
                      ("spliced.dcm", splice(ours.acquire(rng), theirs.acquire(rng), rng)[0])):
        save(new_image(np.round(img * 4095).astype(np.uint16), bits_stored=12, Modality="DX"), patients / name)
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "patients", cwd=tmp_path)
    codes = {v["path"]: {r["code"] for r in v["reasons"]} for v in map(json.loads, scan.stdout.splitlines())}
    assert not any(c.startswith("fingerprint.") for c in codes["patients/ours.dcm"]), codes
    assert "fingerprint.absent" in codes["patients/theirs.dcm"]
    assert "fingerprint.local_mismatch" in codes["patients/spliced.dcm"]

    # On the device, its first acquisitions add the noise profile; the fingerprint stays the factory's.
    dx_acquisitions(tmp_path / "first", panel_seed=37, n=8, seed=5)
    again = _cli("learn", "--out", tmp_path / "device", "--force", "--flat-fields", "flats", "first", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert NoiseProfile.from_json((tmp_path / "device" / "noise-profile.json").read_text()).images == 8
    fp = Fingerprint.from_bytes((tmp_path / "device" / "fingerprint.bin").read_bytes())
    assert f"fingerprint_sha256: {fp.sha256}" in run.stdout and fp.images == 12  # the factory's flat frames
    assert fp.modality == "DX"  # what the flat frames name


def test_flat_frames_labelled_other_still_give_a_fingerprint_that_checks_the_clinical_images(tmp_path: Path) -> None:
    """Calibration frames are often stored as modality OT; the fingerprint must not then skip
    every DX image as 'another modality'."""
    _flat_fields(tmp_path / "flats", panel_seed=37, n=8, seed=3, modality="OT")
    alone = _cli("learn", "--out", tmp_path / "factory", "--flat-fields", "flats", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert Fingerprint.from_bytes((tmp_path / "factory" / "fingerprint.bin").read_bytes()).modality == ""
    assert "labelled modality OT" in alone.stderr + alone.stdout
    dx_acquisitions(tmp_path / "first", panel_seed=37, n=8, seed=5)
    both = _cli("learn", "--out", tmp_path / "device", "--flat-fields", "flats", "first", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert Fingerprint.from_bytes((tmp_path / "device" / "fingerprint.bin").read_bytes()).modality == "DX"


def test_an_enrolment_that_learns_nothing_leaves_the_previous_one_in_place(tmp_path: Path) -> None:
    _flat_fields(tmp_path / "flats", panel_seed=37, n=8, seed=3)
    assert _cli("learn", "--out", tmp_path / "device", "--flat-fields", "flats", cwd=tmp_path).returncode == 0
    before = (tmp_path / "device" / "fingerprint.bin").read_bytes()
    for i in range(8):  # flat frames of eight different panels: no pattern in common
        _flat_fields(tmp_path / f"mixed{i}", panel_seed=80 + i, n=1, seed=i)
    mixed = [f"--flat-fields=mixed{i}" for i in range(8)]
    run = _cli("learn", "--out", tmp_path / "device", "--force", *mixed, cwd=tmp_path)
    assert run.returncode == 2 and "nothing written" in run.stderr and "share a fixed pattern in only" in run.stderr
    assert (tmp_path / "device" / "fingerprint.bin").read_bytes() == before


def test_learn_without_images_says_what_to_give(tmp_path: Path) -> None:
    run = _cli("learn", "--out", tmp_path / "device", cwd=tmp_path)
    assert run.returncode == 2 and "give acquisitions (PATH...), flat-field frames" in run.stderr
    assert not (tmp_path / "device").exists()


SMALL = (256, 320)


def test_a_ct_device_learns_its_noise_profile_but_no_fingerprint_and_says_why(tmp_path: Path) -> None:
    # the same simulated detector's images, labelled CT: a reconstructed slice has no detector grid,
    # so even a pattern the images share is not enrolled
    dx_acquisitions(tmp_path / "ct", 61, 10, seed=1, shape=SMALL, modality="CT")
    run = _cli("learn", "--out", tmp_path / "device", "--no-model-calibration", "ct", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no fingerprint: CT images are computed from many detector readings" in run.stderr
    assert (tmp_path / "device" / "noise-profile.json").exists()
    assert not (tmp_path / "device" / "fingerprint.bin").exists()
    assert "fingerprint:" not in run.stdout and "noise_profile:" in run.stdout
    (tmp_path / "agent.yaml").write_text(run.stdout)  # still a valid config
    dx_acquisitions(tmp_path / "later", 62, 1, seed=2, shape=SMALL, modality="CT")
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "later", cwd=tmp_path)
    codes = {r["code"] for r in json.loads(scan.stdout)["reasons"]}
    assert not any(c.startswith("fingerprint.") for c in codes), codes


def test_images_of_several_detectors_give_no_fingerprint_instead_of_one_that_flags_everything(tmp_path: Path) -> None:
    for i, panel_seed in enumerate(range(70, 80)):  # one exposure of each of ten panels
        dx_acquisitions(tmp_path / "mixed" / f"panel{i}", panel_seed, 1, seed=i, shape=SMALL)
    run = _cli("learn", "--out", tmp_path / "device", "--no-model-calibration", "mixed", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no fingerprint: the 10 image(s) of 256x320 share a fixed pattern in only" in run.stderr
    assert not (tmp_path / "device" / "fingerprint.bin").exists() and "fingerprint:" not in run.stdout
    # the same number of one detector's images do give one
    dx_acquisitions(tmp_path / "one", 70, 10, seed=3, shape=SMALL)
    one = _cli("learn", "--out", tmp_path / "device1", "--no-model-calibration", "one", cwd=tmp_path)
    assert one.returncode == 0 and (tmp_path / "device1" / "fingerprint.bin").exists(), one.stderr
