"""Image-level scoring exactly as the agent does it: decode -> grid tiles -> model -> aggregate.

Runners wrap PyTorch, onnxruntime and OpenVINO behind one call signature
``runner(tiles [N,1,T,T]) -> (logits [N], cam [N,h,w])`` so every precision is scored by the
same code path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from PIL import Image

from edge_agent.tiling import aggregate_logits, grid_tiles

from .imaging import pad_to_tile

__all__ = ["Runner", "torch_runner", "ort_runner", "ov_runner", "tile_scores", "aggregate", "cam_peak_hit"]

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


def cam_peak_hit(cams: np.ndarray, origins: list[tuple[int, int]], tile: int, mask_path: str,
                 tolerance_px: int) -> bool:
    """Pointing game (Zhang et al., ECCV 2016): is the image-wide CAM maximum inside the mask?

    The peak is the centre of the highest CAM cell over all tiles; the mask is padded like the
    image and dilated by ``tolerance_px``.
    """
    from scipy import ndimage
    mask = pad_to_tile(np.asarray(Image.open(mask_path), dtype=np.float32) / 255.0, tile) > 0.5
    if tolerance_px > 0:
        mask = ndimage.binary_dilation(mask, iterations=tolerance_px)
    n, h, w = cams.shape
    k = int(np.argmax(cams))
    ti, cy, cx = np.unravel_index(k, cams.shape)
    cell = tile / h
    y = int(origins[ti][0] + (cy + 0.5) * cell)
    x = int(origins[ti][1] + (cx + 0.5) * cell)
    return bool(mask[min(y, mask.shape[0] - 1), min(x, mask.shape[1] - 1)])


def image_tiles(img: np.ndarray, tile: int, max_tiles: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    return grid_tiles(img, tile, max_tiles)
