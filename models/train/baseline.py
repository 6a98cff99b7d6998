"""The "usual approach" baseline: an ordinary small CNN on the whole image resized to 224x224.

This mirrors how most published synthetic-X-ray detectors work (a classifier on the
down-scaled image, e.g. the ResNet/DenseNet pipelines of chest-X-ray classification), scaled
down to a plain 5-layer CNN so it trains on 2 CPU cores. Resizing destroys the high-frequency
traces the tile detector reads; comparing the two on held-out families measures that.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .imaging import resize_float

__all__ = ["SmallCNN", "whole_image_input"]


class SmallCNN(nn.Module):
    """conv3x3 stack (16-32-64-128-128, stride 2 from layer 2) + GAP + linear; ~0.2 GMAC at 224."""

    def __init__(self) -> None:
        super().__init__()
        chans = [1, 16, 32, 64, 128, 128]
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, 1 if i == 0 else 2, 1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))[:, 0]


def whole_image_input(img: np.ndarray, size: int = 224) -> np.ndarray:
    """Whole image resized (area for down-, bilinear for up-scaling) to size x size."""
    method = "box" if min(img.shape) >= size else "bilinear"
    return resize_float(img, size, size, method)
