"""Noise residual and block statistics for the device-fingerprint check (pure numpy).

Split out of :mod:`edge_agent.forensics.fingerprint` so each reads in one sitting. This module
defines the residual, and enrolment uses it on whole frames; the check computes the same quantities
per tile in one compiled pass (:mod:`.kernels`, tested against :func:`residual`). The residual is
``W = I - denoise(I)`` of sensor forensics (Lukas, Fridrich & Goljan, IEEE TIFS 1(2), 2006) with a
4-neighbour high-pass as the denoiser, spatially adaptive Wiener attenuation over 4x4 blocks, and
zero-meaned rows/columns (Chen, Fridrich, Goljan & Lukas, IEEE TIFS 3(1), 2008, sec. IV). The block
helpers give the per-cell sums the correlation predictor and the local map need, which 4x4 blocks
clipping left intact, and the correlation energy off the zero lag from the spectra (Parseval).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["noise_residual", "laplacian", "residual", "wiener_weight", "intact_blocks", "block_sums", "cells", "spectrum_multiplicity", "background_energy", "block_mean", "WB"]

WB = 4  # Wiener attenuation block (pixels): local variance over 4x4 blocks


def noise_residual(x: np.ndarray, with_weight: bool = False) -> Any:
    """Noise residual of one image or a stack ``[..., H, W]`` (float32); with ``with_weight`` also
    the Wiener weights per 4x4 block ``[..., ceil(H/4), ceil(W/4)]``.

    ``x`` minus the mean of its 4 neighbours (edges replicated): the fixed pattern is white, the
    quantum noise was blurred by the scintillator, so this high-pass keeps the pattern and damps
    the noise. Pixels whose local variance exceeds the noise level (edges of anatomy) are attenuated
    (adaptive Wiener), then rows and columns are zero-meaned (Chen et al. 2008, sec. IV: row/column
    artefacts are not unique to a sensor)."""
    r, wblk, _ = residual(x)
    return (r, wblk) if with_weight else r


def laplacian(x: np.ndarray) -> np.ndarray:
    """``x`` minus the mean of its 4 neighbours (edges replicated), float32, for one image or a stack
    ``[..., H, W]``: the residual before any weighting (:func:`residual` weights and zero-means it)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    return _laplacian_flat(x.reshape(x.shape[:-2] + (h * w,)), None, w).reshape(x.shape)


def _laplacian_flat(f: np.ndarray, out: np.ndarray | None, w: int) -> np.ndarray:
    """``x - mean(4 neighbours)`` on row-major flattened images (contiguous 1-D slices are several
    times faster than 2-D strided ones); edge pixels use themselves as the missing neighbour."""
    r = np.empty_like(f) if out is None else out
    if f.shape[-1] >= 2 * w:  # up + down in one pass (first and last rows: themselves as the missing neighbour)
        np.add(f[..., : -2 * w], f[..., 2 * w :], out=r[..., w:-w])
        np.add(f[..., :w], f[..., w : 2 * w], out=r[..., :w])
        np.add(f[..., -2 * w : -w], f[..., -w:], out=r[..., -w:])
    else:  # a single row
        np.add(f, f, out=r)
    r[..., 1:] += f[..., :-1]
    r[..., :-1] += f[..., 1:]
    # the flat shifts wrapped across row ends: put each row's own edge pixel back
    rows = r.reshape(f.shape[:-1] + (-1, w))
    src = f.reshape(f.shape[:-1] + (-1, w))
    rows[..., 1:, 0] += src[..., 1:, 0] - src[..., :-1, -1]
    rows[..., :1, 0] += src[..., :1, 0]
    rows[..., :-1, -1] += src[..., :-1, -1] - src[..., 1:, 0]
    rows[..., -1:, -1] += src[..., -1:, -1]
    r *= np.float32(-0.25)
    r += f
    return r


