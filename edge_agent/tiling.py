"""Cut an image into model tiles at its native pixel grid, and fold tile logits into one score.

Generator traces live in the highest frequencies, so the image is never resized: it is covered
by ``tile`` x ``tile`` crops (the last crop on each axis shifted inside the image, overlapping
slightly). The policy is the model manifest's; training code uses these same functions.

Tiles that are mostly one flat value (collimator shadow or burnt-out background clipped at the
ends of the range, black borders) carry no evidence either way, yet a residual detector sees
"no noise at all" there, which is what over-smoothed fakes look like: on pydicom-data's RG3 CR
radiograph such tiles scored logit 17.7 while every tile with anatomy stayed below 2. So tiles
whose pixels sit at the tile's own minimum or maximum for at least ``flat_fraction`` of their
area are left out before ``max_tiles`` is applied (all tiles are kept when every one is flat).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["grid_origins", "grid_tiles", "aggregate_logits", "sigmoid", "tiles_to_full", "full_to_tiles", "AGGREGATES",
           "FLAT_FRACTION"]

# Default share of a tile at its own min/max value beyond which the tile is left out.
FLAT_FRACTION = 0.5

AGGREGATES = ("mean", "max", "topk_mean")


def _axis_starts(length: int, tile: int) -> list[int]:
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [int(round(v)) for v in np.linspace(0, length - tile, n)]


def grid_origins(height: int, width: int, tile: int, max_tiles: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of the tiles; an evenly spaced subset when the grid exceeds ``max_tiles``."""
    ys, xs = _axis_starts(height, tile), _axis_starts(width, tile)
    grid = [(y, x) for y in ys for x in xs]
    return _spread(grid, max_tiles)


def _spread(grid: list[tuple[int, int]], max_tiles: int | None) -> list[tuple[int, int]]:
    if max_tiles is not None and len(grid) > max_tiles:
        keep = np.round(np.linspace(0, len(grid) - 1, max_tiles)).astype(int)
        grid = [grid[i] for i in keep]
    return grid


def grid_tiles(
    image: np.ndarray, tile: int, max_tiles: int, flat_fraction: float = FLAT_FRACTION
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Return ``(tiles [N,1,tile,tile] float32, origins)`` for a 2-D image.

    An axis shorter than the tile is padded by mirroring ('symmetric'), which adds no new
    frequencies at the seam.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    h, w = image.shape
    pad_y, pad_x = max(0, tile - h), max(0, tile - w)
    if pad_y or pad_x:
        image = _pad_symmetric(image, pad_y, pad_x)
        h, w = image.shape
    grid = grid_origins(h, w, tile)
    informative = [o for o, flat in zip(grid, _flat_tiles(image, grid, tile, flat_fraction)) if not flat]
    origins = _spread(informative or grid, max_tiles)
    tiles = np.empty((len(origins), 1, tile, tile), dtype=np.float32)
    for i, (y, x) in enumerate(origins):
        tiles[i, 0] = image[y : y + tile, x : x + tile]
    return tiles, origins


def _flat_tiles(image: np.ndarray, grid: list[tuple[int, int]], tile: int, flat_fraction: float) -> np.ndarray:
    """Which tiles are mostly at their own min or max value (one vectorised pass over every
    4th row and column of each tile: plenty to estimate a share)."""
    if flat_fraction > 1.0:
        return np.zeros(len(grid), dtype=bool)
    offsets = np.arange(0, tile, 4)
    ys = np.array([y for y, _ in grid])[:, None] + offsets
    xs = np.array([x for _, x in grid])[:, None] + offsets
    sub = image[ys[:, :, None], xs[:, None, :]]
    lo = sub.min(axis=(1, 2), keepdims=True)
    hi = sub.max(axis=(1, 2), keepdims=True)
    share = ((sub == lo) | (sub == hi)).mean(axis=(1, 2))
    return share >= flat_fraction


def _pad_symmetric(image: np.ndarray, pad_y: int, pad_x: int) -> np.ndarray:
    # np.pad 'symmetric' cannot pad more than the axis length in one go; repeat until big enough.
    while pad_y > 0 or pad_x > 0:
        step_y, step_x = min(pad_y, image.shape[0]), min(pad_x, image.shape[1])
        image = np.pad(image, ((0, step_y), (0, step_x)), mode="symmetric")
        pad_y, pad_x = pad_y - step_y, pad_x - step_x
    return image


def tiles_to_full(maps: np.ndarray, origins: Sequence[tuple[int, int]], tile: int, shape: tuple[int, int],
                  empty: float) -> np.ndarray:
    """Per-tile maps ``[N, h, w]`` (tile ``i`` at ``origins[i]``) up-sampled to an image of ``shape``:
    the maximum over overlapping tiles; pixels no tile covers (left out by ``max_tiles``) get ``empty``."""
    h, w = shape
    full = np.full((max(h, tile), max(w, tile)), -np.inf, dtype=np.float32)
    for m, (y, x) in zip(maps, origins):
        ry, rx = tile // m.shape[0], tile // m.shape[1]
        up = np.repeat(np.repeat(m.astype(np.float32), ry, axis=0), rx, axis=1)
        up = np.pad(up, ((0, tile - up.shape[0]), (0, tile - up.shape[1])), mode="edge")
        region = full[y : y + tile, x : x + tile]
        np.maximum(region, up, out=region)
    full = full[:h, :w]
    full[~np.isfinite(full)] = np.float32(empty)
    return full


def full_to_tiles(full: np.ndarray, origins: Sequence[tuple[int, int]], tile: int, cell: int) -> np.ndarray:
    """An image-sized map as per-tile maps ``[N, tile/cell, tile/cell]`` at ``origins`` (the maximum
    in each ``cell`` x ``cell`` square; outside the image counts as 0)."""
    n = max(tile // cell, 1)
    out = np.zeros((len(origins), n, n), dtype=np.float32)
    pad = np.pad(full, ((0, tile), (0, tile)))
    for i, (y, x) in enumerate(origins):
        t = pad[y : y + n * cell, x : x + n * cell]
        out[i] = t.reshape(n, cell, n, cell).max(axis=(1, 3))
    return out


def aggregate_logits(logits: np.ndarray, method: str, topk: int = 1) -> float:
    """Fold per-tile logits into one image logit."""
    flat = np.asarray(logits, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError("no tile logits to aggregate")
    if method == "mean":
        return float(flat.mean())
    if method == "max":
        return float(flat.max())
    if method == "topk_mean":
        k = max(1, min(int(topk), flat.size))
        return float(np.sort(flat)[-k:].mean())
    raise ValueError(f"unknown aggregate {method!r}; expected one of {AGGREGATES}")


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
