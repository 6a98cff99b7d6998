"""One verdict from all evidence: the model, forensic layers and the capture signature (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dicom_signature_pki import cropped_radiograph, make_ca, make_device_cert, write_pki
from edge_agent.dicom_signature import ProvenanceResult, load_device_signer, sign_dicom
from edge_agent.forensics import LayerFinding
from edge_agent.fusion import FusionModel, fuse
from edge_agent.manifest import Thresholds
from edge_agent.verdict import Reason

TH = Thresholds(suspicious=0.5, synthetic=0.9)
MODEL_LOW = Reason("model.below_threshold", "the detector scored low")


def test_a_layer_at_full_strength_flags_an_image_the_model_passed() -> None:
    quiet = fuse(-1.0, MODEL_LOW, [], None, TH)
    loud = fuse(-1.0, MODEL_LOW, [LayerFinding("physics", 1.0, (Reason("physics.noise_not_signal_dependent", "x"),))], None, TH)
    assert quiet.label == "authentic"
    assert loud.label == "synthetic" and loud.score > quiet.score
    assert [r.code for r in loud.reasons] == ["model.below_threshold", "physics.noise_not_signal_dependent"]


def test_a_layer_that_could_not_judge_changes_nothing_but_says_why() -> None:
    why = Reason("fingerprint.geometry_mismatch", "image is cropped")
    a = fuse(0.3, MODEL_LOW, [], None, TH)
    b = fuse(0.3, MODEL_LOW, [LayerFinding("fingerprint", None, (why,))], None, TH)
    assert a.score == b.score and why in b.reasons


def test_an_invalid_capture_signature_is_synthetic_whatever_the_model_says() -> None:
    broken = ProvenanceResult("invalid", None, None, "Pixel Data changed", "tags_altered")
    out = fuse(-8.0, MODEL_LOW, [], broken, TH)
    assert out.label == "synthetic" and out.score >= TH.synthetic
    assert out.reasons[0].code == "provenance.invalid"


def test_a_valid_capture_signature_proves_the_pixels_whatever_the_model_says() -> None:
    good = ProvenanceResult("valid", "CN=CR-0042", datetime.now(timezone.utc), "ok", "")
    out = fuse(8.0, Reason("model.above_threshold", "high"), [], good, TH)
    assert out.label == "authentic" and out.score < TH.suspicious
    assert out.reasons[0].code == "provenance.valid"


def test_fusion_weights_round_trip_and_reject_nonsense() -> None:
    w = FusionModel(bias=-0.5, model=1.2, physics=3.0, fingerprint=9.0, metadata=2.0, fitted_on="unit test")
    assert FusionModel.from_json(w.to_json()) == w
    with pytest.raises(ValueError):
        FusionModel(model=0.0)
    with pytest.raises(TypeError):
        FusionModel.from_json(json.dumps({"physic": 1.0}))


def _scan(*args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "scan", "--jsonl", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_scan_reports_a_signed_radiograph_altered_after_capture_as_synthetic(tmp_path: Path, tiny_model_dir: Path) -> None:
    pki = write_pki(tmp_path / "pki", make_ca(), make_device_cert(make_ca()))
    signed = sign_dicom(cropped_radiograph(), load_device_signer(pki.key_pem, pki.cert_pem))
    (tmp_path / "intact.dcm").write_bytes(signed)
    altered = bytearray(signed)
    altered[len(signed) // 2] ^= 0x01  # one bit of Pixel Data (the signature sequence FFFA,FFFA sits at the end)
    (tmp_path / "altered.dcm").write_bytes(bytes(altered))
    config = tmp_path / "agent.yaml"
    config.write_text(f"forensics:\n  capture_trust: {pki.ca_pem}\n")
    rows = {Path(r["path"]).name: r for r in _scan("--model", str(tiny_model_dir), "--config", str(config),
                                                  str(tmp_path / "intact.dcm"), str(tmp_path / "altered.dcm"))}
    assert rows["altered.dcm"]["verdict"] == "synthetic"
    assert rows["altered.dcm"]["reasons"][0]["code"] == "provenance.invalid"
    assert rows["intact.dcm"]["verdict"] == "authentic"
    assert rows["intact.dcm"]["reasons"][0]["code"] == "provenance.valid"
    assert "forensics" in rows["intact.dcm"]["timings_ms"]


def test_agent_config_with_an_unknown_forensics_key_names_it(tmp_path: Path) -> None:
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError

    config = tmp_path / "agent.yaml"
    config.write_text("forensics:\n  noise_profil: x.json\n")
    with pytest.raises(ConfigError, match="noise_profil"):
        load_config(config)


def test_fitted_thresholds_replace_the_models_when_the_fusion_carries_them() -> None:
    # fused score sigmoid(0.5) = 0.62: suspicious under the model's thresholds (0.5 / 0.9),
    # authentic under the fit's own (0.7 / 0.95), which the verdict must then use
    own = FusionModel(suspicious=0.7, synthetic=0.95, fitted_on="unit test")
    assert fuse(0.5, MODEL_LOW, [], None, TH).label == "suspicious"
    assert fuse(0.5, MODEL_LOW, [], None, TH, own).label == "authentic"
    assert own.thresholds(TH) == Thresholds(0.7, 0.95) and FusionModel().thresholds(TH) == TH
    assert FusionModel.from_json(own.to_json()) == own
    with pytest.raises(ValueError):
        FusionModel(suspicious=0.7)  # both or neither
    with pytest.raises(ValueError):
        FusionModel(suspicious=0.9, synthetic=0.5)


def test_a_judged_offset_counts_only_when_the_layer_could_judge() -> None:
    w = FusionModel(fingerprint=8.0, fingerprint_judged=-3.0)
    present = LayerFinding("fingerprint", 0.0, ())
    absent = LayerFinding("fingerprint", 1.0, (Reason("fingerprint.absent", "x"),))
    cannot = LayerFinding("fingerprint", None, (Reason("fingerprint.geometry_mismatch", "x"),))
    base = fuse(1.0, MODEL_LOW, [], None, TH, w).score
    assert fuse(1.0, MODEL_LOW, [cannot], None, TH, w).score == base
    assert fuse(1.0, MODEL_LOW, [present], None, TH, w).score < base < fuse(1.0, MODEL_LOW, [absent], None, TH, w).score


def test_a_forensic_layer_that_crashes_on_an_image_is_a_reason_not_a_stopped_scan() -> None:
    from edge_agent.evidence import _guarded

    def broken() -> LayerFinding:
        raise ZeroDivisionError("odd image")

    finding = _guarded("physics", broken)
    assert finding.score is None and finding.reasons[0].code == "physics.error"
    assert "odd image" in finding.reasons[0].message
