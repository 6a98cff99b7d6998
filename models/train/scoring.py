"""Image-level scoring exactly as the agent does it: decode -> grid tiles -> model -> aggregate.

Runners wrap PyTorch, onnxruntime and OpenVINO behind one call signature
``runner(tiles [N,1,T,T]) -> (logits [N], cam [N,h,w])`` so every precision is scored by the
same code path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image

from edge_agent.tiling import aggregate_logits, grid_tiles, strongest_cell


__all__ = ["Runner", "Scored", "torch_runner", "ort_runner", "ov_runner", "tile_scores", "score_tiles", "aggregate",
           "cam_peak_hit", "image_logit"]

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


class Scored(NamedTuple):
    """One image through the model: tile logits and its strongest on-image CAM cell."""
    logits: np.ndarray
    local: float
    peak: tuple[int, int]


def score_tiles(tiles: np.ndarray, origins: list[tuple[int, int]], shape: tuple[int, int], runner: Runner) -> Scored:
    lo, cam = tile_scores(tiles, runner)
    local, peak = strongest_cell(cam, origins, tiles.shape[-1], shape)
    return Scored(lo, local, peak)


def aggregate(sc: Scored, method: str, topk: int, local_offset: float = 0.0) -> float:
    return aggregate_logits(sc.logits, method, topk, local=sc.local, local_offset=local_offset)


def image_logit(img: np.ndarray, runner: Runner, tile: int, max_tiles: int, method: str, topk: int,
                local_offset: float = 0.0) -> float:
    """The agent's image logit for a decoded grey image."""
    t, o = grid_tiles(img, tile, max_tiles)
    return aggregate(score_tiles(t, o, img.shape, runner), method, topk, local_offset)


def cam_peak_hit(sc: Scored, mask_path: str, tolerance_px: int) -> bool:
    """Pointing game (Zhang et al., ECCV 2016): is the image-wide CAM maximum inside the mask?

    The peak is the centre of the highest CAM cell whose centre lies on the image (mirrored
    padding of a short axis is not image: the agent draws only the image area), exactly the
    point the agent reports; the mask is dilated by ``tolerance_px``.
    """
    from scipy import ndimage
    raw = np.asarray(Image.open(mask_path), dtype=np.float32) / 255.0 > 0.5
    if tolerance_px > 0:
        raw = ndimage.binary_dilation(raw, iterations=tolerance_px)
    y, x = sc.peak
    return bool(raw[min(y, raw.shape[0] - 1), min(x, raw.shape[1] - 1)])

