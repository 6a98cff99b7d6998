"""The simulated real-like radiographs of the training set reach the detector as the agent sees them."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from edge_agent.decode import decode_bytes  # noqa: E402
from models.train.simdata import encode_simulated, simulated_radiograph  # noqa: E402


@pytest.mark.parametrize("seed", [3, 11])
def test_a_simulated_acquisition_decodes_to_the_pixels_it_was_rendered_with(seed: int) -> None:
    img, facts = simulated_radiograph(np.random.default_rng(seed))
    assert img.shape == facts["shape"] and 10 <= facts["bits"] <= 16
    data, suffix, container = encode_simulated(img, facts["bits"], np.random.default_rng(seed))
    seen = np.asarray(decode_bytes(data).frames[0], np.float32)
    assert seen.shape == img.shape
    if container == "dicom":
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert int(ds.BitsStored) == facts["bits"] and ds.Modality in ("CR", "DX")
        # MONOCHROME1 is stored inverted; the agent turns it back into the rendered image
        assert np.abs(seen - img).max() <= 1.0 / ((1 << facts["bits"]) - 1)
    else:
        assert suffix in (".png", ".jpg") and np.corrcoef(seen.ravel(), img.ravel())[0, 1] > 0.99




def test_a_simulated_acquisition_passes_the_metadata_rules_like_a_real_exposure() -> None:
    from edge_agent.forensics.metadata import evaluate_rules

    judged = 0
    for seed in range(40):
        img, facts = simulated_radiograph(np.random.default_rng(seed))
        data, _, container = encode_simulated(img, facts["bits"], np.random.default_rng(seed), facts)
        if container != "dicom":
            continue
        judged += 1
        ds = pydicom.dcmread(io.BytesIO(data))
        assert [rule.code for rule, _ in evaluate_rules(ds)] == [], ds.Modality
        # the exposure attributes take nothing from the random stream: same pixels as without them
        bare, _, _ = encode_simulated(img, facts["bits"], np.random.default_rng(seed))
        assert pydicom.dcmread(io.BytesIO(bare)).PixelData == ds.PixelData
    assert judged >= 20


def test_a_training_set_can_ask_for_more_8_bit_exports_and_lower_jpeg_quality() -> None:
    from PIL import Image

    img, facts = simulated_radiograph(np.random.default_rng(5))
    kinds = []
    for seed in range(24):
        data, _, container = encode_simulated(img, facts["bits"], np.random.default_rng(seed), facts,
                                              export_fraction=1.0, export_jpeg_quality=(50, 50))
        kinds.append(container)
        if container == "jpeg":  # quality 50 of the IJG scale: the standard luminance table, unscaled
            assert Image.open(io.BytesIO(data)).quantization[0][0] == 16
    assert "dicom" not in kinds and {"png", "jpeg"} <= set(kinds)
    # the defaults keep the shipped recipe's share (15 %) and draws: same containers and pixels
    # (DICOM files differ only by their fresh UIDs and dates)
    for seed in range(12):
        a = encode_simulated(img, facts["bits"], np.random.default_rng(seed), facts)
        b = encode_simulated(img, facts["bits"], np.random.default_rng(seed), facts, 0.15, (85, 97))
        assert a[1:] == b[1:]
        np.testing.assert_array_equal(decode_bytes(a[0]).frames[0], decode_bytes(b[0]).frames[0])


def test_a_wrong_export_setting_is_refused_with_the_key_named(tmp_path: Path) -> None:
    from models.train.simdata import build_simulated

    with pytest.raises(ValueError, match="export_fraction"):
        build_simulated(tmp_path, 1, {"train": 1, "export_fraction": 1.5})
    with pytest.raises(ValueError, match="export_jpeg_quality"):
        build_simulated(tmp_path, 1, {"train": 1, "export_jpeg_quality": [90, 50]})
