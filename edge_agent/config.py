"""``agent.yaml``: the agent's configuration, validated completely before anything starts.

Every section is a frozen dataclass that checks itself in ``__post_init__``; a problem raises
:class:`~edge_agent.errors.ConfigError` naming the key (``dicom.port``), the expected form and
what was found, so the agent never starts half-configured. Every key has a default; an empty
file is a valid config. Relative paths are taken relative to the config file's folder, and
paths left unset live under ``state_dir``. ``agent.example.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from .errors import ConfigError
from .journal import DEFAULT_KEEP as _JOURNAL_KEEP
from .journal import DEFAULT_MAX_BYTES as _JOURNAL_MAX_BYTES
from .spool import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MIN_FREE_BYTES

if TYPE_CHECKING:  # the transport (paho, trust) loads only when a config has an mqtt: section
    from .evidence import EvidenceSettings
    from .transport.settings import MqttSettings


def _default_evidence() -> EvidenceSettings:
    from .evidence import EvidenceSettings

    return EvidenceSettings()

__all__ = [
    "AgentConfig",
    "ModelConfig",
    "HookConfig",
    "DicomConfig",
    "HotFolderConfig",
    "SpoolConfig",
    "JournalRotationConfig",
    "LoggingConfig",
    "load_config",
    "parse_config",
]

_BACKENDS = ("auto", "openvino", "onnxruntime")
_PRECISIONS = ("auto", "int8", "fp32")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _fail(key: str, expected: str, found: object) -> None:
    shown = f"{found!r} ({type(found).__name__})" if found is not None else "nothing (null)"
    raise ConfigError(f"{key}: expected {expected}, found {shown}")


def _check_type(obj: object, name: str, kind: type | tuple[type, ...], expected: str) -> None:
    key = f"{getattr(obj, '_SECTION')}{name}"
    value = getattr(obj, name)
    # YAML's `true` is an int to Python; a bool is never accepted where a number is meant.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        _fail(key, expected, value)
    if not isinstance(value, kind):
        _fail(key, expected, value)


def _check_path(obj: object, name: str, optional: bool = True) -> None:
    kinds: tuple[type, ...] = (Path, type(None)) if optional else (Path,)
    _check_type(obj, name, kinds, "a path (a string)" + (" or null" if optional else ""))


@dataclass(frozen=True)
class ModelConfig:
    """Which model folder to load and how (see ``runtime.py`` for the automatic choice)."""

    _SECTION: ClassVar[str] = "model."
    path: Path | None = None  # None: the shipped model (models/*/manifest.json)
    backend: str = "auto"
    precision: str = "auto"
    threads: int = 2
    cache_dir: Path | None = None  # None: <state_dir>/model-cache
    trust_anchor: Path | None = None  # vendor model-signing CA (PEM): the model must be signed by it

    def __post_init__(self) -> None:
        _check_path(self, "path")
        _check_path(self, "trust_anchor")
        if self.trust_anchor is not None and not self.trust_anchor.is_file():
            _fail("model.trust_anchor", "the vendor model-signing CA certificate (a PEM file)", str(self.trust_anchor))
        if self.path is not None and not (self.path / "manifest.json").is_file():
            _fail("model.path", "a model folder containing manifest.json", str(self.path))
        _check_type(self, "backend", str, f"one of {', '.join(_BACKENDS)}")
        if self.backend not in _BACKENDS:
            _fail("model.backend", f"one of {', '.join(_BACKENDS)}", self.backend)
        _check_type(self, "precision", str, f"one of {', '.join(_PRECISIONS)}")
        if self.precision not in _PRECISIONS:
            _fail("model.precision", f"one of {', '.join(_PRECISIONS)}", self.precision)
        _check_type(self, "threads", int, "an integer from 1 to 64")
        if not 1 <= self.threads <= 64:
            _fail("model.threads", "an integer from 1 to 64", self.threads)
        _check_path(self, "cache_dir")

    def chosen(self, path: Path | None, backend: str, precision: str) -> tuple[Path | None, str, str]:
        """A command line's model folder, backend and precision where it gives them (``None`` /
        ``"auto"``: not given), else this section's: how ``scan`` and ``learn`` run the agent's model."""
        return (path or self.path, backend if backend != "auto" else self.backend,
                precision if precision != "auto" else self.precision)


@dataclass(frozen=True)
class HookConfig:
    """The firmware hook's local Unix socket (``edge-agent submit`` needs no running agent)."""

    _SECTION: ClassVar[str] = "hook."
    enabled: bool = True
    socket: Path | None = None  # None: <state_dir>/hook.sock
    socket_mode: int = 0o660  # owner and group (the scanner firmware's group) may submit

    def __post_init__(self) -> None:
        _check_type(self, "enabled", bool, "true or false")
        _check_path(self, "socket")
        _check_type(self, "socket_mode", int, "an octal file mode such as 0o660")
        if not 0 <= self.socket_mode <= 0o777:
            _fail("hook.socket_mode", "an octal file mode such as 0o660", self.socket_mode)
        # sockaddr_un.sun_path holds 108 bytes on Linux, terminator included (unix(7)).
        if self.socket is not None and len(str(self.socket).encode()) > 107:
            _fail("hook.socket", "a path shorter than 108 bytes (a Unix socket limit)", str(self.socket))


