"""Training stages resume from their checkpoints: a run that was stopped and resumed ends with the
same weights as one that never stopped (issue 3: "reproducible from a seed and a config; each stage
resumable"). Tiny networks and data, a few steps: no real training."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from models.train import fit, generators  # noqa: E402
from models.train.config import load_config  # noqa: E402

TILE = 64


class Stopped(Exception):
    """The machine went down right after a checkpoint was written."""


def _stop_after_saves(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real_save = torch.save
    saved = []

    def save(obj, f, *a, **k):  # type: ignore[no-untyped-def]
        real_save(obj, f, *a, **k)
        saved.append(f)
        if len(saved) == n:
            raise Stopped

    monkeypatch.setattr(torch, "save", save)


def _tile_bank(work: Path) -> None:
    rng = np.random.default_rng(5)
    for split, n in (("train", 24), ("val", 8)):
        labels = np.arange(n) % 2
        tiles = np.clip(0.5 + rng.normal(0, 0.05, (n, TILE, TILE)) * (1 + labels[:, None, None]), 0, 1)
        np.save(work / f"tiles-{split}.npy", tiles.astype(np.float16))
        np.save(work / f"cells-{split}.npy", np.zeros((n, TILE // 16, TILE // 16), np.float16))
        meta = np.array([(f"{split}{i}", int(lab), "gan" if lab else "real", f"g{i % 3}")
                         for i, lab in enumerate(labels)], dtype=object)
        np.save(work / f"tilemeta-{split}.npy", meta, allow_pickle=True)


def _config():
    cfg = load_config(ROOT / "models" / "train" / "config.yaml")
    return dataclasses.replace(cfg, tiles={**cfg.tiles, "tile": TILE},
                               detector={**cfg.detector, "width": [4, 8, 8, 8], "batch": 4, "steps": 6})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["model"]


def test_a_detector_run_stopped_and_resumed_ends_with_the_weights_of_one_that_never_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config()
    once, twice = tmp_path / "once", tmp_path / "twice"
    for w in (once, twice):
        w.mkdir()
        _tile_bank(w)
    a = fit.train_detector(once, cfg, lambda m: None, tag="det", checkpoint_every=3)
    with monkeypatch.context() as m:
        _stop_after_saves(m, 1)  # stopped after the checkpoint of step 3
        with pytest.raises(Stopped):
            fit.train_detector(twice, cfg, lambda m: None, tag="det", checkpoint_every=3)
    assert torch.load(twice / "det-last.pt", weights_only=False)["step"] == 3
    said: list[str] = []
    b = fit.train_detector(twice, cfg, said.append, tag="det", checkpoint_every=3)
    assert "det: resuming at step 3" in said
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_a_generator_stopped_and_resumed_ends_with_the_weights_of_one_that_never_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(6).random((16, 64, 64)).astype(np.float32)

    class Clock:  # 31 s pass between looks at the clock: a checkpoint after every step
        now = 0.0

        @classmethod
        def time(cls) -> float:
            cls.now += 31.0
            return cls.now

    monkeypatch.setattr(generators, "time", Clock)
    for kind in ("gan", "vae"):
        once, twice = tmp_path / f"{kind}-once.pt", tmp_path / f"{kind}-twice.pt"
        generators.train_generator(kind, images, {"steps": 5}, 4, 11, once, lambda m: None)
        with monkeypatch.context() as m:
            _stop_after_saves(m, 2)
            with pytest.raises(Stopped):
                generators.train_generator(kind, images, {"steps": 5}, 4, 11, twice, lambda m: None)
        assert torch.load(twice, weights_only=False)["step"] == 2
        generators.train_generator(kind, images, {"steps": 5}, 4, 11, twice, lambda m: None)
        wa, wb = torch.load(once, weights_only=False)["g"], torch.load(twice, weights_only=False)["g"]
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (kind, k)
