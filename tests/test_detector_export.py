"""The detector's export contract with the agent (no training needed; < 30 s on 2 cores).

User stories:
* the agent can run an exported detector in onnxruntime or OpenVINO and get what PyTorch gets;
* the CAM it displays is consistent with the score (logit == CAM mean);
* a shipped model folder is intact (sha256) and speaks the manifest contract.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from models.train.detector import NPRDetector, count_macs  # noqa: E402
from models.train.export import export_onnx  # noqa: E402

TILE = 64  # small tile keeps the test fast; the graph is the same for 256


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[NPRDetector, Path, np.ndarray]:
    torch.manual_seed(0)
    model = NPRDetector().eval()
    # non-trivial BN statistics so the fused export is really exercised
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path, TILE)
    rng = np.random.default_rng(0)
    # a smooth "anatomy" + noise, 3 tiles, one of them 8-bit quantised
    yy, xx = np.mgrid[0:TILE, 0:TILE] / TILE
    base = 0.5 + 0.3 * np.sin(6 * yy) * np.cos(4 * xx)
    x = np.stack([base + rng.normal(0, s, base.shape) for s in (0.003, 0.01, 0.02)]).clip(0, 1)
    x[2] = np.round(x[2] * 255) / 255
    return model, path, x[:, None].astype(np.float32)


def _torch(model: NPRDetector, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        lo, cam = model(torch.from_numpy(x))
    return lo.numpy(), cam.numpy()


def test_agent_gets_the_same_logits_and_cam_from_onnxruntime_as_from_pytorch(exported) -> None:
    import onnxruntime as ort
    model, path, x = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["tiles"]
    assert [o.name for o in sess.get_outputs()] == ["logits", "cam"]
    lo, cam = sess.run(["logits", "cam"], {"tiles": x})
    tlo, tcam = _torch(model, x)
    np.testing.assert_allclose(lo, tlo, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(cam, tcam, atol=1e-4, rtol=1e-4)


def test_agent_gets_the_same_logits_and_cam_from_openvino_as_from_pytorch(exported) -> None:
    import openvino as ov
    model, path, x = exported
    cm = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    r = cm(x)
    tlo, tcam = _torch(model, x)
    np.testing.assert_allclose(np.asarray(r[cm.output("logits")]), tlo, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(r[cm.output("cam")]), tcam, atol=1e-3, rtol=1e-3)


def test_tile_logit_is_exactly_the_mean_of_its_cam_so_the_heatmap_explains_the_score(exported) -> None:
    import onnxruntime as ort
    _, path, x = exported
    lo, cam = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"tiles": x})
    assert cam.shape == (3, TILE // 16, TILE // 16)
    np.testing.assert_allclose(lo, cam.mean(axis=(1, 2)), atol=1e-5)


def test_agent_can_send_any_number_of_tiles_in_one_call(exported) -> None:
    import onnxruntime as ort
    _, path, x = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    one = sess.run(["logits"], {"tiles": x[:1]})[0]
    many = sess.run(["logits"], {"tiles": np.concatenate([x] * 3)})[0]
    assert one.shape == (1,) and many.shape == (9,)
    np.testing.assert_allclose(many[:1], one, atol=1e-5)


def test_detector_fits_the_edge_budget() -> None:
    model = NPRDetector()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert count_macs(model, 256) / 1e9 < 0.06


def _shipped() -> list[Path]:
    return sorted((ROOT / "models").glob("xray-npr-*/manifest.json"))


@pytest.mark.parametrize("manifest_path", _shipped(), ids=lambda p: p.parent.name)
def test_shipped_model_files_match_the_sha256_in_their_manifest(manifest_path: Path) -> None:
    man = json.loads(manifest_path.read_text())
    assert man["files"], "a shipped model lists at least one file"
    for f in man["files"]:
        data = (manifest_path.parent / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]


@pytest.mark.parametrize("manifest_path", _shipped(), ids=lambda p: p.parent.name)
def test_shipped_manifest_speaks_the_agent_contract(manifest_path: Path) -> None:
    man = json.loads(manifest_path.read_text())
    for key in ("schema", "name", "version", "files", "input", "outputs", "tiling", "thresholds", "metrics",
                "training_data", "model"):
        assert key in man, key
    assert man["schema"] == 1 and man["name"] == "xray-npr"
    assert manifest_path.parent.name == f"{man['name']}-{man['version']}"
    assert man["input"] == {"name": "tiles", "layout": "NCHW", "dtype": "float32", "range": [0, 1],
                            "photometric": "MONOCHROME2"}
    assert man["outputs"] == {"logits": "logits", "cam": "cam"}
    t = man["tiling"]
    assert t["aggregate"] in ("mean", "max", "topk_mean") and t["tile"] % 16 == 0 and t["max_tiles"] >= 1
    assert int(t.get("topk", 1)) >= 1
    th = man["thresholds"]
    assert 0 <= th["suspicious"] <= th["synthetic"] <= 1 and th["chosen_on"]
    for f in man["files"]:
        assert set(f) == {"path", "sha256", "format", "precision"}
        assert f["format"] in ("onnx", "openvino-xml", "openvino-bin") and f["precision"] in ("fp32", "int8")
    assert any(f["format"] == "onnx" for f in man["files"])
    for key in ("manifest_sha256", "sources", "licences", "attribution"):
        assert key in man["training_data"], key
    for key in ("parameters", "gmac_per_tile", "architecture"):
        assert key in man["model"], key


@pytest.mark.parametrize("manifest_path", _shipped(), ids=lambda p: p.parent.name)
def test_shipped_onnx_runs_on_plain_pixels_and_keeps_cam_consistent(manifest_path: Path) -> None:
    import onnxruntime as ort
    man = json.loads(manifest_path.read_text())
    tile = man["tiling"]["tile"]
    x = np.random.default_rng(1).random((2, 1, tile, tile), dtype=np.float32)
    for f in man["files"]:
        if f["format"] != "onnx":
            continue
        lo, cam = ort.InferenceSession(str(manifest_path.parent / f["path"]), providers=["CPUExecutionProvider"]).run(
            ["logits", "cam"], {"tiles": x})
        assert lo.shape == (2,) and cam.shape[0] == 2
        np.testing.assert_allclose(lo, cam.mean(axis=(1, 2)), atol=2e-4 if f["precision"] == "int8" else 1e-5)


def test_blank_collimator_tile_reads_as_no_evidence_not_as_too_smooth() -> None:
    """A saturated, perfectly flat tile (collimator shadow, air) must not raise the score."""
    from models.train.detector import FLAT_LOGIT
    model = NPRDetector().eval()
    x = torch.full((2, 1, TILE, TILE), 1.0)
    x[1] = 0.0
    with torch.no_grad():
        lo, cam = model(x)
    np.testing.assert_allclose(lo.numpy(), [FLAT_LOGIT, FLAT_LOGIT], atol=1e-6)
