"""The agent loads only a vendor-signed model: the vendor signs manifest.json (which pins every
file's SHA-256), and a changed byte anywhere — model file, manifest, signature — is refused with
the name of what failed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws as joserfc_jws
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from edge_agent.cli import main
from edge_agent.detect import open_detector
from edge_agent.errors import ModelIntegrityError, ModelSignatureError
from edge_agent.trust.keys import FileKeyStore
from edge_agent.trust.model_signing import SIGNATURE_NAME, sign_manifest, verify_signed_model
from trust_factory import new_device, new_fleet

NOW = dt.datetime.now(dt.timezone.utc)


def _model(directory: Path) -> Path:
    """A model folder with two files and a schema-1 manifest pinning them (no runtime needed)."""
    directory.mkdir(parents=True)
    files = []
    for name, fmt in (("model.onnx", "onnx"), ("openvino/model.xml", "openvino-xml")):
        p = directory / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(hashlib.sha256(name.encode()).digest() * 64)
        files.append({"path": name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "format": fmt, "precision": "fp32"})
    manifest = {"schema": 1, "name": "detector", "version": "1.2.0", "files": files,
                "input": {"name": "tiles"}, "outputs": {"logits": "logits", "cam": "cam"},
                "tiling": {"tile": 64, "max_tiles": 8, "aggregate": "max"},
                "thresholds": {"suspicious": 0.5, "synthetic": 0.9}}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("vendor")
    ca = new_fleet(d / "model-ca", name="Vendor Model Signing CA")
    cert = ca.issue_model_signer(d / "signer.key", "Vendor model release")
    (d / "signer.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca, d / "signer.key", d / "signer.pem"


@pytest.fixture
def signed_model(vendor, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    _, key, cert = vendor
    model = _model(tmp_path / "detector-1.2.0")
    assert main(["model", "sign", str(model), "--key", str(key), "--cert", str(cert)]) == 0
    return model


def test_signed_model_verifies_against_the_vendor_ca(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    ca = vendor[0]
    verify_signed_model(signed_model, ca.cert_path.read_bytes())
    assert main(["model", "verify", str(signed_model), "--trust", str(ca.cert_path)]) == 0


def test_model_file_changed_by_one_byte_is_refused_naming_the_file(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    target = signed_model / "openvino" / "model.xml"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"openvino/model\.xml"):
        verify_signed_model(signed_model, vendor[0].cert_path.read_bytes())


def test_manifest_edited_after_signing_is_refused(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    m = signed_model / "manifest.json"
    m.write_text(m.read_text().replace('"suspicious": 0.5', '"suspicious": 0.99'))
    with pytest.raises(ModelSignatureError, match="edited after signing"):
        verify_signed_model(signed_model, vendor[0].cert_path.read_bytes())


def test_unsigned_model_is_refused(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    (signed_model / SIGNATURE_NAME).unlink()
    with pytest.raises(ModelSignatureError, match="unsigned"):
        verify_signed_model(signed_model, vendor[0].cert_path.read_bytes())


def test_model_signed_by_another_vendor_or_by_a_device_is_refused(vendor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca = vendor[0]
    other = new_fleet(tmp_path / "other", name="Vendor Model Signing CA")
    other_cert = other.issue_model_signer(tmp_path / "other.key", "Impostor")
    model = _model(tmp_path / "m1")
    sig = sign_manifest((model / "manifest.json").read_bytes(), FileKeyStore(tmp_path / "other.key").load(), [other_cert], NOW)
    (model / SIGNATURE_NAME).write_bytes(sig)
    with pytest.raises(ModelSignatureError, match="untrusted_chain"):
        verify_signed_model(model, ca.cert_path.read_bytes())
    # a device certificate from the same CA has EKU clientAuth, not codeSigning
    device = new_device(ca, issued=NOW - dt.timedelta(days=1))
    (model / SIGNATURE_NAME).write_bytes(sign_manifest((model / "manifest.json").read_bytes(), device.key, [device.cert], NOW))
    with pytest.raises(ModelSignatureError, match="EKU"):
        verify_signed_model(model, ca.cert_path.read_bytes())


def test_model_signature_stays_valid_after_the_signing_certificate_expires(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    verify_signed_model(signed_model, vendor[0].cert_path.read_bytes(), now=NOW + dt.timedelta(days=5 * 365))


def test_joserfc_verifies_the_model_signature_independently(vendor, signed_model: Path) -> None:  # type: ignore[no-untyped-def]
    import base64

    from cryptography import x509

    sig = json.loads((signed_model / SIGNATURE_NAME).read_text())
    # iat (signing time) is not a registered JWS header parameter, so joserfc's strict header
    # check is turned off; RFC 7515 §4.3 allows private parameters and ours are not "crit".
    registry = JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    registry.max_header_length = 8192
    header = json.loads(base64.urlsafe_b64decode(sig["protected"] + "=="))
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    result = joserfc_jws.deserialize_json(sig, ECKey.import_key(leaf.public_key()), registry=registry)
    assert result.payload == (signed_model / "manifest.json").read_bytes()


def test_open_detector_with_a_trust_anchor_refuses_an_altered_model(vendor, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca, key, cert = vendor
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model)
    assert main(["model", "sign", str(model), "--key", str(key), "--cert", str(cert)]) == 0
    anchor = ca.cert_path.read_bytes()
    assert open_detector(model, backend="onnxruntime", threads=1, trust_anchor=anchor).manifest.name == "tiny-test"
    onnx = model / "model-fp32.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\x00")
    with pytest.raises(ModelIntegrityError, match="model-fp32.onnx"):
        open_detector(model, backend="onnxruntime", threads=1, trust_anchor=anchor)
