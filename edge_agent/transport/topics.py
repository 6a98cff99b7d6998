"""Topic names: one site per prefix, one device per sub-prefix (pure).

    edge/v1/{site}/{device}/verdict   signed verdict envelopes (QoS 1)
    edge/v1/{site}/{device}/status    retained ``online`` / ``offline`` (offline is the Will)
    edge/v1/{site}/{device}/health    periodic JSON: queue depth, last verdict, model, cert expiry, clock
    edge/v1/alerts/{site}             plain JSON alerts from the collector

Site and device ids become topic levels, so they may not contain the separator ``/``, the
wildcards ``+`` / ``#`` (MQTT 5 §4.7.1), a leading ``$`` (reserved for the server, §4.7.2) or NUL
(§1.5.4). We are stricter: ``[A-Za-z0-9_.-]{1,64}``, which also keeps them safe inside the
Mosquitto ACL's ``%u`` substitution and in file names. ``alerts`` is reserved as a site name so
that alerts never share a prefix with a device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ROOT",
    "KINDS",
    "DeviceTopics",
    "ParsedTopic",
    "check_identifier",
    "parse_topic",
    "alerts_topic",
    "shared_filters",
]

ROOT = "edge/v1"
KINDS = ("verdict", "status", "health")
_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RESERVED = {"alerts", ".", ".."}


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it can be one topic level; raise ``ValueError`` saying why not."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value) or value in _RESERVED:
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of A-Z a-z 0-9 _ . - and not 'alerts' "
            "(it becomes an MQTT topic level: MQTT 5 §4.7)"
        )
    return value


@dataclass(frozen=True)
class DeviceTopics:
    """The three topics one device publishes on."""

    site: str
    device: str

    def __post_init__(self) -> None:
        check_identifier(self.site, "site")
        check_identifier(self.device, "device id")

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.site}/{self.device}"

    @property
    def verdict(self) -> str:
        return f"{self.prefix}/verdict"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def health(self) -> str:
        return f"{self.prefix}/health"


@dataclass(frozen=True)
class ParsedTopic:
    site: str
    device: str
    kind: str  # one of KINDS


def parse_topic(topic: str) -> ParsedTopic | None:
    """``edge/v1/S/D/kind`` -> its parts, or None for anything else (never raises: topics are input)."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT or parts[4] not in KINDS:
        return None
    site, device = parts[2], parts[3]
    if not _IDENT.fullmatch(site) or not _IDENT.fullmatch(device) or site in _RESERVED:
        return None
    return ParsedTopic(site, device, parts[4])


def alerts_topic(site: str) -> str:
    return f"{ROOT}/alerts/{check_identifier(site, 'site')}"


def shared_filters(group: str, sites: tuple[str, ...] = ()) -> list[str]:
    """Shared-subscription filters (MQTT 5 §4.8.2: ``$share/{ShareName}/{filter}``).

    Every collector in ``group`` subscribes to the same filters and the broker hands each message
    to one of them. ``sites`` empty means every site (``+``).
    """
    check_identifier(group, "share group")
    levels = [check_identifier(s, "site") for s in sites] or ["+"]
    return [f"$share/{group}/{ROOT}/{s}/+/{kind}" for s in levels for kind in KINDS]
