"""User stories for the detector-fingerprint layer (edge_agent.forensics.fingerprint), on the
physics simulator: small panels so the whole file runs in a few seconds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_agent.errors import ForensicsError
from edge_agent.forensics import Fingerprint, FingerprintCheck, FingerprintEnrollment, enroll
from edge_agent.forensics.simulator import Panel, PanelSpec, generated_like, jpeg_roundtrip, splice
from edge_agent.tiling import grid_tiles

SHAPE = (256, 384)


@pytest.fixture(scope="module")
def panels() -> tuple[Panel, Panel]:
    return Panel(PanelSpec(11, shape=SHAPE)), Panel(PanelSpec(12, shape=SHAPE))


@pytest.fixture(scope="module")
def check(panels: tuple[Panel, Panel]) -> FingerprintCheck:
    rng = np.random.default_rng(1)
    fp = enroll(panels[0].acquire(rng) for _ in range(12))
    return FingerprintCheck(fp.quantised(8))


def _check(check: FingerprintCheck, img: np.ndarray):
    tiles, origins = grid_tiles(img, 256, 64)
    return check.check(img, tiles, origins), check.measure(img, tiles, origins), origins


def test_new_image_from_the_enrolled_panel_carries_its_fingerprint_and_raises_nothing(check, panels):
    rng = np.random.default_rng(2)
    for _ in range(3):
        finding, m, _ = _check(check, panels[0].acquire(rng))
        assert finding.layer == "fingerprint"
        assert finding.reasons == ()
        assert finding.score is not None and finding.score < 0.05
        assert m.pce > 1000
        assert finding.heat is not None and finding.heat.shape == (2, 8, 8)


def test_image_from_another_panel_of_the_same_model_is_flagged_fingerprint_absent(check, panels):
    finding, m, _ = _check(check, panels[1].acquire(np.random.default_rng(3)))
    assert "fingerprint.absent" in finding.flagged_codes
    assert finding.score is not None and finding.score > 0.9
    assert finding.heat is None  # absent everywhere: no region to point at in the heat map
    assert m.pce < 50


@pytest.mark.parametrize("kind", ["uniform_grain", "physics_noise"])
def test_generated_image_claiming_this_device_lacks_its_fingerprint(check, kind):
    finding, _, _ = _check(check, generated_like(np.random.default_rng(4), SHAPE, kind))
    assert "fingerprint.absent" in finding.flagged_codes


def test_region_spliced_from_another_panel_is_pointed_at_by_the_mismatch_map(check, panels):
    rng = np.random.default_rng(5)
    img, mask = splice(panels[0].acquire(rng), panels[1].acquire(rng), rng, size=(100, 140))
    finding, m, origins = _check(check, img)
    assert "fingerprint.local_mismatch" in finding.flagged_codes
    n, yy, xx = m.peak()
    oy, ox = origins[n]
    assert mask[oy + yy * m.cell + m.cell // 2, ox + xx * m.cell + m.cell // 2]


def test_splice_beside_saturated_pixels_is_still_located_and_the_reason_names_a_point_inside_it(check, panels):
    # Saturated (clipped) pixels carry no pattern. A handful of them once blanked out a 96x96-px
    # neighbourhood of the map each, hiding splices over dense anatomy; now only their 4x4 blocks go.
    rng = np.random.default_rng(10)
    img, mask = splice(panels[0].acquire(rng), panels[1].acquire(rng), rng, size=(100, 140))
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.mean()), int(xs.mean())
    img[cy - 1 : cy + 1, cx - 40 : cx + 40 : 10] = 1.0  # specks of burnt-out pixels across the pasted region
    finding, m, origins = _check(check, img)
    assert "fingerprint.local_mismatch" in finding.flagged_codes
    why = next(r.message for r in finding.reasons if r.code == "fingerprint.local_mismatch")
    row, col = (int(v) for v in re.search(r"row (\d+), column (\d+)", why).groups())
    assert mask[row, col]


def test_low_dose_authentic_images_with_saturated_anatomy_raise_no_local_mismatch(check, panels):
    rng = np.random.default_rng(11)
    for _ in range(3):
        img = panels[0].acquire(rng, dose=2500)  # the lowest dose simulated: the spine burns out
        assert (img >= 1.0).any()
        finding, _, _ = _check(check, img)
        assert finding.reasons == ()


def test_lossy_reencoded_authentic_image_is_reported_weakened_not_absent(check, panels):
    img = jpeg_roundtrip(panels[0].acquire(np.random.default_rng(6)), 90)
    finding, m, _ = _check(check, img)
    assert "fingerprint.absent" not in finding.flagged_codes
    assert "fingerprint.weakened" in finding.flagged_codes
    assert m.gain < 0.5


def test_fingerprint_survives_its_signed_byte_form_and_a_flipped_byte_is_refused(check, panels):
    fp = check.fingerprint
    data = fp.to_bytes()
    assert fp.to_bytes() == data  # deterministic: what the device key signs
    again = Fingerprint.from_bytes(data, expected_sha256=fp.sha256)
    np.testing.assert_array_equal(again.pattern, fp.pattern)
    assert again.to_bytes() == data and again.sha256 == fp.sha256
    assert len(data) < fp.pattern.size * 1.2  # ~1 byte per pixel or less, zipped
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    with pytest.raises(ForensicsError, match="sha256"):
        Fingerprint.from_bytes(bytes(bad), expected_sha256=fp.sha256)
    with pytest.raises(ForensicsError):
        Fingerprint.from_bytes(b"EAFP" + b"\x00" * 20)


def test_the_enrolled_modality_is_stored_and_a_fingerprint_without_one_keeps_its_bytes(check):
    fp = check.fingerprint
    assert fp.modality == ""
    named = Fingerprint(fp.pattern, fp.predictor, fp.model, fp.images, fp.bits, fp.scale, modality="DX")
    again = Fingerprint.from_bytes(named.to_bytes())
    assert again.modality == "DX" and again.cropped(0, 0, 64, 64).modality == "DX" and again.binned(2).modality == "DX"
    assert again.sha256 != fp.sha256  # the modality is signed with the pattern
    np.testing.assert_array_equal(again.pattern, fp.pattern)
    assert b"modality" not in fp.to_bytes()  # fingerprints enrolled before modalities were stored: same sha256
    with pytest.raises(ForensicsError, match="modality"):
        Fingerprint(fp.pattern, fp.predictor, modality="X" * 17, images=1)


def test_an_image_of_another_modality_is_not_searched_unless_it_has_the_detectors_frame_size(check, panels):
    fp = check.fingerprint
    dx = FingerprintCheck(Fingerprint(fp.pattern, fp.predictor, fp.model, fp.images, fp.bits, fp.scale, modality="DX"))
    img = panels[1].acquire(np.random.default_rng(8))  # another panel: "absent" wherever it is judged
    slice_ = np.ascontiguousarray(img[:200, :200])  # a CT slice's size, not the panel's
    ct = dx.check(slice_, modality="CT")
    assert ct.score is None and ct.flagged_codes == ("fingerprint.other_modality",)
    assert "modality CT" in ct.reasons[0].message and "DX detector" in ct.reasons[0].message
    # the panel's own frame size: judged whatever the header claims (relabelling a forgery must not
    # switch the check off), as are its own modality written loosely and exports that name none
    tiles, origins = grid_tiles(img, 256, 64)
    for modality in ("CT", " dx", ""):
        assert "fingerprint.absent" in dx.check(img, tiles, origins, modality=modality).flagged_codes, modality
    assert "fingerprint.other_modality" not in dx.check(slice_, modality="dx ").flagged_codes


def test_one_bit_fingerprint_is_eight_times_smaller_and_still_recognises_its_panel(check, panels):
    small = check.fingerprint.quantised(1)
    assert len(small.to_bytes()) < len(check.fingerprint.to_bytes()) / 4
    finding, m, _ = _check(FingerprintCheck(small), panels[0].acquire(np.random.default_rng(7)))
    assert "fingerprint.absent" not in finding.flagged_codes and m.pce > 200


def test_image_of_another_size_is_not_judged_against_the_fingerprint(check):
    finding = check.check(np.zeros((300, 300), np.float32))
    assert finding.score is None
    assert finding.flagged_codes == ("fingerprint.geometry_mismatch",)


def test_enrolment_refuses_images_of_another_size():
    acc = FingerprintEnrollment(SHAPE)
    with pytest.raises(ForensicsError, match="enrol"):
        acc.add(np.zeros((10, 10), np.float32))
    with pytest.raises(ForensicsError):
        acc.finish()


def test_multiplicative_model_for_linear_images_enrols_and_recognises_its_panel(panels):
    rng = np.random.default_rng(8)
    # a linear ("for processing") image: the gain multiplies the signal
    linear = [np.exp(-3.0 * p.acquire(rng)) for p in [panels[0]] * 6]
    fp = enroll(linear, model="multiplicative")
    assert fp.model == "multiplicative" and fp.images == 6
    own = np.exp(-3.0 * panels[0].acquire(rng))
    other = np.exp(-3.0 * panels[1].acquire(rng))
    check = FingerprintCheck(fp)
    assert check.measure(own).pce > 50 > check.measure(other).pce


def test_the_fingerprint_finding_is_the_same_on_one_thread_and_on_two(check, panels, monkeypatch):
    """Tile chunks run in parallel; the verdict, its reasons and its heat map must not depend on it."""
    import edge_agent.forensics.fingerprint_check as fp

    mine, other = panels
    rng = np.random.default_rng(42)
    img, _ = splice(mine.acquire(rng), other.acquire(rng), rng)
    tiles, origins = grid_tiles(img, 256, 64)
    monkeypatch.setattr(fp, "_THREADS", 2)
    two = check.check(img, tiles, origins)
    monkeypatch.setattr(fp, "_THREADS", 1)
    one = check.check(img, tiles, origins)
    assert len(origins) >= 2 and two.score == one.score and two.reasons == one.reasons
    assert two.heat is not None and np.array_equal(two.heat, one.heat)


@pytest.mark.parametrize(("shape", "tile"), [((512, 512), 256), ((768, 1280), 128)])
def test_measurement_is_the_same_on_one_thread_or_two(monkeypatch, shape, tile):
    """Small images run as one chunk on the calling thread, large ones as parallel chunks:
    neither may change a single bit of what the check reports."""
    from edge_agent.forensics import fingerprint_check as fp_module

    panel, donor = Panel(PanelSpec(13, shape=shape)), Panel(PanelSpec(14, shape=shape))
    rng = np.random.default_rng(9)
    check = FingerprintCheck(enroll(panel.acquire(rng) for _ in range(2)), tile=tile)
    img = splice(panel.acquire(rng), donor.acquire(rng), rng)[0]  # something for the local map to see
    tiles, origins = grid_tiles(img, tile, 64)

    def measured():
        m = check.measure(img, tiles, origins)
        return m.pce, m.gain, m.tile_pce, m.mismatch_z, m.cell_z

    default = measured()
    for threads, parallel_from in ((1, 16), (2, 1), (2, 10**6)):
        monkeypatch.setattr(fp_module, "_THREADS", threads)
        monkeypatch.setattr(fp_module, "_PARALLEL_TILES", parallel_from)
        other = measured()
        assert other[:2] == default[:2]
        for a, b in zip(other[2:], default[2:]):
            np.testing.assert_array_equal(a, b)
