"""Stage `tiles`: cut training/validation tiles at the native grid, with labels and masks.

Tiles are cut from the decoded image exactly like the agent cuts them (symmetric padding of
short axes, no resizing), at random origins. Tampered images give tiles that contain the edit;
their 16x16 mask fractions are stored for the CAM loss and the pointing game.
A tile of a tampered image without the edit would be authentic pixels, so none are labelled fake.
"""
from __future__ import annotations

import hashlib
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from .config import Config
from .fakes import read_images
from .imaging import load_grey, pad_to_tile

__all__ = ["build_tilebank", "load_tilebank", "group_of"]

CAM_CELLS = 16


def group_of(row: dict[str, str]) -> str:
    """Sampling group: fakes by family, reals by source and kind (original/variant/resized)."""
    if row["label"] == "1":
        return row["family"]
    return f"real:{row['source']}:{row['kind'].split('+')[0]}"


def _cut(args: tuple[dict[str, str], int, int, int]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    row, tile, k, seed = args
    rng = np.random.default_rng(int(hashlib.sha256(f"{seed}:{row['id']}".encode()).hexdigest()[:12], 16))
    img = pad_to_tile(load_grey(row["path"]), tile)
    h, w = img.shape
    mask = None
    if row["mask"]:
        mask = pad_to_tile(np.asarray(Image.open(row["mask"]), dtype=np.float32) / 255.0, tile)
    out = []
    for _ in range(k):
        if mask is not None:
            ys, xs = np.nonzero(mask)
            i = int(rng.integers(len(ys)))
            cy, cx = ys[i], xs[i]
            y = int(np.clip(cy - rng.integers(16, tile - 16), 0, h - tile))
            x = int(np.clip(cx - rng.integers(16, tile - 16), 0, w - tile))
            mcrop = mask[y:y + tile, x:x + tile]
            cells = mcrop.reshape(CAM_CELLS, tile // CAM_CELLS, CAM_CELLS, tile // CAM_CELLS).mean(axis=(1, 3))
        else:
            y = int(rng.integers(0, h - tile + 1))
            x = int(rng.integers(0, w - tile + 1))
            cells = np.full((CAM_CELLS, CAM_CELLS), float(row["label"]), np.float32)
        out.append((img[y:y + tile, x:x + tile].astype(np.float16), cells.astype(np.float16), row["id"]))
    return out


def build_tilebank(work: Path, cfg: Config, log: Callable[[str], None], workers: int = 2) -> None:
    rows = [r for r in read_images(work) if r["split"] in ("train", "val")]
    tile, k = cfg.tiles["tile"], cfg.tiles["per_image_train"]
    jobs = []
    for r in rows:
        kk = 2 if r["mask"] else k
        jobs.append((r, tile, kk, cfg.seed))
    by_id = {r["id"]: r for r in rows}
    for split in ("train", "val"):
        sj = [j for j in jobs if j[0]["split"] == split]
        tiles, cells, ids = [], [], []
        with get_context("fork").Pool(workers) as pool:
            for n, res in enumerate(pool.imap(_cut, sj, chunksize=16)):
                # identical crops (small images padded to one tile) are kept once
                seen: set[bytes] = set()
                for t, c, i in res:
                    key = hashlib.sha1(t.tobytes()).digest()
                    if key in seen:
                        continue
                    seen.add(key)
                    tiles.append(t); cells.append(c); ids.append(i)
                if n % 1000 == 0:
                    log(f"tiles {split}: {n}/{len(sj)} images, {len(tiles)} tiles")
        arr = np.stack(tiles)
        meta = np.array([(i, by_id[i]["label"], by_id[i]["family"], group_of(by_id[i])) for i in ids], dtype=object)
        np.save(work / f"tiles-{split}.npy", arr)
        np.save(work / f"cells-{split}.npy", np.stack(cells))
        np.save(work / f"tilemeta-{split}.npy", meta, allow_pickle=True)
        log(f"tiles {split}: {arr.shape[0]} tiles ({arr.nbytes / 2**20:.0f} MiB)")


def load_tilebank(work: Path, split: str) -> dict[str, Any]:
    meta = np.load(work / f"tilemeta-{split}.npy", allow_pickle=True)
    return {"tiles": np.load(work / f"tiles-{split}.npy", mmap_mode="r"), "cells": np.load(work / f"cells-{split}.npy"),
            "id": meta[:, 0], "label": meta[:, 1].astype(np.int64), "family": meta[:, 2], "group": meta[:, 3]}
