"""The device signs what it learned about itself: its noise profile and detector fingerprint.

``edge-agent learn --identity DIR`` writes ``enrolment.sig.json`` beside ``noise-profile.json``
and ``fingerprint.bin``: a flattened JWS (RFC 7515 §7.2.2), ES256 with the device key, payload =
canonical JSON ``{"device": id, "files": {name: sha256}}``, ``x5c`` = the device's certificate
chain (EKU clientAuth, issued by the fleet CA), ``iat`` (RFC 7519 §4.1.6) = when it was signed.
With ``forensics.enrolment_trust`` (the fleet CA) in the agent config, the agent loads the two
files only if this signature holds and names exactly their bytes: a profile or fingerprint
swapped for another device's, or edited, stops the start with the reason. The chain is judged
at signing time, like signed models, so an enrolment outlives the certificate that signed it.

What the agent goes on learning while it runs (the refined noise profile,
:mod:`edge_agent.forensics.refine`) is sealed the same way by :class:`DeviceSeal`: the state file
is a flattened JWS of ``typ`` :data:`REFINED_SIG_TYP` whose payload is the state, signed by this
device. The agent reads back only a state its own device signed; an edited or foreign one is set
aside and the signed, learned profile is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ..errors import EnvelopeError, ForensicsError
from .certs import device_id_of, load_certificates, utcnow, validate_chain
from .chained_jws import sign_chained, verify_chained
from .jws import Signer

__all__ = ["ENROLMENT_SIG_TYP", "REFINED_SIG_TYP", "SIGNATURE_NAME", "DeviceSeal", "sign_enrolment",
           "verify_enrolment", "verify_enrolment_files"]

ENROLMENT_SIG_TYP = "edge-agent.device-enrolment+jws"
REFINED_SIG_TYP = "edge-agent.refined-noise-profile+jws"
SIGNATURE_NAME = "enrolment.sig.json"


def _payload(device_id: str, files: Mapping[str, bytes]) -> bytes:
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    return json.dumps({"device": device_id, "files": digests}, sort_keys=True, separators=(",", ":")).encode()


def sign_enrolment(device_id: str, files: Mapping[str, bytes], key: Signer, chain: Sequence[x509.Certificate],
                   now: dt.datetime) -> bytes:
    """Pure: the learned files (name -> bytes) + the device's signer -> ``enrolment.sig.json`` bytes."""
    return sign_chained(ENROLMENT_SIG_TYP, _payload(device_id, files), key, chain, now)


