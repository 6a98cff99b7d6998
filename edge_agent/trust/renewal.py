"""When to renew the device certificate, and the health the agent reports about it. Pure.

Renewal starts at 80 % of the certificate's lifetime (notBefore..notAfter, RFC 5280 §4.1.2.5):
for a 365-day certificate that leaves 73 days to get a new one through a site's change process
and any outage of the CA. An expired certificate is an ERROR health record, never silence: the
agent keeps judging images, but every verdict it signs will be rejected by collectors.

Renewal re-runs enrollment with a *new* key (the old one keeps signing until the new certificate
is installed):

    state           condition                         health
    not_yet_valid   now < notBefore                   ERROR   (device clock behind, or cert early)
    valid           now < notBefore + 80 % lifetime   OK
    renew           80 % <= elapsed < 100 %           WARNING (renew_steps say what to do)
    expired         now >= notAfter                   ERROR
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

__all__ = ["RENEW_AT_FRACTION", "RENEW_STEPS", "RenewalDecision", "HealthRecord", "renewal_decision", "certificate_health"]

RENEW_AT_FRACTION = 0.8
RENEW_STEPS = (
    "edge-agent enroll renew --dir STATE            # new key pair + CSR on the device",
    "edge-agent ca issue --ca CA_DIR STATE/device.csr --out device.pem   # at the fleet CA",
    "edge-agent enroll install device.pem --dir STATE --fleet-ca fleet-ca.pem   # switches to the new key",
)
_LEVELS = ("OK", "WARNING", "ERROR")


@dataclass(frozen=True)
class RenewalDecision:
    state: str
    renew_at: dt.datetime
    expires_at: dt.datetime
    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.state not in ("not_yet_valid", "valid", "renew", "expired"):
            raise ValueError(f"unknown renewal state {self.state!r}")


@dataclass(frozen=True)
class HealthRecord:
    level: str
    code: str
    message: str
    expires_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ValueError(f"health level {self.level!r} is not one of {_LEVELS}")

    def to_dict(self) -> dict[str, str | None]:
        return {
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
        }


def renewal_decision(cert: x509.Certificate, now: dt.datetime) -> RenewalDecision:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    renew_at = nb + (na - nb) * RENEW_AT_FRACTION
    if now < nb:
        state = "not_yet_valid"
    elif now >= na:
        state = "expired"
    elif now >= renew_at:
        state = "renew"
    else:
        state = "valid"
    steps = RENEW_STEPS if state in ("renew", "expired") else ()
    return RenewalDecision(state, renew_at, na, steps)


def certificate_health(cert: x509.Certificate | None, now: dt.datetime) -> HealthRecord:
    if cert is None:
        return HealthRecord("ERROR", "device_not_enrolled", "no device certificate installed; verdicts cannot be signed. "
                            "Run `edge-agent enroll init` and `edge-agent enroll install`.")
    d = renewal_decision(cert, now)
    when = f"{d.expires_at:%Y-%m-%dT%H:%M:%SZ}"
    if d.state == "expired":
        return HealthRecord("ERROR", "device_certificate_expired",
                            f"the device certificate EXPIRED at {when}: every verdict signed now will be rejected. "
                            "Renew: " + " ; ".join(s.split("  #")[0].strip() for s in d.steps), d.expires_at)
    if d.state == "not_yet_valid":
        return HealthRecord("ERROR", "device_certificate_not_yet_valid",
                            f"the device certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}; "
                            "check the device clock", d.expires_at)
    if d.state == "renew":
        return HealthRecord("WARNING", "device_certificate_renewal_due",
                            f"the device certificate expires at {when}; renewal was due from "
                            f"{d.renew_at:%Y-%m-%dT%H:%M:%SZ}: run `edge-agent enroll renew`", d.expires_at)
    return HealthRecord("OK", "device_certificate_valid", f"device certificate valid until {when}", d.expires_at)
