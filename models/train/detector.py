"""The tile detector: fixed NPR/high-pass residual stem + depthwise-separable CNN + CAM head.

Design, with the papers it follows:
* Residual stem computed INSIDE the graph (the agent feeds plain [0,1] pixels):
  - NPR, Neighbouring Pixel Relationships (Tan et al., "Rethinking the Up-Sampling Operations
    in CNN-based Generative Network for Generalizable Deepfake Detection", CVPR 2024):
    x - up_nearest(down_nearest(x)), which exposes the 2x2 correlations up-sampling leaves.
  - a 3x3 high-pass residual, i.e. the noise residual of sensor forensics (Lukas, Fridrich &
    Goljan, IEEE TIFS 2006; SRM filters, Fridrich & Kodovsky 2012).
  - per-tile robust normalisation: residuals are divided by their mean absolute value over the
    tile's textured pixels and clipped, so 8-bit and 15-bit images look alike (no absolute noise
    level reaches the network: an unseen detector with lower noise is not "too smooth" per se).
  - a content gate: an exactly flat tile (collimator, saturated air) reads as "no evidence".
  - a standardised intensity channel, so noise can be related to exposure (quantum noise is
    signal-dependent; "uniform grain" is not).
* Early stride-2 stem and MobileNet-style depthwise-separable blocks (Howard et al. 2017) keep the
  cost at ~0.03 GMAC per 256x256 tile.
* Head: 1x1 conv to one channel = class-activation map (Zhou et al., CVPR 2016); the tile logit is
  its spatial mean, which is exactly global-average-pooling followed by a linear layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NPRDetector", "residual_features", "count_macs", "FLAT_LOGIT"]

_EPS = 1e-5
_CLIP = 8.0
# A tile whose residual is (almost) exactly zero carries no forensic evidence: collimator
# shadows, saturated air, padding of blank borders. Below 8-bit quantisation noise (1/255 ~ 4e-3,
# mean |residual| ~ 1e-3) by a factor of 10+, the tile is gated to this "no evidence" logit.
FLAT_LOGIT = -4.0
_FLAT_LO, _FLAT_HI = 5e-5, 1e-4


def residual_features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N,1,H,W] pixels in [0,1] -> ([N,3,H,W] normalised forensic channels, [N,1,1] content gate).

    Residual scale = mean |high-pass| over the tile's NON-flat pixels, so a tile half covered by a
    saturated collimator edge is normalised like its textured half (robust to blank areas), and an
    8-bit and a 15-bit image of the same scene give the same normalised residuals.
    """
    down = x[:, :, 0::2, 0::2]
    npr = x - F.interpolate(down, scale_factor=2.0, mode="nearest")
    hp = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    a = hp.abs()
    raw = a.mean(dim=(2, 3), keepdim=True)
    textured = (a > 1e-6).to(x.dtype).mean(dim=(2, 3), keepdim=True)
    scale = raw / torch.clamp(textured, min=0.05) + _EPS
    npr_n = torch.clamp(npr / scale, -_CLIP, _CLIP) * 0.25
    hp_n = torch.clamp(hp / scale, -_CLIP, _CLIP) * 0.5
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)) + 1e-3
    inten = torch.clamp((x - mean) / std, -4.0, 4.0) * 0.5
    gate = torch.clamp((raw - _FLAT_LO) / (_FLAT_HI - _FLAT_LO), 0.0, 1.0)[:, 0]
    return torch.cat([npr_n, hp_n, inten], dim=1), gate


class _DSBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, each with BN + ReLU (ReLU: INT8-friendly)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.skip else y


class NPRDetector(nn.Module):
    """forward(tiles [N,1,T,T]) -> (logits [N], cam [N, T/16, T/16]); logits == cam.mean((1,2))."""

    def __init__(self, width: tuple[int, ...] = (16, 32, 64, 96)) -> None:
        super().__init__()
        w0, w1, w2, w3 = width
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.body = nn.Sequential(_DSBlock(w0, w1, 2), _DSBlock(w1, w1, 1),
                                  _DSBlock(w1, w2, 2), _DSBlock(w2, w2, 1),
                                  _DSBlock(w2, w3, 2), _DSBlock(w3, w3, 1), _DSBlock(w3, w3, 1))
        self.head = nn.Conv2d(w3, 1, 1)

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, gate = residual_features(tiles)
        cam = self.head(self.body(self.stem(feats)))[:, 0]
        cam = gate * cam + (1.0 - gate) * FLAT_LOGIT
        return cam.mean(dim=(1, 2)), cam


def count_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of conv/linear layers for one [1,1,size,size] input (forward hooks)."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            total += out.numel() * k
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 1, size, size))
    model.train(was)
    for h in hs:
        h.remove()
    return total
