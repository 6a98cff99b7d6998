"""A collector verifies signed verdicts with the fleet CA alone, and rejects each kind of bad
envelope with its own reason — counted, never a crash."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateRevokedError,
    ChainError,
    DeviceMismatchError,
    EnvelopeError,
    ReplayError,
    SignatureError,
)
from edge_agent.trust.envelope import build_envelope
from edge_agent.trust.jws import b64url_decode, b64url_encode
from edge_agent.trust.verify import ReplayState, Verifier, verify_envelope
from trust_factory import NOW, new_device, new_fleet, payload_for


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ca = new_fleet(tmp_path_factory.mktemp("ca"))
    return ca, new_device(ca)


def _sign(device, **payload_kw) -> bytes:  # type: ignore[no-untyped-def]
    return build_envelope(payload_for(device_id=payload_kw.pop("device_id", device.device_id), **payload_kw),
                          device.key, [device.cert])


def test_valid_envelope_verifies_and_reports_the_payload(fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    v = verify_envelope(_sign(device), [ca.certificate()], now=NOW)
    assert (v.device_id, v.seq, v.payload["verdict"]["label"]) == ("ct-0042", 1, "suspicious")
    assert "VALID suspicious" in v.summary()


def test_certificate_expired_at_issue_time_is_rejected(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path)
    device = new_device(ca, issued=NOW - dt.timedelta(days=40), days=30)
    with pytest.raises(CertificateExpiredError, match="expired"):
        verify_envelope(_sign(device), [ca.certificate()], now=NOW)


def test_verdict_signed_before_expiry_still_verifies_after_it(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path)
    device = new_device(ca, issued=NOW - dt.timedelta(days=20), days=30)
    later = NOW + dt.timedelta(days=60)  # queued in an outbox during an outage
    assert verify_envelope(_sign(device), [ca.certificate()], now=later).seq == 1


def test_certificate_not_yet_valid_at_issue_time_is_rejected(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path)
    device = new_device(ca, issued=NOW + dt.timedelta(days=3))
    with pytest.raises(CertificateNotYetValidError, match="device clock"):
        verify_envelope(_sign(device), [ca.certificate()], now=NOW)


def test_revoked_device_is_rejected_once_the_crl_lists_it(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path)
    device = new_device(ca)
    envelope = _sign(device)
    assert verify_envelope(envelope, [ca.certificate()], [ca.publish_crl(now=NOW)], now=NOW)
    ca.revoke(device.cert.serial_number, now=NOW)
    with pytest.raises(CertificateRevokedError, match="revoked"):
        verify_envelope(envelope, [ca.certificate()], [ca.publish_crl(now=NOW)], now=NOW)


def test_a_crl_from_another_ca_revokes_nothing(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    other = new_fleet(tmp_path / "other", name="Test Fleet CA")  # same name, different key
    index = json.loads(other.index_path.read_text())
    index["issued"][format(device.cert.serial_number, "x")] = {"revoked_at": NOW.isoformat()}
    other.index_path.write_text(json.dumps(index))
    forged_crl = other.publish_crl(now=NOW)
    assert verify_envelope(_sign(device), [ca.certificate()], [forged_crl], now=NOW)


def test_device_from_a_foreign_ca_is_rejected(tmp_path: Path, fleet) -> None:  # type: ignore[no-untyped-def]
    ca, _ = fleet
    foreign = new_fleet(tmp_path, name="Test Fleet CA")  # even with the same CA name
    intruder = new_device(foreign)
    with pytest.raises(ChainError, match="does not chain"):
        verify_envelope(_sign(intruder), [ca.certificate()], now=NOW)


def test_device_cannot_sign_for_another_device_id(fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    with pytest.raises(DeviceMismatchError, match="ct-0099"):
        verify_envelope(_sign(device, device_id="ct-0099"), [ca.certificate()], now=NOW)


def test_altered_payload_is_rejected_as_bad_signature(fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    env = json.loads(_sign(device))
    payload = json.loads(b64url_decode(env["payload"]))
    payload["verdict"]["label"] = "authentic"
    env["payload"] = b64url_encode(json.dumps(payload).encode())
    with pytest.raises(SignatureError):
        verify_envelope(json.dumps(env), [ca.certificate()], now=NOW)


def test_replayed_sequence_number_is_rejected_and_state_survives_a_restart(fleet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    state = ReplayState()
    first, second = _sign(device, seq=7), _sign(device, seq=8)
    verify_envelope(first, [ca.certificate()], now=NOW, replay_state=state)
    state.save(tmp_path / "state.json")
    restored = ReplayState.load(tmp_path / "state.json")
    with pytest.raises(ReplayError, match="seq 7"):
        verify_envelope(first, [ca.certificate()], now=NOW, replay_state=restored)
    verify_envelope(second, [ca.certificate()], now=NOW, replay_state=restored)
    # a new boot of the same device may reuse nothing, but its own triple is new
    verify_envelope(_sign(device, seq=9, boot_id="00000000-0000-4000-8000-000000000001"),
                    [ca.certificate()], now=NOW, replay_state=restored)


def test_replay_window_forgets_nothing_below_its_floor() -> None:
    state = ReplayState(window=3)
    for seq in (1, 2, 3, 4, 5):
        state.record("d", "b", seq)
    assert state.seen("d", "b", 1) and state.seen("d", "b", 5) and not state.seen("d", "b", 6)


def test_forged_envelope_does_not_poison_the_replay_state(fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    foreign = new_device(new_fleet(Path(ca.directory).parent / "forger"))
    state = ReplayState()
    with pytest.raises(EnvelopeError):
        verify_envelope(_sign(foreign, device_id=foreign.device_id, seq=5), [ca.certificate()], now=NOW, replay_state=state)
    assert not state.seen("ct-0042", payload_for()["boot_id"], 5)  # type: ignore[arg-type]


def test_every_truncation_and_byte_flip_is_rejected_with_a_reason_and_counted(fleet) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    good = _sign(device)
    verifier = Verifier([ca.certificate()])
    rng = random.Random(4)
    bad: list[bytes] = [good[:n] for n in range(0, len(good), 7)]
    for _ in range(1500):
        b = bytearray(good)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        bad.append(bytes(b))
    bad += [b"", b"null", b"[]", b"{}", b'{"protected":1,"payload":2,"signature":3}', b"\xff" * 50]
    for data in bad:
        outcome = verifier.verify(data, now=NOW)
        assert not outcome.ok or data == good, outcome
        assert outcome.reason != "verifier_error", outcome.message
    assert verifier.verify(good, now=NOW).ok
    assert verifier.stats["valid"] == 1
    assert sum(verifier.stats.values()) == len(bad) + 1
    assert set(verifier.stats) <= {"valid", "bad_format", "bad_signature", "untrusted_chain", "device_mismatch"}


def test_verify_cli_exit_status_reason_and_replay_state(fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ca, device = fleet
    env = tmp_path / "envelope.json"
    env.write_bytes(build_envelope(payload_for(issued_at=dt.datetime.now(dt.timezone.utc), seq=42), device.key, [device.cert]))
    args = ["verify", str(env), "--trust", str(ca.cert_path), "--state", str(tmp_path / "seen.json")]
    assert main(args) == 0
    assert "VALID suspicious" in capsys.readouterr().out
    assert main(args) == 1
    assert "REJECTED replay" in capsys.readouterr().out
    env.write_bytes(env.read_bytes()[:-30])
    assert main(["verify", str(env), "--trust", str(ca.cert_path)]) == 1
    assert "REJECTED bad_format" in capsys.readouterr().out
