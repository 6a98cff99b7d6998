"""Training configuration: one frozen, validated dataclass per concern.

The YAML file is the single source of truth; `load_config` turns it into typed,
immutable objects so a stage cannot silently mutate settings another stage reads.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "load_config"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Whole training configuration (see ``config.yaml`` for the meaning of keys)."""

    seed: int
    version: str
    name: str
    split: dict[str, Any]
    generators: dict[str, Any]
    fakes: dict[str, Any]
    augment: dict[str, Any]
    tiles: dict[str, Any]
    detector: dict[str, Any]
    baseline: dict[str, Any]
    lofo: dict[str, Any]
    export: dict[str, Any]
    simulated: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-split counts; {} = none
    loso: dict[str, Any] = dataclasses.field(default_factory=dict)  # leave-one-source-out; {} = loso.DEFAULT_LOSO
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.tiles["tile"] % 16:
            raise ValueError(f"tile must be a multiple of 16 (network stride), got {self.tiles['tile']}")
        if not 0 < self.split["val"] + self.split["test"] < 1:
            raise ValueError("split fractions val + test must lie in (0, 1)")


    @property
    def lofo_baseline_steps(self) -> int:
        """Steps of each leave-one-family-out baseline run: ``lofo.baseline_steps``; configs before
        1.4.0's re-evaluation gave it a fifth of the baseline's budget (at least 60)."""
        return int(self.lofo.get("baseline_steps", max(60, self.baseline["steps"] // 5)))


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML config; records its sha256 for the report."""
    raw = Path(path).read_bytes()
    data = yaml.safe_load(raw)
    fields = {f.name for f in dataclasses.fields(Config)} - {"sha256"}
    optional = {"simulated", "loso"}
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"config {path} has unknown keys {sorted(unknown)}; see models/train/config.yaml")
    missing = fields - optional - set(data)
    if missing:
        raise ValueError(f"config {path} lacks keys {sorted(missing)}; see models/train/config.yaml")
    return Config(**{k: data[k] for k in fields if k in data}, sha256=hashlib.sha256(raw).hexdigest())
