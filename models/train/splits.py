"""Stage `index`: list the real images and split them by patient.

Same patient_id => same person (the Hannover PNG and 2000 px JPEG are one radiograph in two
encodings), so a patient lives in exactly one split: train / val (real-only thresholds and
model selection) / test (never used for training or thresholds). One pydicom-data CR
radiograph (config `split.heldout_dicom`, default RG3: all four encodings) is kept out of
training entirely; the third-party GAN samples in the pack are an external test family.
With config ``simulated``, physics-simulated radiographs join the real class (one panel each).
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom.data

from .config import Config

__all__ = ["build_index", "read_index", "INDEX_FIELDS"]

INDEX_FIELDS = ["path", "split", "source", "patient_id", "label", "licence", "origin"]
_DICOM_NAMES = ("UNCR", "UNCI", "J2KR", "J2KI")


def _source_of(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] == "synthetic":
        return "external-gan"
    if parts[1] == "hannover":
        return "hannover-" + ("jpg" if parts[2].startswith("jpg") else "png")
    return {"kermany-224": "kermany", "other-cc": "other-cc"}.get(parts[1], parts[1])


def _patient_split(patients: list[str], cfg: Config, salt: str) -> dict[str, str]:
    """Deterministic permutation of the sorted patient ids (seed + source salt)."""
    uniq = sorted(set(patients))
    seed = int(hashlib.sha256(f"{cfg.seed}:{salt}".encode()).hexdigest()[:8], 16)
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_test = max(1, round(cfg.split["test"] * len(uniq)))
    n_val = max(1, round(cfg.split["val"] * len(uniq)))
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[uniq[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def build_index(data_dirs: list[Path], cfg: Config, out: Path) -> list[dict[str, str]]:
    """Write ``out`` (CSV, one row per real/external file) and return its rows."""
    rows: list[dict[str, str]] = []
    for d in data_dirs:
        with open(d / "manifest.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append({"path": str((d / r["path"]).resolve()), "source": _source_of(r["path"]),
                             "patient_id": r["patient_id"] or r["path"], "label": r["label"],
                             "licence": r["license"], "origin": f"{r['source_repo']}:{r['source_path']}"})
    # Hannover PNG and JPG share patients: split them together.
    groups: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        key = "hannover" if r["source"].startswith("hannover") else r["source"]
        groups.setdefault(key, []).append(r)
    for key, members in groups.items():
        if key == "external-gan":
            for r in members:
                r["split"] = "external"
            continue
        mapping = _patient_split([r["patient_id"] for r in members], cfg, key)
        for r in members:
            r["split"] = mapping[r["patient_id"]]
    for stem in ("RG1", "RG3"):
        for enc in _DICOM_NAMES:
            path = pydicom.data.get_testdata_file(f"{stem}_{enc}.dcm", download=False)
            if path is None:
                raise FileNotFoundError(f"pydicom-data file {stem}_{enc}.dcm missing; pip install pydicom-data")
            split = "dicom-heldout" if stem == cfg.split["heldout_dicom"] else "train"
            rows.append({"path": str(path), "split": split, "source": f"dicom-{stem.lower()}",
                         "patient_id": stem, "label": "real", "licence": "pydicom-data (MIT)",
                         "origin": f"pydicom-data:{stem}_{enc}.dcm"})
    if cfg.simulated:  # physics-simulated real-like radiographs (see simdata.py); each is its own panel
        from .simdata import build_simulated
        rows.extend(build_simulated(out.parent / "sim", cfg.seed, cfg.simulated))
    rows.sort(key=lambda r: (r["split"], r["source"], r["path"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return rows


def read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