def block_sums(a: np.ndarray) -> np.ndarray:
    """Sums over the 4x4 blocks of ``[..., H, W]`` (H, W multiples of 4), float32. The column sums
    go through a matrix product: several times faster than ``.sum()`` over a length-4 axis."""
    h, w = a.shape[-2:]
    rows = a.reshape(a.shape[:-2] + (h // WB, WB, w)).sum(axis=-2)
    return rows.reshape(rows.shape[:-1] + (w // WB, WB)) @ np.ones(WB, np.float32)


def residual(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(residual, Wiener weight per 4x4 block, residual variance per block before weighting)."""
    x = np.asarray(x, dtype=np.float32)
    h, w = x.shape[-2:]
    hp, wp = -(-h // WB) * WB, -(-w // WB) * WB
    lead = x.shape[:-2]
    rp = np.empty(lead + (hp, wp), np.float32) if (hp, wp) == (h, w) else np.zeros(lead + (hp, wp), np.float32)
    r = rp[..., :h, :w]
    if (hp, wp) == (h, w):
        _laplacian_flat(x.reshape(lead + (h * w,)), rp.reshape(lead + (h * w,)), w)
    else:
        r[...] = laplacian(x)
    # Spatially adaptive Wiener attenuation (Lukas et al. 2006 sec. III, in the pixel domain): where
    # the local residual variance exceeds the tile's typical noise variance, the excess is anatomy
    # (edges, texture), not the sensor; scaling by sigma^2 / local variance removes it and weights
    # each pixel by its inverse noise variance, the optimal weighting for heteroscedastic noise.
    local = block_sums(rp * rp) / np.float32(WB * WB)
    wblk = wiener_weight(local)
    # broadcast along whole rows (contiguous inner axis): much faster than a 5-D block view
    rp.reshape(lead + (hp // WB, WB, wp))[...] *= np.repeat(wblk, WB, axis=-1)[..., :, None, :]
    r -= r.mean(axis=-1, keepdims=True)
    r -= r.mean(axis=-2, keepdims=True)
    return r, wblk, local


def wiener_weight(local: np.ndarray) -> np.ndarray:
    """Per-block Wiener weight from the residual's block variances ``local`` [..., h, w]:
    ``typical / max(local, typical)``, ``typical`` the median over every third block of each image."""
    lead = local.shape[:-2]
    # floor: flat or saturated areas of low-bit images have no residual at all (0/0)
    typical = np.maximum(np.median(local.reshape(lead + (-1,))[..., ::3], axis=-1)[..., None, None], np.float32(1e-12))
    return (typical / np.maximum(local, typical)).astype(np.float32)


def intact_blocks(clipped: np.ndarray) -> np.ndarray:
    """[n, h, w] blocks free of clipping themselves and in their 4 neighbours, from ``clipped``
    [n, h, w] (the block holds a pixel <= 0 or >= 1): the residual filter reaches one pixel across,
    the Wiener weight a whole block. Saturated or empty pixels carry no pattern at all."""
    near = clipped.copy()
    near[:, 1:] |= clipped[:, :-1]
    near[:, :-1] |= clipped[:, 1:]
    near[:, :, 1:] |= clipped[:, :, :-1]
    near[:, :, :-1] |= clipped[:, :, 1:]
    return ~near


def block_mean(a: np.ndarray, b: int) -> np.ndarray:
    """Means over the ``b`` x ``b`` blocks of a 2-D array, float32; trailing rows and columns that fill
    no block are dropped (what a console that bins ``b`` x ``b`` after correction delivers)."""
    h, w = a.shape[0] // b * b, a.shape[1] // b * b
    return np.ascontiguousarray(a[:h, :w].reshape(h // b, b, w // b, b).mean(axis=(1, 3)), dtype=np.float32)


def cells(a: np.ndarray, c: int) -> np.ndarray:
    """Sums over c x c cells of a stack [n, t, t] -> [n, t/c, t/c] (float64)."""
    n, t, _ = a.shape
    rows = a.reshape(n, t // c, c, t).sum(axis=2)
    return rows.reshape(n, t // c, t // c, c).sum(axis=3, dtype=np.float64)


def spectrum_multiplicity(t: int) -> np.ndarray:
    """[t/2 + 1] float32: how often each column of a real t x t image's half spectrum (``rfft2``)
    occurs in the full spectrum: twice (a conjugate pair), once for the self-conjugate columns."""
    m = np.full(t // 2 + 1, 2.0, np.float32)
    m[0] = 1.0
    if t % 2 == 0:
        m[-1] = 1.0
    return m


def background_energy(power: np.ndarray, peak: np.ndarray, t: int) -> np.ndarray:
    """Mean squared circular cross-correlation away from zero lag, from ``power``, the sum of the
    cross-spectrum's squared magnitude over the full spectrum (Parseval: the correlation surface's
    energy is that over t*t). Only the zero lag is excluded: the fingerprint is white after the
    residual filter, so its correlation peak is one lag wide (the usual 11x11 exclusion changes PCE
    by < 5 %)."""
    total = power / (t * t)
    return np.maximum(total - peak**2, 1e-30) / (t * t - 1)