def verify_enrolment(signature: bytes, files: Mapping[str, bytes], anchors: Sequence[x509.Certificate],
                     now: dt.datetime | None = None) -> str:
    """The device id that signed exactly ``files``; raises :class:`ForensicsError` otherwise."""
    payload, signer = verify_chained(signature, ENROLMENT_SIG_TYP, anchors, "device", now,
                                     name=SIGNATURE_NAME, what="enrolment signature", error=ForensicsError)
    try:
        claimed = json.loads(payload)
        device_id = str(claimed["device"])
        signer_id = device_id_of(signer)
    except EnvelopeError as exc:  # the signer's certificate names no device
        raise ForensicsError(f"the enrolment signature is not valid ({exc.reason}): {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ForensicsError(f"{SIGNATURE_NAME} is malformed: {exc!r}") from None
    if device_id != signer_id:  # the payload must name the certificate's device
        raise ForensicsError(f"the enrolment names device {device_id!r} but is signed by {signer_id!r}")
    if payload != _payload(device_id, files):
        signed = set(claimed.get("files", {}))
        if signed != set(files):
            raise ForensicsError(f"the enrolment signature covers {sorted(signed)}, not {sorted(files)}")
        changed = [n for n, d in sorted(files.items()) if hashlib.sha256(d).hexdigest() != claimed["files"][n]]
        raise ForensicsError(f"{', '.join(changed)} differs from what device {device_id} signed: edited or "
                             "another device's; learn again on this device")
    return device_id


def verify_enrolment_files(paths: Sequence[Path], trust_pem: bytes, now: dt.datetime | None = None,
                           contents: Mapping[Path, bytes] | None = None) -> str:
    """Verify ``enrolment.sig.json`` in the folder of ``paths[0]`` over the files ``paths``.
    ``contents``: the bytes the caller read and will use (so what was verified is what is parsed);
    files missing from it are read here."""
    sig = paths[0].parent / SIGNATURE_NAME
    if not sig.is_file():
        raise ForensicsError(f"{sig} is missing: the enrolment is unsigned (edge-agent learn --identity signs it)")
    try:
        anchors = load_certificates(trust_pem)
    except Exception as exc:
        raise ForensicsError(f"the enrolment trust anchor is not a PEM certificate: {exc}") from None
    given = contents or {}
    return verify_enrolment(sig.read_bytes(), {p.name: given[p] if p in given else p.read_bytes() for p in paths},
                            anchors, now)


@dataclass(frozen=True)
class DeviceSeal:
    """This device's signature over state it learns while running. :meth:`sign` wraps a payload
    in a flattened JWS (RFC 7515 §7.2.2, ES256) signed by the device key, with the certificate
    chain in ``x5c`` (§4.1.6) and the signing time in ``iat`` (RFC 7519 §4.1.6). :meth:`open`
    returns the payload of such a JWS only if this device signed it, under a certificate that
    chains to ``anchors`` at that time.

    A replayed older state that this device signed is accepted. The refiner binds each state to
    the learned profile it grew from, and every signed state already passed the refiner's gates,
    so a replay can only roll drift tracking back, not widen the profile."""

    device_id: str
    anchors: tuple[x509.Certificate, ...]
    key: Signer | None = None  # None: can open, not sign (``edge-agent scan`` never writes)
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def of(cls, identity: Path, *, signing: bool, anchors: Sequence[x509.Certificate] = ()) -> "DeviceSeal":
        """From an enrolment folder (``edge-agent enroll``); ``signing`` opens the device key too.
        ``anchors``: the fleet CA to judge signatures by (``forensics.enrolment_trust``), else the
        folder's own ``fleet-ca.pem``."""
        from .enrollment import DeviceState

        state = DeviceState(identity)
        if not anchors:
            try:
                anchors = load_certificates((identity / "fleet-ca.pem").read_bytes())
            except OSError as exc:
                raise ForensicsError(f"{identity / 'fleet-ca.pem'} cannot be read ({exc.strerror}): "
                                     "the device is not enrolled yet (edge-agent enroll install)") from None
        try:
            if not signing:
                return cls(state.device_id(), tuple(anchors))
            device = state.load()
        except (OSError, ValueError) as exc:  # unreadable (permissions) or torn device.json
            raise ForensicsError(f"the enrolment folder {identity} cannot be read: {exc}") from None
        return cls(device.device_id, tuple(anchors), device.key, device.chain)

    def sign(self, payload: bytes, now: dt.datetime | None = None) -> bytes:
        """The JWS over ``payload``; raises :class:`ForensicsError` when the device's certificate is
        not valid now (expired, not yet valid, another fleet): :meth:`open` would refuse the result."""
        if self.key is None:
            raise ForensicsError("this device seal was opened without the device key: it cannot sign")
        at = now or utcnow()
        try:
            validate_chain(self.chain[0], self.chain[1:], self.anchors, at=at, purpose="device")
        except EnvelopeError as exc:
            raise ForensicsError(f"the device certificate cannot sign now ({exc.reason}): {exc}") from None
        return sign_chained(REFINED_SIG_TYP, payload, self.key, self.chain, at)

    def open(self, data: bytes, name: str) -> bytes:
        """The payload; raises :class:`ForensicsError` unless this device signed exactly it."""
        payload, signer = verify_chained(data, REFINED_SIG_TYP, self.anchors, "device", None, name=name,
                                         what="refined profile's signature", error=ForensicsError)
        try:
            signer_id = device_id_of(signer)
        except EnvelopeError as exc:
            raise ForensicsError(f"{name} is signed by a certificate that names no device: {exc}") from None
        if signer_id != self.device_id:
            raise ForensicsError(f"{name} is signed by device {signer_id!r}, not by this device ({self.device_id!r})")
        return payload
