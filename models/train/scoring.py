"""Image-level scoring exactly as the agent does it: decode -> grid tiles -> model -> aggregate.

Runners wrap PyTorch, onnxruntime and OpenVINO behind one call signature
``runner(tiles [N,1,T,T]) -> (logits [N], cam [N,h,w])`` so every precision is scored by the
same code path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from PIL import Image

from edge_agent.tiling import aggregate_logits, grid_tiles


__all__ = ["Runner", "torch_runner", "ort_runner", "shipped_runner", "ov_runner", "tile_scores", "aggregate", "cam_peak_hit"]

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class _Module(Protocol):
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def torch_runner(model: _Module) -> Runner:
    @torch.no_grad()
    def run(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, cam = model(torch.from_numpy(np.ascontiguousarray(t, np.float32)))
        return lo.numpy(), cam.numpy()
    return run


def ort_runner(path: Path, threads: int = 2) -> Runner:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, cam = sess.run(["logits", "cam"], {"tiles": np.ascontiguousarray(t, np.float32)})
        return lo, cam
    return run


def shipped_runner(model_dir: Path, threads: int = 2) -> tuple[Runner, dict[str, Any]]:
    """A shipped model directory (``models/<name>-<version>``): its manifest's FP32 ONNX file as a
    runner, and the manifest itself (tiling, aggregate, thresholds)."""
    man = json.loads((Path(model_dir) / "manifest.json").read_text())
    onnx = next(f["path"] for f in man["files"] if f["format"] == "onnx" and f["precision"] == "fp32")
    return ort_runner(Path(model_dir) / onnx, threads), man


def ov_runner(xml: Path, threads: int = 2) -> Runner:
    import openvino as ov
    core = ov.Core()
    cm = core.compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    out_l, out_c = cm.output("logits"), cm.output("cam")

    def run(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = cm(np.ascontiguousarray(t, np.float32))
        return np.asarray(r[out_l]), np.asarray(r[out_c])
    return run


def tile_scores(tiles: np.ndarray, runner: Runner, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Run all tiles of one image; returns (logits [N], cams [N,h,w])."""
    lo, cams = [], []
    for i in range(0, len(tiles), batch):
        a, b = runner(tiles[i:i + batch])
        lo.append(a); cams.append(b)
    return np.concatenate(lo), np.concatenate(cams)


def aggregate(logits: np.ndarray, method: str, topk: int) -> float:
    return aggregate_logits(logits, method, topk)


def cam_peak_hit(cams: np.ndarray, origins: list[tuple[int, int]], tile: int, mask_path: str | np.ndarray,
                 tolerance_px: int) -> bool:
    """Pointing game (Zhang et al., ECCV 2016): is the image-wide CAM maximum inside the mask?

    The peak is the centre of the highest CAM cell over all tiles whose centre lies on the image;
    the mask (a PNG's path, or the mask itself, non-zero inside) is dilated by ``tolerance_px``.
    """
    from scipy import ndimage
    if isinstance(mask_path, np.ndarray):
        raw = mask_path > 0
    else:
        raw = np.asarray(Image.open(mask_path), dtype=np.float32) / 255.0 > 0.5
    if tolerance_px > 0:
        raw = ndimage.binary_dilation(raw, iterations=tolerance_px)
    h_img, w_img = raw.shape
    n, h, w = cams.shape
    cell = tile / h
    # Only cells whose centre lies on the image count: mirrored padding of a short axis is not
    # image, and a heat map must never point there (the agent draws only the image area).
    cy = (np.arange(h) + 0.5) * cell
    cx = (np.arange(w) + 0.5) * cell
    valid = np.stack([((oy + cy)[:, None] < h_img) & ((ox + cx)[None, :] < w_img) for oy, ox in origins])
    k = int(np.argmax(np.where(valid, cams, -np.inf)))
    ti, py, px = np.unravel_index(k, cams.shape)
    y = int(origins[ti][0] + (py + 0.5) * cell)
    x = int(origins[ti][1] + (px + 0.5) * cell)
    return bool(raw[min(y, h_img - 1), min(x, w_img - 1)])


def image_tiles(img: np.ndarray, tile: int, max_tiles: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return grid_tiles(img, tile, max_tiles)
