"""A device whose key lives in a hardware token: generated inside it (SoftHSM2 here, the same
PKCS#11 calls as a smart card, HSM or TPM via tpm2-pkcs11), never extractable, and still producing
envelopes any verifier accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.trust.enrollment import DeviceState
from edge_agent.trust.envelope import VerdictSigner
from edge_agent.trust.pkcs11_keys import Pkcs11KeyStore
from edge_agent.trust.sequence import SequenceStore
from edge_agent.trust.verify import verify_envelope
from trust_factory import dicom_path, new_fleet, verdict_for

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 not installed")
MODULE = next((p for p in ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so") if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(MODULE is None or shutil.which("softhsm2-util") is None,
                                reason="SoftHSM2 not installed (apt-get install softhsm2)")
PIN = "1234"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh SoftHSM2 token in a temp dir (SOFTHSM2_CONF), so no system token is touched."""
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "edge-test", "--so-pin", "5678", "--pin", PIN],
                   check=True, capture_output=True)
    os.environ["EDGE_AGENT_PKCS11_PIN"] = PIN
    yield "edge-test"
    os.environ.pop("EDGE_AGENT_PKCS11_PIN", None)
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


def test_wrong_pin_is_a_clear_key_store_error(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs first: once a session has logged in, PKCS#11 reuses that login for the process.
    assert MODULE is not None
    from edge_agent.errors import KeyStoreError

    monkeypatch.setenv("EDGE_AGENT_PKCS11_PIN", "0000")
    with pytest.raises(KeyStoreError, match="cannot open PKCS#11 token 'edge-test'"):
        Pkcs11KeyStore(MODULE, token, "edge-agent-ct-hsm-01").load()


def test_device_key_generated_in_a_softhsm_token_signs_verdicts_that_verify(token: str, tmp_path: Path) -> None:
    assert MODULE is not None
    ca = new_fleet(tmp_path / "ca")
    state = DeviceState(tmp_path / "state")
    csr = state.init("ct-hsm-01", Pkcs11KeyStore(MODULE, token, "edge-agent-ct-hsm-01"))
    assert not (tmp_path / "state" / "device.key").exists()  # no key file: the key is in the token
    state.install(ca.issue_device(csr).public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    device = state.load()
    signer = VerdictSigner(device.key, device.chain, SequenceStore(state.sequence_path), device.site_secret)
    envelope = signer.sign(verdict_for(dicom_path()))
    verified = verify_envelope(envelope, [ca.certificate()])
    assert verified.device_id == "ct-hsm-01"


def test_token_key_is_sensitive_and_not_extractable(token: str) -> None:
    assert MODULE is not None
    store = Pkcs11KeyStore(MODULE, token, "edge-agent-probe")
    key = store.generate()
    from pkcs11 import Attribute, ObjectClass

    private = key.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="edge-agent-probe")
    assert private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE] and private[Attribute.LOCAL]
    with pytest.raises(pkcs11.PKCS11Error):
        private[Attribute.VALUE]