@dataclass(frozen=True)
class DicomConfig:
    """The C-STORE SCP the modality sends to as one more destination (PS3.4 Annex B)."""

    _SECTION: ClassVar[str] = "dicom."
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "EDGE_AGENT"
    accepted_calling_aes: tuple[str, ...] = ()  # empty: any calling AE

    def __post_init__(self) -> None:
        _check_type(self, "enabled", bool, "true or false")
        _check_type(self, "host", str, "an IP address or host name to bind, such as 127.0.0.1")
        if not self.host:
            _fail("dicom.host", "an IP address or host name to bind, such as 127.0.0.1", self.host)
        _check_type(self, "port", int, "a TCP port from 1 to 65535")
        if not 1 <= self.port <= 65535:
            _fail("dicom.port", "a TCP port from 1 to 65535", self.port)
        _check_ae(self.ae_title, "dicom.ae_title")
        _check_type(self, "accepted_calling_aes", tuple, "a list of AE titles")
        for i, ae in enumerate(self.accepted_calling_aes):
            _check_ae(ae, f"dicom.accepted_calling_aes[{i}]")


def _check_ae(value: object, key: str) -> None:
    # AE VR (PS3.5 Table 6.2-1): up to 16 characters of the default repertoire, no backslash or
    # control characters; leading and trailing spaces are not significant, all-spaces is invalid.
    expected = "an AE title of 1 to 16 printable ASCII characters, no backslash"
    if not isinstance(value, str):
        _fail(key, expected, value)
    assert isinstance(value, str)
    ok = 0 < len(value.strip()) and len(value) <= 16 and all(32 <= ord(c) < 127 and c != "\\" for c in value)
    if not ok:
        _fail(key, expected, value)


@dataclass(frozen=True)
class HotFolderConfig:
    """A folder the modality (or a person) drops files into; only complete files are taken."""

    _SECTION: ClassVar[str] = "hot_folder."
    path: Path | None = None  # None: no hot folder
    stable_seconds: float = 2.0
    poll_seconds: float = 1.0

    def __post_init__(self) -> None:
        _check_path(self, "path")
        _check_type(self, "stable_seconds", (int, float), "a number of seconds from 0 to 3600")
        if not 0 <= self.stable_seconds <= 3600:
            _fail("hot_folder.stable_seconds", "a number of seconds from 0 to 3600", self.stable_seconds)
        _check_type(self, "poll_seconds", (int, float), "a number of seconds from 0.05 to 60")
        if not 0.05 <= self.poll_seconds <= 60:
            _fail("hot_folder.poll_seconds", "a number of seconds from 0.05 to 60", self.poll_seconds)


_KiB, _MiB, _GiB, _TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
_SIZE_UNITS = {"": 1, "B": 1, "KiB": _KiB, "MiB": _MiB, "GiB": _GiB, "TiB": _TiB}
_SIZE_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def _parse_size(value: str) -> object:
    """``"2 GiB"`` -> 2147483648; a string it cannot read is returned as is, for the check to name."""
    m = _SIZE_TEXT.match(value)
    if m is None or m.group(2) not in _SIZE_UNITS:
        return value
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _check_size(obj: object, name: str, low: int, high: int, low_text: str, high_text: str) -> None:
    expected = f"a size from {low_text} to {high_text}: bytes, or a string such as '512 MiB' or '2 GiB'"
    _check_type(obj, name, int, expected)
    if not low <= getattr(obj, name) <= high:
        _fail(f"{getattr(obj, '_SECTION')}{name}", expected, getattr(obj, name))


@dataclass(frozen=True)
class SpoolConfig:
    """Bounds on the spool, the accepted images waiting for a verdict (``spool.py`` explains the
    defaults). Crossing either refuses new images until there is room; senders retry."""

    _SECTION: ClassVar[str] = "spool."
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES  # all the spool may hold
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES  # left free on the spool's filesystem

    def __post_init__(self) -> None:
        _check_size(self, "max_pending_bytes", _MiB, 64 * _TiB, "1 MiB", "64 TiB")
        _check_size(self, "min_free_bytes", 0, 64 * _TiB, "0", "64 TiB")


@dataclass(frozen=True)
class JournalRotationConfig:
    """Size-based rotation of the verdict journal; also bounds what the agent remembers as judged
    (``journal.py``): a repeat of an image older than the retained files is judged again."""

    _SECTION: ClassVar[str] = "journal_rotation."
    max_bytes: int = _JOURNAL_MAX_BYTES  # size of the active file before it is rotated
    keep: int = _JOURNAL_KEEP  # rotated files kept: verdicts.jsonl.1 ... .<keep>

    def __post_init__(self) -> None:
        _check_size(self, "max_bytes", 64 * _KiB, 64 * _GiB, "64 KiB", "64 GiB")
        _check_type(self, "keep", int, "a number of rotated files from 1 to 1000")
        if not 1 <= self.keep <= 1000:
            _fail("journal_rotation.keep", "a number of rotated files from 1 to 1000", self.keep)


