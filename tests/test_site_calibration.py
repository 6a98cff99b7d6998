"""Site calibration: ``edge-agent learn`` measures the shipped model on the device's own authentic
acquisitions, and ``scan`` / the agent then read the model's score on that device's scale."""

from __future__ import annotations

import functools
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from agent_harness import run_cli
from sample_images import dx_acquisitions, new_image, save

from edge_agent.detect import default_model_dir
from edge_agent.errors import ConfigError
from edge_agent.manifest import load_manifest
from edge_agent.site_calibration import LARGE_OFFSET, MIN_IMAGES, QUANTILES, SiteCalibration, reference_quantiles
from edge_agent.forensics.simulator import Panel, PanelSpec

SHAPE = (512, 640)


_cli = functools.partial(run_cli, timeout=300)
PANEL = 7  # the simulated detector of this site


def _logits(scan: subprocess.CompletedProcess[str]) -> dict[str, float]:
    out = {}
    for v in map(json.loads, scan.stdout.splitlines()):
        s = v["score"]
        out[Path(v["path"]).name] = math.log(s / (1 - s))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("site")
    dx_acquisitions(work / "first", PANEL, MIN_IMAGES, seed=3)
    dx_acquisitions(work / "later", PANEL, 3, seed=40)
    run = _cli("learn", "--out", work / "device", "first", cwd=work)
    return work, run


def test_learn_measures_the_model_on_the_sites_own_images_as_scan_scores_them(site) -> None:
    work, run = site
    assert run.returncode == 0, run.stderr
    cal = SiteCalibration.from_json((work / "device" / "model-calibration.json").read_text())
    assert "model_calibration: " in run.stdout and cal.n_images == MIN_IMAGES
    manifest = load_manifest(default_model_dir())
    assert (cal.model_name, cal.model_version) == (manifest.name, manifest.version)
    assert cal.reference_quantiles == reference_quantiles(manifest)
    raw = _logits(_cli("scan", "--jsonl", "first", cwd=work))  # the shipped model alone
    assert len(raw) == MIN_IMAGES
    assert cal.site_quantiles == pytest.approx(np.quantile(list(raw.values()), QUANTILES), abs=1e-4)
    assert cal.offset == pytest.approx(max(0.0, *(np.array(cal.site_quantiles) - cal.reference_quantiles)))


def test_scan_with_the_calibration_moves_every_score_by_the_sites_offset_and_says_so(site) -> None:
    work, run = site
    cal = SiteCalibration.from_json((work / "device" / "model-calibration.json").read_text())
    assert cal.offset > 0.1  # this simulated panel scores above the model's validation reals: a real move
    (work / "calibrated.yaml").write_text(
        f"forensics:\n  metadata: false\n  model_calibration: {work / 'device' / 'model-calibration.json'}\n")
    (work / "plain.yaml").write_text("forensics:\n  metadata: false\n")
    plain = _logits(_cli("scan", "--jsonl", "--config", "plain.yaml", "later", cwd=work))
    scan = _cli("scan", "--jsonl", "--config", "calibrated.yaml", "later", cwd=work)
    calibrated = _logits(scan)
    assert len(plain) == len(calibrated) == 3, scan.stderr
    for name, logit in plain.items():
        assert calibrated[name] == pytest.approx(logit - cal.offset, abs=1e-4)
    for v in map(json.loads, scan.stdout.splitlines()):
        (note,) = [r for r in v["reasons"] if r["code"] == "model.site_calibrated"]
        assert f"so {cal.offset:.2f} is taken off" in note["message"] and f"images ({MIN_IMAGES})" in note["message"]


def test_an_image_of_another_modality_keeps_the_shipped_scale(site, tmp_path: Path) -> None:
    work, _ = site
    cal = SiteCalibration.from_json((work / "device" / "model-calibration.json").read_text())
    assert cal.modality == "DX"
    panel, rng = Panel(PanelSpec(PANEL, shape=SHAPE)), np.random.default_rng(11)
    px = np.round(panel.acquire(rng) * 4095).astype(np.uint16)
    save(new_image(px, bits_stored=12, Modality="CR"), tmp_path / "cr.dcm")
    save(new_image(px, bits_stored=12, Modality="DX"), tmp_path / "dx.dcm")
    stripped = new_image(px, bits_stored=12)
    del stripped.Modality  # a forger who removes the tag earns no discount
    save(stripped, tmp_path / "no-modality.dcm")
    (tmp_path / "agent.yaml").write_text(
        f"forensics:\n  metadata: false\n  model_calibration: {work / 'device' / 'model-calibration.json'}\n")
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "cr.dcm", "dx.dcm", "no-modality.dcm", cwd=tmp_path)
    verdicts = {v["path"]: v for v in map(json.loads, scan.stdout.splitlines())}
    logits = _logits(scan)
    for other in ("cr.dcm", "no-modality.dcm"):
        assert "model.site_calibrated" not in {r["code"] for r in verdicts[other]["reasons"]}
        assert logits[other] == pytest.approx(logits["cr.dcm"], abs=1e-4)
    assert "model.site_calibrated" in {r["code"] for r in verdicts["dx.dcm"]["reasons"]}
    assert logits["dx.dcm"] == pytest.approx(logits["cr.dcm"] - cal.offset, abs=1e-4)  # same pixels


