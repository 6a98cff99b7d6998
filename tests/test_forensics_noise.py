"""User stories for the imaging-physics layer (edge_agent.forensics.noise) on the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.decode import ImageFacts
from edge_agent.errors import ForensicsError
from edge_agent.forensics import NoiseCheck, NoiseProfile, measure_noise
from edge_agent.forensics.simulator import Panel, PanelSpec, generated_like
from edge_agent.tiling import grid_tiles

SHAPE = (512, 512)


def _features(img: np.ndarray):
    return measure_noise(grid_tiles(img, 256, 64)[0])


@pytest.fixture(scope="module")
def profile() -> NoiseProfile:
    rng = np.random.default_rng(10)
    panels = [Panel(PanelSpec(s, shape=SHAPE)) for s in (31, 32, 33)]
    return NoiseProfile.fit((_features(panels[i % 3].acquire(rng)) for i in range(24)), modality="DX",
                            source="simulator")


def _check(profile: NoiseProfile, img: np.ndarray):
    tiles, origins = grid_tiles(img, 256, 64)
    return NoiseCheck(profile).check(img, tiles, origins)


def test_authentic_images_from_a_panel_the_profile_never_saw_pass(profile):
    rng = np.random.default_rng(11)
    panel = Panel(PanelSpec(34, shape=SHAPE))
    for _ in range(4):
        finding = _check(profile, panel.acquire(rng))
        assert finding.layer == "physics"
        assert finding.reasons == (), finding.reasons
        assert finding.score is not None and finding.score < 0.5


def test_uniform_grain_that_does_not_follow_the_signal_is_named(profile):
    finding = _check(profile, generated_like(np.random.default_rng(12), SHAPE, "uniform_grain", noise_std=0.006))
    assert "physics.noise_not_signal_dependent" in finding.flagged_codes
    assert finding.score is not None and finding.score > 0.9


def test_too_perfect_image_is_flagged_noise_too_low(profile):
    finding = _check(profile, generated_like(np.random.default_rng(13), SHAPE, "too_smooth"))
    assert "physics.noise_too_low" in finding.flagged_codes


def test_white_unblurred_grain_gives_an_abnormal_spectrum(profile):
    finding = _check(profile, generated_like(np.random.default_rng(14), SHAPE, "uniform_grain", noise_std=0.01))
    assert "physics.spectrum_abnormal" in finding.flagged_codes


def test_profile_is_small_json_and_round_trips(profile):
    text = profile.to_json()
    assert len(text) < 4000
    again = NoiseProfile.from_json(text)
    assert again == profile
    with pytest.raises(ForensicsError):
        NoiseProfile.from_json('{"format": "something else"}')


def test_online_update_with_new_authentic_images_moves_the_profile_towards_them(profile):
    feats = _features(Panel(PanelSpec(35, shape=SHAPE)).acquire(np.random.default_rng(15)))
    updated = profile.updated(feats)
    assert updated.images == profile.images + 1
    for k, v in feats.values.items():
        if v is not None and k in profile.stats:
            assert abs(updated.stats[k].mean - v) <= abs(profile.stats[k].mean - v) + 1e-12
    capped = NoiseProfile.fit([feats] * 5, modality="DX", horizon=3)
    assert capped.images == 3  # beyond the horizon, an exponential moving average


def test_image_of_another_modality_gets_no_score_rather_than_a_wrong_one(profile):
    facts = ImageFacts(container="dicom", file_sha256="", pixel_sha256="", rows=512, columns=512, frames=1,
                       bits_stored=12, photometric="MONOCHROME2", modality="MR")
    img = Panel(PanelSpec(36, shape=SHAPE)).acquire(np.random.default_rng(16))
    tiles, origins = grid_tiles(img, 256, 64)
    finding = NoiseCheck(profile).check(img, tiles, origins, facts)
    assert finding.score is None and finding.flagged_codes == ("physics.no_profile",)


def test_an_8bit_export_is_not_judged_by_a_profile_learned_on_the_devices_dicom_output(profile):
    # a PNG has no modality: its quantisation and compression reshape the noise the profile knows
    facts = ImageFacts(container="png", file_sha256="", pixel_sha256="", rows=512, columns=512, frames=1,
                       bits_stored=8, photometric="MONOCHROME2", modality="")
    img = np.round(Panel(PanelSpec(36, shape=SHAPE)).acquire(np.random.default_rng(17)) * 255) / 255
    tiles, origins = grid_tiles(img.astype(np.float32), 256, 64)
    finding = NoiseCheck(profile).check(img, tiles, origins, facts)
    assert finding.score is None and finding.flagged_codes == ("physics.no_profile",)
    assert "png image without a DICOM modality" in finding.reasons[0].message
    modality_free = NoiseProfile(modality="", stats=profile.stats)  # learned on exports: it judges them
    assert NoiseCheck(modality_free).check(img, tiles, origins, facts).score is not None


def test_blank_image_cannot_be_measured_and_says_so(profile):
    finding = _check(profile, np.ones(SHAPE, np.float32))
    assert finding.score is None
    assert finding.flagged_codes == ("physics.insufficient_flat_area",)


def test_check_reading_a_spread_subset_in_place_measures_what_a_copy_of_those_tiles_gives():
    img = Panel(PanelSpec(37, shape=(768, 1024))).acquire(np.random.default_rng(17))
    tiles, _ = grid_tiles(img, 256, 64)
    pick = (0, 2, 5, 7, 9, 11)
    in_place, copied = measure_noise(tiles, pick), measure_noise(tiles[list(pick)])
    assert in_place == copied and in_place.flat_blocks > 0
    assert measure_noise(tiles[:, 0]) == measure_noise(tiles)



def _reference_fit(xs, ys, ws):
    """The Poisson-Gaussian fit as first written (np.average, per-row sums): the test's oracle."""
    from edge_agent.forensics.noise import _EXPONENTS

    x, v, w = np.asarray(xs), np.exp(2 * np.asarray(ys)), np.asarray(ws)
    e = np.exp(_EXPONENTS[:, None] * x[None, :])
    a0, a1 = np.broadcast_to(w / v, e.shape), e * (w / v)
    g00, g01, g11 = (a0 * a0).sum(1), (a0 * a1).sum(1), (a1 * a1).sum(1)
    h0, h1 = (a0 * w).sum(1), (a1 * w).sum(1)
    det = g00 * g11 - g01 * g01
    f = np.where(det > 0, (g11 * h0 - g01 * h1) / np.where(det > 0, det, 1), -1.0)
    q = np.where(det > 0, (g00 * h1 - g01 * h0) / np.where(det > 0, det, 1), -1.0)
    bad = (f < 0) | (q < 0)
    f_only, q_only = np.maximum(h0 / g00, 0), np.maximum(h1 / g11, 0)
    use_f = ((a0 * f_only[:, None] - w) ** 2).sum(1) <= ((a1 * q_only[:, None] - w) ** 2).sum(1)
    f = np.where(bad, np.where(use_f, f_only, 0.0), f)
    q = np.where(bad, np.where(use_f, 0.0, q_only), q)
    model = f[:, None] + q[:, None] * e
    rms = np.sqrt(np.average((np.log(np.maximum(model, 1e-30)) - np.log(v)[None, :]) ** 2, weights=w, axis=1)) / 2
    return float(_EXPONENTS[int(np.argmin(rms))]), float(rms.min())


def test_grain_of_one_strength_at_every_grey_level_gets_the_same_fit_on_any_machine():
    """Noise that does not follow the signal ties several exponents of the fit to the last bit; the
    tie must fall where the profiles were learned, on any CPU. A matrix product (BLAS) rounded the
    later rows one unit lower and moved the exponent from 1 to 11 on 5 of 150 such ramps."""
    from edge_agent.forensics.noise import _poisson_gaussian_fit

    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(3, 9))
        xs = sorted(rng.uniform(0.05, 0.95, n).tolist())
        ys = (np.log(rng.choice([0.002, 0.01, 0.03])) + rng.choice([0, 1e-9]) * rng.standard_normal(n)).tolist()
        ws = np.sqrt(rng.integers(3, 40, n)).tolist()
        got = _poisson_gaussian_fit(xs, ys, ws)
        assert (got["exponent"], got["fit_rms"]) == _reference_fit(xs, ys, ws)
