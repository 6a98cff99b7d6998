"""Tiling at the native grid: coverage, padding, and leaving out tiles with nothing to judge."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.tiling import aggregate_logits, grid_tiles, strongest_cell


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


def test_one_edited_region_can_carry_the_image_score() -> None:
    tile_logits = np.array([-3.0, -3.0, -2.0])
    assert aggregate_logits(tile_logits, "mean_or_local", local=1.5, local_offset=-0.5) == 1.0
    # a quiet strongest cell leaves the whole-image reading in charge
    assert aggregate_logits(tile_logits, "mean_or_local", local=-6.0, local_offset=-0.5) == pytest.approx(-8 / 3)
    with pytest.raises(ValueError, match="strongest CAM cell"):
        aggregate_logits(tile_logits, "mean_or_local")


def test_the_strongest_cell_is_reported_in_image_pixels_and_never_on_padding() -> None:
    # a 300x200 image: one row of two tiles, the short axis mirrored from 200 to 256 px
    _, origins = grid_tiles(_noisy(200, 300), 256, 64)
    cam = np.zeros((len(origins), 16, 16), np.float32)
    cam[0, 15, 3] = 9.0  # row 15 of the tile = pixels 240..255: padding, not image
    cam[1, 4, 10] = 2.0  # second tile starts at column 44
    logit, (y, x) = strongest_cell(cam, origins, 256, (200, 300))
    assert logit == 2.0
    assert (y, x) == (4 * 16 + 8, 44 + 10 * 16 + 8)