def test_the_heat_map_evidence_moves_with_the_calibrated_score(site) -> None:
    from edge_agent.config import load_config
    from edge_agent.detect import open_detector
    from edge_agent.evidence import Evidence
    from edge_agent.pipeline import Pipeline

    work, _ = site
    (work / "cal-only.yaml").write_text(
        f"forensics:\n  metadata: false\n  model_calibration: {work / 'device' / 'model-calibration.json'}\n")
    settings = load_config(work / "cal-only.yaml").forensics
    detector = open_detector(None)
    image = sorted((work / "later").glob("*.dcm"))[0]
    (plain,) = Pipeline(detector).process_detailed(image)
    (calibrated,) = Pipeline(detector, evidence=Evidence(settings)).process_detailed(image)
    offset = settings.model_calibration.offset
    assert offset > 0.1
    assert calibrated.score.logit == pytest.approx(plain.score.logit - offset, abs=1e-6)
    np.testing.assert_allclose(calibrated.score.tile_logits, plain.score.tile_logits - offset, atol=1e-5)
    np.testing.assert_allclose(calibrated.score.cam, plain.score.cam - offset, atol=1e-5)
    # the heat map is drawn from the calibrated CAM: a tile logit is still the mean of its CAM cells
    np.testing.assert_allclose(calibrated.score.cam.mean(axis=(1, 2)), calibrated.score.tile_logits, atol=1e-3)


def test_a_calibration_learned_for_another_model_version_stops_the_scan_naming_both(site, tmp_path: Path) -> None:
    work, _ = site
    data = json.loads((work / "device" / "model-calibration.json").read_text())
    data["model_version"] = "0.9.0"
    (tmp_path / "old.json").write_text(json.dumps(data))
    (tmp_path / "agent.yaml").write_text(f"forensics:\n  model_calibration: {tmp_path / 'old.json'}\n")
    scan = _cli("scan", "--jsonl", "--config", tmp_path / "agent.yaml", work / "later", cwd=tmp_path)
    assert scan.returncode == 2 and scan.stdout == ""
    assert "learned for model xray-npr 0.9.0" in scan.stderr and "run edge-agent learn again" in scan.stderr