@dataclass(frozen=True)
class LoggingConfig:
    _SECTION: ClassVar[str] = "logging."
    level: str = "INFO"

    def __post_init__(self) -> None:
        _check_type(self, "level", str, f"one of {', '.join(_LEVELS)}")
        if self.level.upper() not in _LEVELS:
            _fail("logging.level", f"one of {', '.join(_LEVELS)}", self.level)

    @property
    def level_number(self) -> int:
        return int(logging.getLevelName(self.level.upper()))


@dataclass(frozen=True)
class AgentConfig:
    """The whole configuration. Unset paths are filled in under ``state_dir``."""

    _SECTION: ClassVar[str] = ""
    state_dir: Path = Path("state")
    journal: Path | None = None  # None: <state_dir>/verdicts.jsonl
    quarantine_dir: Path | None = None  # None: <state_dir>/quarantine
    model: ModelConfig = field(default_factory=ModelConfig)
    hook: HookConfig = field(default_factory=HookConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    hot_folder: HotFolderConfig = field(default_factory=HotFolderConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    journal_rotation: JournalRotationConfig = field(default_factory=JournalRotationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mqtt: MqttSettings | None = None  # None: verdicts go to the journal only
    forensics: EvidenceSettings = field(default_factory=lambda: _default_evidence())

    def __post_init__(self) -> None:
        _check_path(self, "state_dir", optional=False)
        _check_path(self, "journal")
        _check_path(self, "quarantine_dir")
        for name, kind in _SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                _fail(name, f"a mapping of {name} settings", getattr(self, name))
        # Fill the derived defaults so every consumer sees one concrete value.
        fill = object.__setattr__
        if self.journal is None:
            fill(self, "journal", self.state_dir / "verdicts.jsonl")
        if self.quarantine_dir is None:
            fill(self, "quarantine_dir", self.state_dir / "quarantine")
        if self.model.cache_dir is None:
            fill(self, "model", dataclasses.replace(self.model, cache_dir=self.state_dir / "model-cache"))
        if self.hook.socket is None:
            fill(self, "hook", dataclasses.replace(self.hook, socket=self.state_dir / "hook.sock"))

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def journal_path(self) -> Path:
        assert self.journal is not None
        return self.journal

    @property
    def quarantine_path(self) -> Path:
        assert self.quarantine_dir is not None
        return self.quarantine_dir


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "hook": HookConfig,
    "dicom": DicomConfig,
    "hot_folder": HotFolderConfig,
    "spool": SpoolConfig,
    "journal_rotation": JournalRotationConfig,
    "logging": LoggingConfig,
}
_PATH_KEYS = {"state_dir", "journal", "quarantine_dir", "path", "cache_dir", "socket", "trust_anchor"}
_SIZE_KEYS = {"max_pending_bytes", "min_free_bytes", "max_bytes"}


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate ``agent.yaml``; raises :class:`ConfigError` on the first problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; pass --config PATH (see agent.example.yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    try:
        return parse_config({} if data is None else data, base_dir=p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def parse_config(data: object, base_dir: Path) -> AgentConfig:
    """Build an :class:`AgentConfig` from parsed YAML, resolving relative paths against ``base_dir``."""
    if isinstance(data, dict) and "state_dir" not in data:
        data = {**data, "state_dir": str(base_dir / "state")}
    top = _build(AgentConfig, data, "", base_dir, nested=_SECTIONS)
    assert isinstance(top, AgentConfig)
    return top


def _build(cls: type, data: object, prefix: str, base_dir: Path, nested: dict[str, type] | None = None) -> object:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        _fail(where, "a mapping of keys to values", data)
    assert isinstance(data, dict)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            did_you_mean = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(
                f"{prefix}{key}: unknown key{did_you_mean}; known keys in {where}: {', '.join(known)}"
            )
        if key == "mqtt" and cls is AgentConfig:
            from .transport.settings import parse_mqtt_settings

            kwargs[key] = None if value is None else parse_mqtt_settings(value, base_dir)
        elif key == "forensics" and cls is AgentConfig:
            from .evidence import load_evidence_settings

            if value is not None and not isinstance(value, dict):
                _fail("forensics", "a mapping of forensics settings", value)
            kwargs[key] = load_evidence_settings(value or {}, base_dir)
        elif nested and key in nested:
            kwargs[key] = _build(nested[key], {} if value is None else value, f"{key}.", base_dir)
        elif key in _PATH_KEYS and isinstance(value, str) and value:
            kwargs[key] = resolve_path(value, base_dir)
        elif key == "socket_mode" and isinstance(value, str):
            kwargs[key] = _octal(value)
        elif key in _SIZE_KEYS and isinstance(value, str):
            kwargs[key] = _parse_size(value)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _octal(value: str) -> object:
    # YAML 1.1 reads 0660 as octal but leaves 0o660 a string; accept both spellings.
    try:
        return int(value.removeprefix("0o"), 8)
    except ValueError:
        return value


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path from a config file: ``~`` expanded, relative paths taken from the config's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p
