"""A shipped model's manifest: what files it has, how to feed it, and how to read its output.

The agent learns everything about a model from ``manifest.json`` (schema 1) and checks every
file's SHA-256 against it before any byte reaches a runtime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError, ModelIntegrityError
from .tiling import AGGREGATES, FLAT_FRACTION

__all__ = ["ModelFile", "Tiling", "Thresholds", "ModelManifest", "load_manifest", "sha256_file"]

FORMATS = ("onnx", "openvino-xml", "openvino-bin")


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    format: str
    precision: str

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ModelError(f"model file {self.path}: format {self.format!r} is not one of {FORMATS}")
        if len(self.sha256) != 64:
            raise ModelError(f"model file {self.path}: sha256 must be 64 hex digits")


@dataclass(frozen=True)
class Tiling:
    tile: int
    max_tiles: int
    aggregate: str
    topk: int = 1
    flat_fraction: float = FLAT_FRACTION  # > 1 keeps flat tiles (see edge_agent.tiling)

    def __post_init__(self) -> None:
        if self.tile < 8 or self.max_tiles < 1:
            raise ModelError(f"tiling: tile {self.tile} / max_tiles {self.max_tiles} out of range")
        if self.aggregate not in AGGREGATES:
            raise ModelError(f"tiling.aggregate {self.aggregate!r} is not one of {AGGREGATES}")


@dataclass(frozen=True)
class Thresholds:
    suspicious: float
    synthetic: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.suspicious <= self.synthetic <= 1.0:
            raise ModelError(
                f"thresholds must satisfy 0 <= suspicious <= synthetic <= 1, "
                f"got {self.suspicious} / {self.synthetic}"
            )

    def label(self, score: float) -> str:
        if score >= self.synthetic:
            return "synthetic"
        if score >= self.suspicious:
            return "suspicious"
        return "authentic"


@dataclass(frozen=True)
class ModelManifest:
    directory: Path
    name: str
    version: str
    files: tuple[ModelFile, ...]
    input_name: str
    logits_output: str
    cam_output: str
    tiling: Tiling
    thresholds: Thresholds
    raw: dict[str, Any] = field(repr=False, compare=False)

    def pick(self, fmt: str, precisions: tuple[str, ...] = ("int8", "fp32")) -> ModelFile | None:
        """The file of format ``fmt`` with the first available precision in ``precisions``."""
        for precision in precisions:
            for f in self.files:
                if f.format == fmt and f.precision == precision:
                    return f
        return None

    def path_of(self, f: ModelFile) -> Path:
        return self.directory / f.path

    def verify_files(self, files: tuple[ModelFile, ...] | None = None) -> None:
        """Raise :class:`ModelIntegrityError` naming the first file whose hash differs."""
        for f in files if files is not None else self.files:
            p = self.path_of(f)
            if not p.is_file():
                raise ModelIntegrityError(f"model file {p} listed in the manifest is missing")
            actual = sha256_file(p)
            if actual != f.sha256:
                raise ModelIntegrityError(
                    f"model file {p} has sha256 {actual}, the manifest says {f.sha256}: "
                    "the file was altered or is from another model; reinstall the model"
                )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(directory: str | Path) -> ModelManifest:
    """Parse ``directory/manifest.json``. Raises :class:`ModelError` saying what is wrong."""
    d = Path(directory)
    mpath = d / "manifest.json" if d.is_dir() else d
    d = mpath.parent
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no model manifest at {mpath}; point model.path at a models/<name>-<version> folder") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {mpath} cannot be read: {exc}") from None
    try:
        if raw.get("schema") != 1:
            raise ModelError(f"{mpath}: schema {raw.get('schema')!r} is not supported (expected 1)")
        files = tuple(
            ModelFile(path=f["path"], sha256=f["sha256"], format=f["format"], precision=f["precision"])
            for f in raw["files"]
        )
        t = raw["tiling"]
        th = raw["thresholds"]
        return ModelManifest(
            directory=d,
            name=str(raw["name"]),
            version=str(raw["version"]),
            files=files,
            input_name=str(raw["input"]["name"]),
            logits_output=str(raw["outputs"]["logits"]),
            cam_output=str(raw["outputs"]["cam"]),
            tiling=Tiling(
                tile=int(t["tile"]),
                max_tiles=int(t["max_tiles"]),
                aggregate=str(t["aggregate"]),
                topk=int(t.get("topk", 1)),
                flat_fraction=float(t.get("flat_fraction", FLAT_FRACTION)),
            ),
            thresholds=Thresholds(suspicious=float(th["suspicious"]), synthetic=float(th["synthetic"])),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{mpath}: manifest is missing or has a malformed field: {exc!r}") from None