def test_a_damaged_calibration_file_is_a_config_error_naming_it(site, tmp_path: Path) -> None:
    from edge_agent.config import load_config

    work, _ = site
    text = (work / "device" / "model-calibration.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    (tmp_path / "agent.yaml").write_text(f"forensics:\n  model_calibration: {tmp_path / 'cut.json'}\n")
    with pytest.raises(ConfigError, match=r"forensics.model_calibration: .*cut.json"):
        load_config(tmp_path / "agent.yaml")


@pytest.mark.parametrize(("key", "value"), [
    ("site_quantiles", "123"), ("site_quantiles", [True, True, True]), ("site_quantiles", [0.0, 1.0]),
    ("site_quantiles", [1e308, 1e308, 1e308]), ("site_quantiles", {"1": 0, "2": 0, "3": 0}),
    ("n_images", float("nan")), ("n_images", 20.5), ("n_images", True), ("modality", None), ("modality", ["DX"]),
])
def test_a_calibration_file_with_wrong_values_is_a_config_error_naming_it(site, tmp_path: Path, key: str, value) -> None:
    from edge_agent.config import load_config

    work, _ = site
    data = json.loads((work / "device" / "model-calibration.json").read_text())
    data[key] = value
    (tmp_path / "bad.json").write_text(json.dumps(data))
    (tmp_path / "agent.yaml").write_text(f"forensics:\n  model_calibration: {tmp_path / 'bad.json'}\n")
    with pytest.raises(ConfigError, match=rf"forensics.model_calibration: .*bad.json: site calibration: ({key}|an offset)"):
        load_config(tmp_path / "agent.yaml")


def test_the_frames_of_one_file_count_as_one_acquisition(tmp_path: Path) -> None:
    dx_acquisitions(tmp_path / "first", PANEL, 8, seed=6)
    panel, rng = Panel(PanelSpec(PANEL, shape=SHAPE)), np.random.default_rng(60)
    cine = np.stack([np.round(panel.acquire(rng) * 4095).astype(np.uint16) for _ in range(16)])
    save(new_image(cine, bits_stored=12, Modality="DX"), tmp_path / "first" / "cine.dcm")
    run = _cli("learn", "--out", tmp_path / "device", "first", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no model calibration: 9 acquisition(s) of the modality" in run.stderr  # not 24 frames
    assert not (tmp_path / "device" / "model-calibration.json").exists()


def test_learn_for_a_precision_the_model_does_not_ship_enrols_without_calibration_and_says_why(site, tmp_path: Path) -> None:
    work, _ = site
    run = _cli("learn", "--precision", "int8", "--out", tmp_path / "device", work / "first", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no model calibration: model xray-npr ships no ONNX file with precision in ('int8',)" in run.stderr
    assert (tmp_path / "device" / "fingerprint.bin").is_file()
    assert not (tmp_path / "device" / "model-calibration.json").exists()


def test_learn_takes_the_model_settings_from_the_agents_config(site, tmp_path: Path) -> None:
    work, _ = site
    (tmp_path / "agent.yaml").write_text("model:\n  precision: int8\n  backend: onnxruntime\n")
    run = _cli("learn", "--config", tmp_path / "agent.yaml", "--out", tmp_path / "device", work / "first", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no model calibration: model xray-npr ships no ONNX file with precision in ('int8',)" in run.stderr
    # a wrong key in the config is named, and the enrolment still happens without the calibration
    (tmp_path / "bad.yaml").write_text("model:\n  precison: fp32\n")
    run = _cli("learn", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "device2", work / "first", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "no model calibration:" in run.stderr and "precison" in run.stderr
    assert (tmp_path / "device2" / "fingerprint.bin").is_file()


def test_too_few_acquisitions_learn_the_profile_but_skip_the_calibration_with_a_note(tmp_path: Path) -> None:
    dx_acquisitions(tmp_path / "first", PANEL, 8, seed=5)
    run = _cli("learn", "--out", tmp_path / "device", "first", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"no model calibration: 8 acquisition(s) of the modality; it needs at least {MIN_IMAGES}" in run.stderr
    assert not (tmp_path / "device" / "model-calibration.json").exists()
    assert (tmp_path / "device" / "noise-profile.json").is_file() and "model_calibration" not in run.stdout


def test_the_threshold_is_raised_by_the_largest_percentile_excess_and_never_lowered() -> None:
    manifest = load_manifest(default_model_dir())
    ref = np.array(reference_quantiles(manifest))
    lower = SiteCalibration.learn(list(np.linspace(ref[0] - 3, ref[0] - 1, MIN_IMAGES)), manifest)
    assert lower.offset == 0.0 and "thresholds stay as shipped" in lower.describe()
    # a site spread wider than the reference: its median sits at the reference's, its 90th percentile 2 logits above
    wide = [ref[0]] * 16 + [ref[2] + 2.0] * 4
    assert np.median(wide) == ref[0]
    cal = SiteCalibration.learn(wide, manifest)
    assert cal.offset == pytest.approx(2.0)
    assert not cal.large and "taken off this image's logit" in cal.describe()
    far = SiteCalibration.learn([ref[2] + LARGE_OFFSET + 1.0] * MIN_IMAGES, manifest)
    assert far.large and "hardly separates this device's images from fakes" in far.describe()
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGES}"):
        SiteCalibration.learn([ref[0]] * (MIN_IMAGES - 1), manifest)
    assert SiteCalibration.from_json(cal.to_json()) == cal


def test_a_signed_enrolment_covers_the_calibration_and_an_edited_one_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from trust_factory import new_fleet

    from edge_agent.trust.enrollment import DeviceState

    ca = new_fleet(tmp_path / "ca")
    state = DeviceState(tmp_path / "identity")
    state.install(ca.issue_device(state.init("dx-0020")).public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    dx_acquisitions(tmp_path / "first", PANEL, MIN_IMAGES, seed=8)
    dx_acquisitions(tmp_path / "later", PANEL, 1, seed=80)
    run = _cli("learn", "--identity", "identity", "--out", "device", "first", cwd=tmp_path)
    assert run.returncode == 0 and "model_calibration: " in run.stdout, run.stderr
    (tmp_path / "agent.yaml").write_text(run.stdout)
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "later", cwd=tmp_path)
    assert scan.returncode in (0, 1), scan.stderr
    assert "model.site_calibrated" in {r["code"] for r in json.loads(scan.stdout)["reasons"]}
    cal = json.loads((tmp_path / "device" / "model-calibration.json").read_text())
    cal["site_quantiles"] = [q + 3.0 for q in cal["site_quantiles"]]  # an attacker who wants fakes to pass
    (tmp_path / "device" / "model-calibration.json").write_text(json.dumps(cal))
    scan = _cli("scan", "--jsonl", "--config", "agent.yaml", "later", cwd=tmp_path)
    assert scan.returncode == 2 and scan.stdout == ""
    assert "model-calibration.json differs from what device dx-0020 signed" in scan.stderr
