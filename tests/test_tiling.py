"""Tiling at the native grid: coverage, padding, and leaving out tiles with nothing to judge."""

from __future__ import annotations

import numpy as np

from edge_agent.tiling import aggregate_logits, grid_tiles


def _noisy(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + 0.05 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)


def test_tiles_cover_the_whole_image_without_resizing() -> None:
    img = _noisy(700, 530)
    tiles, origins = grid_tiles(img, 256, 64)
    covered = np.zeros(img.shape, dtype=bool)
    for (y, x), t in zip(origins, tiles):
        covered[y : y + 256, x : x + 256] = True
        assert np.array_equal(t[0], img[y : y + 256, x : x + 256])
    assert covered.all()


def test_small_image_is_mirrored_up_to_one_tile() -> None:
    img = _noisy(100, 300)
    tiles, origins = grid_tiles(img, 256, 64)
    assert tiles.shape[1:] == (1, 256, 256)
    assert np.array_equal(tiles[0, 0, :100, :256], img[:, origins[0][1] : origins[0][1] + 256])


def test_collimator_shadow_tiles_are_left_out_of_the_score() -> None:
    img = _noisy(1024, 1024)
    img[:, 512:] = 1.0  # burnt-out / clipped region, as in a collimated CR radiograph
    _, origins = grid_tiles(img, 256, 64)
    assert origins and all(x < 512 for _, x in origins)
    _, all_origins = grid_tiles(img, 256, 64, flat_fraction=2.0)
    assert len(all_origins) == 16


def test_an_entirely_flat_image_is_still_scored_on_its_tiles() -> None:
    img = np.full((512, 512), 0.25, dtype=np.float32)
    tiles, _ = grid_tiles(img, 256, 64)
    assert tiles.shape[0] == 4


def test_max_tiles_keeps_an_evenly_spread_subset() -> None:
    img = _noisy(2048, 2048)
    _, origins = grid_tiles(img, 256, 16)
    assert len(origins) == 16
    assert origins[0] == (0, 0) and origins[-1] == (1792, 1792)


def test_topk_mean_aggregates_the_strongest_tiles() -> None:
    assert aggregate_logits(np.array([0.0, 1.0, 5.0, 3.0]), "topk_mean", 2) == 4.0
    assert aggregate_logits(np.array([0.0, 2.0]), "mean") == 1.0
    assert aggregate_logits(np.array([0.0, 2.0]), "max") == 2.0
