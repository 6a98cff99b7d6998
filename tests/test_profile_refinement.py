"""The agent refines its device's noise profile from the images it judges authentic: a detector
whose calibration drifts stays authentic, generated images teach it nothing, and what it learned
survives a restart (``forensics.refine_profile``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from agent_harness import AgentProcess, journal_records, run_cli, wait_for, write_config
from cryptography.hazmat.primitives import serialization
from sample_images import new_image, save
from trust_factory import new_device, new_fleet

from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.evidence import Evidence, EvidenceSettings
from edge_agent.forensics import NoiseProfile
from edge_agent.forensics.noise import image_noise
from edge_agent.forensics.refine import ProfileRefiner
from edge_agent.forensics.simulator import Panel, PanelSpec, generated_like
from edge_agent.tiling import grid_tiles
from edge_agent.trust.certs import utcnow
from edge_agent.trust.enrollment import DeviceState
from edge_agent.trust.enrolment_signing import DeviceSeal
from edge_agent.trust.fleet_ca import FleetCA
from edge_agent.trust.jws import b64url_decode, b64url_encode

SHAPE = (512, 640)


def _features(img: np.ndarray):
    tiles, _ = grid_tiles(img, 256, 64)
    return image_noise(tiles)


def _base_profile(path: Path, rng: np.random.Generator, n: int = 12) -> NoiseProfile:
    """What `edge-agent learn` would learn from ``n`` first acquisitions of panel 31."""
    panel = Panel(PanelSpec(31, shape=SHAPE))
    profile = NoiseProfile.fit([_features(panel.acquire(rng)) for _ in range(n)], modality="DX")
    path.write_text(profile.to_json())
    return profile


def _means(profile: NoiseProfile) -> dict[str, float]:
    return {k: s.mean for k, s in profile.stats.items()}


def _settings(profile_path: Path, state: Path) -> EvidenceSettings:
    text = profile_path.read_text()
    return EvidenceSettings(noise_profile=NoiseProfile.from_json(text), refine_state=state,
                            noise_profile_sha256=ProfileRefiner.sha256_of(text))


def _judge(evidence: Evidence, img: np.ndarray, learn_as: str | None = None) -> float:
    """The physics layer's score for one frame; then, like the pipeline, offer it for learning
    with the verdict ``learn_as``."""
    from edge_agent.decode import DecodedImage, ImageFacts

    tiles, origins = grid_tiles(img, 256, 64)
    facts = ImageFacts(container="dicom", file_sha256="", pixel_sha256="", rows=img.shape[0], columns=img.shape[1],
                       frames=1, bits_stored=12, photometric="MONOCHROME2", modality="DX")
    frame = evidence.frame_evidence(img, tiles, origins, DecodedImage(frames=(img,), facts=facts))
    (physics,) = frame.findings
    if learn_as is not None:
        evidence.learn(frame, learn_as)
    assert physics.score is not None
    return physics.score


def test_a_detector_whose_calibration_drifts_stays_authentic_when_the_profile_is_refined(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _base_profile(tmp_path / "profile.json", rng)
    fixed = Evidence(EvidenceSettings(noise_profile=NoiseProfile.from_json((tmp_path / "profile.json").read_text())))
    refined = Evidence(_settings(tmp_path / "profile.json", tmp_path / "state" / "refined.json"), refine=True)
    panel = Panel(PanelSpec(31, shape=SHAPE))
    prnu = panel.gain - 1.0
    n = 120
    fixed_scores, refined_scores = [], []
    for i in range(n):  # the flat-field calibration goes stale: gain non-uniformity 1.5 % -> 2.5 %
        panel.gain = (1.0 + prnu * (1.0 + (2.0 / 3.0) * i / (n - 1))).astype(np.float32)
        img = panel.acquire(rng)
        fixed_scores.append(_judge(fixed, img))
        refined_scores.append(_judge(refined, img, learn_as="authentic"))
    assert sum(s >= 0.5 for s in fixed_scores[-10:]) >= 8  # the profile as learned calls them abnormal
    assert sum(s >= 0.5 for s in refined_scores[-10:]) == 0
    assert refined.refiner is not None and refined.refiner.learned >= 30
    saved = json.loads((tmp_path / "state" / "refined.json").read_text())  # saved every 25 images
    assert saved["learned"] >= 25 and saved["profile"]["modality"] == "DX"


def test_images_that_only_just_pass_cannot_walk_the_profile_away(tmp_path: Path) -> None:
    """An attacker whose images pass as authentic feeds ones at the edge of the current profile,
    again and again: the profile moves slowly and never beyond 6 sd of the learned one."""
    from edge_agent.forensics import NoiseFeatures

    base = _base_profile(tmp_path / "profile.json", np.random.default_rng(6))
    refiner = ProfileRefiner(base, "x" * 64, tmp_path / "refined.json")

    def at_edge(profile: NoiseProfile, z: float) -> NoiseFeatures:  # every feature z sd above the mean
        probe = NoiseFeatures({k: s.mean + 1.0 for k, s in profile.stats.items()}, flat_blocks=100)
        per_unit = profile.z(probe)  # 1 / sd of each feature
        return NoiseFeatures({k: s.mean + z / per_unit[k] for k, s in profile.stats.items()}, flat_blocks=100)

    accepted = []
    for _ in range(400):
        accepted.append(refiner.offer(at_edge(refiner.profile, 2.9), "authentic"))
        if len(accepted) == 1:
            first = base.z(NoiseFeatures({k: s.mean for k, s in refiner.profile.stats.items()}, flat_blocks=100))
    assert accepted[0] and max(first.values()) <= 2.9 / 51 + 1e-9  # one image: 1/51 of its distance
    drift = base.z(NoiseFeatures({k: s.mean for k, s in refiner.profile.stats.items()}, flat_blocks=100))
    assert max(drift.values()) <= 6.0  # never walked beyond the anchor
    assert sum(accepted) <= 40 and not any(accepted[-300:])  # it stopped learning from them


def test_generated_and_suspicious_images_teach_the_profile_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = _base_profile(tmp_path / "profile.json", rng)
    evidence = Evidence(_settings(tmp_path / "profile.json", tmp_path / "refined.json"), refine=True)
    for kind in ("uniform_grain", "too_smooth", "upsampled"):
        # even when the rest of the evidence let it through as authentic, its noise is atypical
        assert _judge(evidence, generated_like(rng, SHAPE, kind), learn_as="authentic") >= 0.5
    authentic = Panel(PanelSpec(31, shape=SHAPE)).acquire(rng)
    _judge(evidence, authentic, learn_as="suspicious")  # a flagged image is never learned
    assert evidence.refiner is not None and evidence.refiner.learned == 0
    assert _means(evidence.refiner.profile) == _means(base)
    _judge(evidence, authentic, learn_as="authentic")
    assert evidence.refiner.learned == 1


def test_a_state_from_an_earlier_enrolment_is_ignored_and_an_unreadable_one_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(2)
    base = _base_profile(tmp_path / "profile.json", rng)
    state = tmp_path / "refined.json"
    first = ProfileRefiner(base, "a" * 64, state)
    assert first.offer(_features(Panel(PanelSpec(31, shape=SHAPE)).acquire(rng)), "authentic")
    first.save()
    assert ProfileRefiner(base, "a" * 64, state).learned == 1  # same enrolment: picked up again
    with caplog.at_level(logging.WARNING):
        again = ProfileRefiner(base, "b" * 64, state)  # `edge-agent learn` ran again
    assert again.learned == 0 and _means(again.profile) == _means(base)
    assert "grew from another profile" in caplog.text
    state.write_text('{"format": "edge-agent-refined-noise-profile", "version": 1, "profile": ')  # torn by hand
    with caplog.at_level(logging.ERROR):
        broken = ProfileRefiner(base, "a" * 64, state)
    assert _means(broken.profile) == _means(base) and not state.exists()
    assert (tmp_path / "refined.json.unreadable").exists() and "cannot be used" in caplog.text
    for text in ("[]", "null", '{"format": "edge-agent-refined-noise-profile", "version": 1, "learned": Infinity}'):
        state.write_text(text)
        assert ProfileRefiner(base, "a" * 64, state).learned == 0 and not state.exists()  # aside, agent goes on
    # a state from an earlier enrolment is replaced at the next save, even before anything is learned
    ProfileRefiner(base, "a" * 64, state).save()
    stale = ProfileRefiner(base, "c" * 64, state)
    stale.save()
    assert json.loads(state.read_text())["base_sha256"] == "c" * 64


def test_refining_needs_a_profile_to_start_from(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("forensics:\n  refine_profile: state/refined.json\n")
    with pytest.raises(ConfigError, match="forensics.refine_profile is set but forensics.noise_profile is not"):
        load_config(tmp_path / "agent.yaml")
    (tmp_path / "agent.yaml").write_text("forensics:\n  refine_profile: [state]\n")
    with pytest.raises(ConfigError, match="forensics.refine_profile: expected a file path"):
        load_config(tmp_path / "agent.yaml")
    _base_profile(tmp_path / "profile.json", np.random.default_rng(8))
    (tmp_path / "agent.yaml").write_text("forensics:\n  noise_profile: profile.json\n  refine_profile: ./profile.json\n")
    with pytest.raises(ConfigError, match="is one of the learned files the agent reads"):
        load_config(tmp_path / "agent.yaml")  # the agent would rewrite the learned profile itself


def _enrolled(folder: Path, ca: FleetCA, device_id: str) -> Path:
    """An enrolment folder as `edge-agent enroll init` + `install` leave it."""
    state = DeviceState(folder)
    cert = ca.issue_device(state.init(device_id))
    state.install(cert.public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    return folder


def test_with_a_device_identity_only_a_refined_profile_this_device_signed_is_read_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    base = _base_profile(tmp_path / "profile.json", rng)
    ca = new_fleet(tmp_path / "ca")
    ours, other = _enrolled(tmp_path / "ours", ca, "dx-0001"), _enrolled(tmp_path / "other", ca, "dx-0002")
    state = tmp_path / "state" / "refined.json"
    settings = dataclasses.replace(_settings(tmp_path / "profile.json", state), device_identity=ours)
    evidence = Evidence(settings, refine=True)
    panel = Panel(PanelSpec(31, shape=SHAPE))
    for _ in range(4):
        _judge(evidence, panel.acquire(rng), learn_as="authentic")
    assert evidence.refiner is not None and evidence.refiner.learned >= 2
    learned, refined = evidence.refiner.learned, _means(evidence.refiner.profile)
    evidence.close()

    jws = json.loads(state.read_bytes())
    assert set(jws) == {"protected", "payload", "signature"}  # the state travels inside the device's signature
    body = json.loads(b64url_decode(jws["payload"]))
    assert body["learned"] == learned
    for refine in (True, False):  # the agent after a restart, and scan (certificate only, no key)
        again = Evidence(settings, refine=refine)
        assert again.refiner is not None and again.refiner.learned == learned
        assert _means(again.refiner.profile) == pytest.approx(refined)

    # someone who can write the file but not use the key widens the profile: refused, nothing lost
    body["profile"]["features"] = {k: [n, mean, m2 * 100] for k, (n, mean, m2) in body["profile"]["features"].items()}
    forged = {
        "edited payload": json.dumps({**jws, "payload": b64url_encode(json.dumps(body).encode())}).encode(),
        "unsigned state": json.dumps(body).encode(),
        "another device's signature": DeviceSeal.of(other, signing=True).sign(json.dumps(body).encode()),
    }
    for what, data in forged.items():
        state.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            refused = Evidence(settings, refine=True)
        assert refused.refiner is not None and refused.refiner.learned == 0, what
        assert _means(refused.refiner.profile) == _means(base), what
        assert "cannot be used" in caplog.text, what
        assert not state.exists() and state.with_name("refined.json.unreadable").read_bytes() == data, what
    assert "signed by device 'dx-0002', not by this device ('dx-0001')" in caplog.text


def test_a_device_that_cannot_sign_keeps_learning_in_memory_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(6)
    base = _base_profile(tmp_path / "profile.json", rng)
    ca = new_fleet(tmp_path / "ca")
    now = utcnow()
    expired = new_device(ca, "dx-0003", issued=now - dt.timedelta(days=60), days=30)
    valid = new_device(ca, "dx-0003", issued=now - dt.timedelta(days=1), days=30)

    class PulledToken:  # a PKCS#11 token removed mid-run: the library raises its own error type
        def public_key(self):  # noqa: ANN201
            return valid.key.public_key()

        def sign_es256(self, data: bytes) -> bytes:
            raise RuntimeError("CKR_DEVICE_REMOVED")

    seals = {"certificate expired": DeviceSeal("dx-0003", (ca.certificate(),), expired.key, (expired.cert,)),
             "CKR_DEVICE_REMOVED": DeviceSeal("dx-0003", (ca.certificate(),), PulledToken(), (valid.cert,))}
    for why, seal in seals.items():
        state = tmp_path / f"{why}.json"
        refiner = ProfileRefiner(base, "a" * 64, state, seal=seal, save_every=1)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert refiner.offer(_features(Panel(PanelSpec(31, shape=SHAPE)).acquire(rng)), "authentic")
        assert refiner.learned == 1 and _means(refiner.profile) != _means(base)  # kept in memory
        assert not state.exists() and "cannot save the refined noise profile" in caplog.text and why in caplog.text


def test_signed_enrolments_need_the_device_identity_to_refine(tmp_path: Path) -> None:
    _base_profile(tmp_path / "profile.json", np.random.default_rng(9))
    (tmp_path / "fleet-ca.pem").write_text("not checked before the settings are complete")
    (tmp_path / "agent.yaml").write_text("forensics:\n  noise_profile: profile.json\n  enrolment_trust: fleet-ca.pem\n"
                                         "  refine_profile: state/refined.json\n")
    with pytest.raises(ConfigError, match="set forensics.device_identity to this device's enrolment folder"):
        load_config(tmp_path / "agent.yaml")
    (tmp_path / "agent.yaml").write_text("forensics:\n  noise_profile: profile.json\n  refine_profile: state/r.json\n"
                                         "  device_identity: nowhere\n")
    with pytest.raises(ConfigError, match="is not an enrolled device's folder"):
        load_config(tmp_path / "agent.yaml")
    (tmp_path / "agent.yaml").write_text("forensics:\n  noise_profile: profile.json\n  device_identity: nowhere\n")
    with pytest.raises(ConfigError, match="device_identity is set but forensics.refine_profile is not"):
        load_config(tmp_path / "agent.yaml")


def _dicom(folder: Path, name: str, img: np.ndarray) -> Path:
    px = np.round(img * 4095).astype(np.uint16)
    return save(new_image(px, bits_stored=12, Modality="DX"), folder / name)


def test_the_agent_keeps_what_it_learned_across_a_restart_and_scan_never_writes_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    _base_profile(tmp_path / "profile.json", rng)
    state = tmp_path / "state" / "noise-profile.refined.json"
    cfg = write_config(tmp_path, model={"backend": "onnxruntime", "threads": 1},
                       hot_folder={"path": str(tmp_path / "hot"), "stable_seconds": 0.3, "poll_seconds": 0.1},
                       forensics={"noise_profile": "profile.json", "refine_profile": "state/noise-profile.refined.json"})
    (tmp_path / "hot").mkdir()
    panel = Panel(PanelSpec(31, shape=SHAPE))
    staging = tmp_path / "staging"
    staging.mkdir()
    files = [_dicom(staging, f"ours{i}.dcm", panel.acquire(rng)) for i in range(6)]
    files.append(_dicom(staging, "grain.dcm", generated_like(rng, SHAPE, "uniform_grain", noise_std=0.012)))

    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    for f in files:
        f.rename(tmp_path / "hot" / f.name)
    journal = tmp_path / "state" / "verdicts.jsonl"
    wait_for(lambda: len(journal_records(journal)) == len(files), timeout=120, what="all verdicts")
    assert agent.stop() == 0, agent.log_text()
    verdicts = {r["name"]: r["verdicts"][0]["verdict"] for r in journal_records(journal)}
    assert verdicts["grain.dcm"] in ("suspicious", "synthetic"), verdicts
    authentic = sum(v == "authentic" for name, v in verdicts.items() if name.startswith("ours"))
    assert authentic >= 4, verdicts
    saved = json.loads(state.read_text())  # written at shutdown (fewer than 25 images)
    assert 1 <= saved["learned"] <= authentic  # the grain image is not among them
    assert saved["base_sha256"] == ProfileRefiner.sha256_of((tmp_path / "profile.json").read_text())

    before = state.read_bytes()
    probe = _dicom(staging, "probe.dcm", panel.acquire(rng))
    scan = run_cli("scan", "--jsonl", "--config", str(cfg), str(probe))
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout.splitlines()[0])["verdict"] == "authentic"
    assert state.read_bytes() == before  # scan reads the refined profile, never teaches it

    again = AgentProcess(cfg, tmp_path / "agent2.log").start()
    wait_for(lambda: "images learned on this device" in again.log_text(), timeout=60, what="refined state loaded")
    assert again.stop() == 0
    assert f"({saved['learned']} images learned on this device)" in again.log_text()
