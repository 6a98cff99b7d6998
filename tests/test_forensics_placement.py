"""User stories for the fingerprint placement search: a device's images that left the detector
rotated, mirrored or cropped are still recognised and checked where they lie; other detectors'
images are not placed. Physics simulator, small panels."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_agent.forensics import FingerprintCheck, enroll
from edge_agent.forensics.placement import ORIENTATIONS, PlacementSearch, declared_placement
from edge_agent.forensics.residual import block_mean
from edge_agent.forensics.simulator import Panel, PanelSpec, generated_like, splice
from edge_agent.tiling import grid_tiles, tiles_to_full

SHAPE = (256, 384)


@pytest.fixture(scope="module")
def panels() -> tuple[Panel, Panel]:
    return Panel(PanelSpec(41, shape=SHAPE)), Panel(PanelSpec(42, shape=SHAPE))


@pytest.fixture()
def check(panels: tuple[Panel, Panel]) -> FingerprintCheck:
    # a new check per test: it remembers the last placement it found
    return FingerprintCheck(_fingerprint(panels[0]))


_FP: dict[int, object] = {}


def _fingerprint(panel: Panel):
    if panel.spec.seed not in _FP:
        rng = np.random.default_rng(1)
        _FP[panel.spec.seed] = enroll(panel.acquire(rng) for _ in range(12)).quantised(8)
    return _FP[panel.spec.seed]


def _point(finding, code: str) -> tuple[int, int]:
    why = next(r.message for r in finding.reasons if r.code == code)
    row, col = (int(v) for v in re.search(r"row (\d+), column (\d+)", why).groups())
    return row, col


def test_the_eight_orientations_are_distinct_and_each_turns_back_exactly() -> None:
    a = np.arange(5 * 7).reshape(5, 7)
    seen = set()
    for o in ORIENTATIONS:
        img = o.to_image(a)
        np.testing.assert_array_equal(o.to_detector(img), a)
        seen.add(img.tobytes() + bytes(img.shape))
        for r, c in ((0, 0), (4, 6), (2, 5)):
            y, x = o.point_to_image(r, c, a.shape)
            assert img[y, x] == a[r, c], o.name
    assert len(seen) == 8


def test_the_threshold_rises_with_the_number_of_positions_searched_and_never_falls_below_the_native_one() -> None:
    s = PlacementSearch(np.zeros((64, 64), np.float32), min_pce=50.0)
    assert s.threshold(1) == 50.0
    assert s.threshold(10**9) > s.threshold(10**7) > 50.0


@pytest.mark.parametrize("o", ORIENTATIONS[1:], ids=lambda o: o.name)
def test_a_mirrored_or_rotated_image_of_this_detector_is_recognised_not_called_foreign(check, panels, o) -> None:
    img = np.ascontiguousarray(o.to_image(panels[0].acquire(np.random.default_rng(2))))
    finding = check.check(img)
    assert finding.flagged_codes == ("fingerprint.placed",)
    assert o.name in finding.reasons[0].message
    assert finding.score is not None and finding.score < 0.05


def test_an_image_cropped_to_the_collimated_field_is_placed_and_checked_there(check, panels) -> None:
    img = panels[0].acquire(np.random.default_rng(3))[37:237, 51:331]
    finding = check.check(np.ascontiguousarray(img))
    assert finding.flagged_codes == ("fingerprint.placed",)
    assert "cropped to detector rows 37-236, columns 51-330" in finding.reasons[0].message
    assert finding.score is not None and finding.score < 0.05
    assert finding.heat is not None and finding.heat.shape[0] == len(grid_tiles(img, 256, 64)[1])


def test_another_detectors_image_mirrored_is_still_absent_and_its_crop_is_not_placed(check, panels) -> None:
    rng = np.random.default_rng(4)
    mirrored = check.check(np.ascontiguousarray(panels[1].acquire(rng)[:, ::-1]))
    assert mirrored.flagged_codes == ("fingerprint.absent",)
    assert mirrored.score is not None and mirrored.score > 0.9
    assert "nor rotated, mirrored or shifted" in mirrored.reasons[0].message
    crop = check.check(np.ascontiguousarray(panels[1].acquire(rng)[20:220, 40:340]))
    assert crop.flagged_codes == ("fingerprint.geometry_mismatch",) and crop.score is None
    assert "no crop position, rotation or mirror" in crop.reasons[0].message


def test_another_detectors_whole_frame_turned_a_quarter_is_absent(check, panels) -> None:
    finding = check.check(np.ascontiguousarray(np.rot90(panels[1].acquire(np.random.default_rng(8)))))
    assert finding.flagged_codes == ("fingerprint.absent",)
    assert finding.score is not None and finding.score > 0.9


def test_a_generated_image_cropped_and_rotated_is_not_placed(check) -> None:
    img = np.rot90(generated_like(np.random.default_rng(5), SHAPE, "physics_noise")[10:240, 30:330])
    finding = check.check(np.ascontiguousarray(img))
    assert "fingerprint.placed" not in finding.flagged_codes


def test_a_splice_in_a_cropped_rotated_image_is_pointed_at_in_the_images_own_coordinates(check, panels) -> None:
    rng = np.random.default_rng(6)
    forged, mask = splice(panels[0].acquire(rng), panels[1].acquire(rng), rng, size=(90, 120))
    o = ORIENTATIONS[5]  # rotated 90 degrees clockwise
    img = np.ascontiguousarray(o.to_image(forged[8:250, 12:372]))
    seen_mask = np.ascontiguousarray(o.to_image(mask[8:250, 12:372]))
    tiles, origins = grid_tiles(img, 256, 64)
    finding = check.check(img, tiles, origins)
    assert finding.flagged_codes[0] == "fingerprint.placed" and "fingerprint.local_mismatch" in finding.flagged_codes
    row, col = _point(finding, "fingerprint.local_mismatch")
    assert seen_mask[row, col]
    heat = tiles_to_full(finding.heat, origins, 256, img.shape, 0.0)
    assert heat[seen_mask].mean() > 3 * max(heat[~seen_mask].mean(), 1e-3)


def test_a_device_that_always_crops_the_same_way_pays_for_the_search_once(check, panels, monkeypatch) -> None:
    calls = []
    real = PlacementSearch.search

    def counted(self, frame, *a, **k):
        calls.append(frame.shape)
        return real(self, frame, *a, **k)

    monkeypatch.setattr(PlacementSearch, "search", counted)
    rng = np.random.default_rng(7)
    for _ in range(3):
        finding = check.check(np.ascontiguousarray(panels[0].acquire(rng)[16:240, 24:360][:, ::-1]))
        assert finding.flagged_codes == ("fingerprint.placed",)
    assert len(calls) == 1


def _header(origin: tuple[int, int], rotation: int, flip: bool):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.FieldOfViewOrigin = list(origin)
    ds.FieldOfViewRotation = str(rotation)
    ds.FieldOfViewHorizontalFlip = "YES" if flip else "NO"
    return ds


def test_the_dicom_field_of_view_attributes_name_the_same_turns_as_the_search() -> None:
    # PS3.3 C.8.11.4.1.1: rotate clockwise, then flip horizontally
    a = np.arange(6).reshape(2, 3)
    for o in ORIENTATIONS:
        rotation, flip = o.dicom()
        shown = np.rot90(a, -rotation // 90)
        np.testing.assert_array_equal(o.to_image(a), shown[:, ::-1] if flip else shown)
        p = declared_placement(_header((3, 4), rotation, flip), o.to_image(a).shape, (10, 10))
        assert p is not None and p.orientation is o and (p.row, p.col, p.height, p.width) == (3, 4, 2, 3)
    assert declared_placement(_header((9, 9), 0, False), (2, 3), (10, 10)) is None  # off the detector
    assert declared_placement(_header((0, 0), 45, False), (2, 3), (10, 10)) is None  # not a quarter turn


def test_a_crop_whose_header_declares_its_field_of_view_is_checked_there_without_a_search(check, panels, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(PlacementSearch, "search", lambda self, frame, *a, **k: calls.append(1))
    o = ORIENTATIONS[5]  # rotated 90 degrees clockwise
    img = np.ascontiguousarray(o.to_image(panels[0].acquire(np.random.default_rng(9))[30:230, 40:360]))
    rotation, flip = o.dicom()
    declared = declared_placement(_header((30, 40), rotation, flip), img.shape, SHAPE)
    finding = check.check(img, declared=declared)
    assert finding.flagged_codes == ("fingerprint.placed",) and calls == []
    assert "where its header's Field of View places it" in finding.reasons[0].message
    assert "Field of View Origin 30\\40, Rotation 90, Horizontal Flip NO" in finding.reasons[0].message


def test_a_header_that_places_the_image_elsewhere_than_its_pixels_lie_is_noted(check, panels) -> None:
    img = np.ascontiguousarray(panels[0].acquire(np.random.default_rng(10))[37:237, 51:331])
    declared = declared_placement(_header((0, 0), 0, False), img.shape, SHAPE)
    finding = check.check(img, declared=declared)
    assert finding.flagged_codes == ("fingerprint.placed", "fingerprint.header_placement_differs")
    assert "Origin 0\\0" in finding.reasons[1].message and "Origin 37\\51" in finding.reasons[1].message
    foreign = np.ascontiguousarray(panels[1].acquire(np.random.default_rng(11))[37:237, 51:331])
    assert "fingerprint.header_placement_differs" not in check.check(foreign, declared=declared).flagged_codes


def test_a_crop_that_starts_at_the_detectors_first_row_and_column_is_checked_too(check, panels) -> None:
    img = np.ascontiguousarray(panels[0].acquire(np.random.default_rng(30))[:200, :300])
    finding = check.check(img)
    assert finding.flagged_codes == ("fingerprint.placed",) and finding.score is not None and finding.score < 0.05
    assert "cropped to detector rows 0-199, columns 0-299" in finding.reasons[0].message
    declared = declared_placement(_header((0, 0), 0, False), img.shape, SHAPE)  # as its header says
    assert FingerprintCheck(check.fingerprint).check(img, declared=declared).flagged_codes == ("fingerprint.placed",)


@pytest.mark.parametrize("off", [(1, 1), (-1, -1), (1, -1), (2, 0)])
def test_a_header_one_pixel_off_does_not_make_an_authentic_crop_look_processed(check, panels, off) -> None:
    """A 1-based Field of View Origin, say: a residual still correlates weakly with the pattern one
    pixel diagonally away, and measured there the image looked 'weakened' (score ~1)."""
    img = np.ascontiguousarray(panels[0].acquire(np.random.default_rng(31))[40:220, 30:330])
    declared = declared_placement(_header((40 + off[0], 30 + off[1]), 0, False), img.shape, SHAPE)
    finding = check.check(img, declared=declared)
    assert finding.flagged_codes == ("fingerprint.placed", "fingerprint.header_placement_differs"), finding.reasons
    assert finding.score is not None and finding.score < 0.05
    assert "Origin 40\\30" in finding.reasons[0].message


def test_a_crop_one_pixel_from_the_remembered_one_is_placed_where_it_lies(check, panels) -> None:
    rng = np.random.default_rng(32)
    assert check.check(np.ascontiguousarray(panels[0].acquire(rng)[40:220, 30:330])).flagged_codes == ("fingerprint.placed",)
    finding = check.check(np.ascontiguousarray(panels[0].acquire(rng)[41:221, 31:331]))
    assert finding.flagged_codes == ("fingerprint.placed",) and finding.score is not None and finding.score < 0.05
    assert "cropped to detector rows 41-220, columns 31-330" in finding.reasons[0].message


def test_a_lossy_copy_at_the_remembered_cut_stays_weakened_at_that_cut(check, panels, monkeypatch) -> None:
    from edge_agent.forensics.simulator import jpeg_roundtrip

    rng = np.random.default_rng(33)
    cut = (slice(40, 220), slice(30, 330))
    assert check.check(np.ascontiguousarray(panels[0].acquire(rng)[cut])).flagged_codes == ("fingerprint.placed",)
    searched = []
    real_search = PlacementSearch.search

    def spy(self, frame, orientations=ORIENTATIONS, *rest):
        searched.append((self.binning, len(orientations)))
        return real_search(self, frame, orientations, *rest)

    monkeypatch.setattr(PlacementSearch, "search", spy)
    finding = check.check(np.ascontiguousarray(jpeg_roundtrip(panels[0].acquire(rng), 90)[cut]))
    assert finding.flagged_codes == ("fingerprint.placed", "fingerprint.weakened")
    assert "cropped to detector rows 40-219, columns 30-329" in finding.reasons[0].message
    assert searched == [(1, 1)]  # only the offset was in question: one orientation, native binning


def test_a_header_cannot_make_generated_images_pass_by_claiming_a_binning_never_searched(check) -> None:
    for b in (2, 3, 4):
        ds = _header((0, 0), 0, False)
        ds.DetectorBinning = [b, b]
        for k in range(6):
            img = np.ascontiguousarray(block_mean(generated_like(np.random.default_rng(40 + k), SHAPE, "physics_noise"), b))
            finding = FingerprintCheck(check.fingerprint).check(img, declared=declared_placement(ds, img.shape, SHAPE))
            assert "fingerprint.placed" not in finding.flagged_codes, (b, k, finding.reasons)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # pydicom says so too; the test is what we do
def test_an_infinite_field_of_view_in_a_header_is_ignored_not_an_error() -> None:
    ds = _header((0, 0), 0, False)
    ds.FieldOfViewOrigin = ["inf", "0"]
    assert declared_placement(ds, (20, 30), SHAPE) is None
    ds = _header((0, 0), 0, False)
    ds.FieldOfViewRotation = "1e400"
    assert declared_placement(ds, (20, 30), SHAPE) is None


def test_the_heat_map_of_a_placed_image_follows_the_callers_tiles(check, panels) -> None:
    donor = panels[1].acquire(np.random.default_rng(34))
    img, _ = splice(panels[0].acquire(np.random.default_rng(35)), donor, np.random.default_rng(36))
    crop = np.ascontiguousarray(img[20:240, 10:370])
    tiles, origins = grid_tiles(crop, 128, 64)
    finding = check.check(crop, tiles, origins)
    assert "fingerprint.placed" in finding.flagged_codes
    assert finding.heat is not None and finding.heat.shape == (len(origins), 128 // check.cell, 128 // check.cell)


def test_a_2x2_binned_image_of_this_detector_is_recognised_and_checked_for_its_pattern(check, panels) -> None:
    finding = check.check(block_mean(panels[0].acquire(np.random.default_rng(12)), 2))
    assert finding.flagged_codes == ("fingerprint.placed",)
    why = finding.reasons[0].message
    assert "binned 2x2" in why and "Detector Binning 2\\2" in why and "local check is not made" in why
    assert finding.score is not None and finding.score < 0.05 and finding.heat is None


def test_a_binned_crop_turned_on_the_console_is_placed_at_its_physical_detector_position(check, panels) -> None:
    o = ORIENTATIONS[1]  # mirrored left-right
    img = np.ascontiguousarray(o.to_image(block_mean(panels[0].acquire(np.random.default_rng(13)), 2)[10:120, 20:180]))
    finding = check.check(img)
    assert finding.flagged_codes == ("fingerprint.placed",)
    assert "cropped to detector rows 20-239, columns 40-359" in finding.reasons[0].message


@pytest.mark.parametrize("origin", [(1, 0), (0, 1), (37, 51)])
def test_a_crop_that_began_at_an_odd_row_or_column_and_was_then_binned_is_placed_where_it_began(
        check, panels, origin) -> None:
    # the bins then straddle the detector's even ones: the search tries every phase of the bins
    y, x = origin
    img = block_mean(panels[0].acquire(np.random.default_rng(17))[y : y + 200, x : x + 300], 2)
    finding = check.check(img)
    assert finding.flagged_codes == ("fingerprint.placed",), finding.reasons
    assert f"cropped to detector rows {y}-{y + 199}, columns {x}-{x + 299}" in finding.reasons[0].message
    assert finding.score is not None and finding.score < 0.05


def test_another_detectors_binned_image_is_not_placed_nor_judged(check, panels) -> None:
    finding = check.check(block_mean(panels[1].acquire(np.random.default_rng(14)), 2))
    assert finding.flagged_codes == ("fingerprint.geometry_mismatch",) and finding.score is None
    assert "scaled other than by binning 2x2" in finding.reasons[0].message


def test_without_the_binned_search_a_binned_image_is_left_unjudged(panels) -> None:
    plain = FingerprintCheck(_fingerprint(panels[0]), binnings=())
    finding = plain.check(block_mean(panels[0].acquire(np.random.default_rng(15)), 2))
    assert finding.flagged_codes == ("fingerprint.geometry_mismatch",) and finding.score is None


def test_the_binned_fingerprint_is_the_block_average_and_keeps_a_predictor_for_every_block(panels) -> None:
    fp = _fingerprint(panels[0])
    b2 = fp.binned(2)
    assert b2.shape == (SHAPE[0] // 2, SHAPE[1] // 2) and fp.binned(1) is fp
    np.testing.assert_allclose(b2.pattern[3, 5], fp.pattern[6:8, 10:12].mean(), rtol=1e-5)
    assert b2.predictor.shape == (-(-b2.shape[0] // 16), -(-b2.shape[1] // 16)) and (b2.predictor > 0).mean() > 0.5
    with pytest.raises(Exception, match="binning 32"):
        fp.binned(32)


def test_a_header_declaring_detector_binning_places_the_image_in_physical_detector_pixels() -> None:
    ds = _header((4, 6), 0, False)
    ds.DetectorBinning = [2, 2]
    p = declared_placement(ds, (3, 2), (20, 20))
    assert p is not None and p.binning == 2 and (p.row, p.col, p.height, p.width) == (4, 6, 6, 4)
    ds.DetectorBinning = [2, 1]  # unequal: not a block average of the pattern
    assert declared_placement(ds, (3, 2), (20, 20)) is None
    ds.DetectorBinning = ["1e400", "1e400"]  # valid DS text, infinite: ignored, not an error
    assert declared_placement(ds, (3, 2), (20, 20)) is None


def test_a_detector_too_small_to_check_when_binned_is_not_searched_binned(panels) -> None:
    small = _fingerprint(panels[0]).cropped(0, 0, 100, 120)
    check = FingerprintCheck(small, tile=64)
    assert check.binnings == ()
    finding = check.check(block_mean(panels[0].acquire(np.random.default_rng(16))[:100, :120], 2))
    assert finding.flagged_codes == ("fingerprint.geometry_mismatch",)
