"""One fused pass over the fingerprint check's tiles (numba): the residual and its block sums.

The check needs, per 4x4 block of each tile, the residual's energy, its correlation with the
fingerprint, and the row/column sums that zero-meaning takes off (:mod:`.residual` defines the
residual). As numpy expressions those are ~15 passes over every pixel, and the check is
memory-bound: on RG1 (64 tiles) the residual alone took 23 ms of the check's 40 (one thread).
Compiled to one loop per row that reads each pixel once, it takes ~5 ms (benchmarks/bench_forensics.py).

Everything after the pass works on arrays a quarter of a tile's side or smaller, in numpy, in
:meth:`edge_agent.forensics.fingerprint_check.FingerprintCheck.measure`. Row/column zero-meaning and the
per-block Wiener weight are linear, so they are applied to the block sums afterwards instead of to
every pixel (see :func:`weighted_block_correlation`).

The kernel releases the GIL, so the check's two threads run chunks of tiles side by side. It is
compiled on first use (about a second) and cached on disk when a writable cache directory exists
(numba's own lookup: next to this file, then the user's cache directory; ``NUMBA_CACHE_DIR`` sets
it); :func:`warm_up` compiles it ahead of the first image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numba
import numpy as np

from .residual import WB

__all__ = ["TileStats", "tile_stats", "weighted_block_correlation", "weighted_residual", "spectral_power", "warm_up"]


def _jit(fn: Callable[..., Any]) -> Any:
    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache directory anywhere: compile once per process instead
        return numba.njit(nogil=True, boundscheck=False)(fn)


def _pass(x, k, mult, want, r_out, energy, rs, ss, rrow_r, cols_r, rrow_s, cols_s, clipped):  # type: ignore[no-untyped-def]
    """For each tile m and row i: the residual row ``r = x - mean(4 neighbours)`` (edges
    replicated, the same arithmetic order as :func:`.residual._laplacian_flat`), ``s = k`` (or
    ``k * x`` when ``mult``), then per 4x4 block sums of r*r, r*s, s*s, per row and 4-column group
    sums of r and s, per 4-row group and column sums of r and s, and whether a pixel is clipped
    (<= 0 or >= 1). Rows of tiles flagged in ``want`` are also written to ``r_out``."""
    n, t, _ = x.shape
    g = t // 4
    q = np.float32(0.25)
    rrow = np.empty(t, np.float32)
    srow = np.empty(t, np.float32)
    for m in range(n):
        for i in range(t):
            xr = x[m, i]
            xu = x[m, i - 1 if i > 0 else 0]
            xd = x[m, i + 1 if i < t - 1 else t - 1]
            kr = k[m, i]
            bi = i // 4
            for j in range(1, t - 1):
                rrow[j] = xr[j] - q * (((xu[j] + xd[j]) + xr[j - 1]) + xr[j + 1])
            rrow[0] = xr[0] - q * (((xu[0] + xd[0]) + xr[0]) + xr[1])
            rrow[t - 1] = xr[t - 1] - q * (((xu[t - 1] + xd[t - 1]) + xr[t - 2]) + xr[t - 1])
            clip = False
            for j in range(t):
                srow[j] = kr[j] * xr[j] if mult else kr[j]
                clip |= (xr[j] <= 0.0) | (xr[j] >= 1.0)
            cr = cols_r[m, bi]
            cs = cols_s[m, bi]
            for j in range(t):
                cr[j] += rrow[j]
                cs[j] += srow[j]
            e = energy[m, bi]
            c = rs[m, bi]
            p = ss[m, bi]
            a = rrow_r[m, i]
            b = rrow_s[m, i]
            cl = clipped[m, bi]
            for blk in range(g):
                j = 4 * blk
                r0, r1, r2, r3 = rrow[j], rrow[j + 1], rrow[j + 2], rrow[j + 3]
                s0, s1, s2, s3 = srow[j], srow[j + 1], srow[j + 2], srow[j + 3]
                e[blk] += (r0 * r0 + r1 * r1) + (r2 * r2 + r3 * r3)
                c[blk] += (r0 * s0 + r1 * s1) + (r2 * s2 + r3 * s3)
                p[blk] += (s0 * s0 + s1 * s1) + (s2 * s2 + s3 * s3)
                a[blk] = (r0 + r1) + (r2 + r3)
                b[blk] = (s0 + s1) + (s2 + s3)
                if clip:
                    v0, v1, v2, v3 = xr[j], xr[j + 1], xr[j + 2], xr[j + 3]
                    if (min(min(v0, v1), min(v2, v3)) <= 0.0) or (max(max(v0, v1), max(v2, v3)) >= 1.0):
                        cl[blk] = True
            if want[m]:
                ro = r_out[m, i]
                for j in range(t):
                    ro[j] = rrow[j]


_fused = _jit(_pass)


@dataclass(frozen=True)
class TileStats:
    """What one pass gives for ``n`` tiles of side ``t`` (``g = t / 4`` blocks a side).

    ``energy`` [n, g, g]: mean of r^2 per block (the residual's local variance before any
    weighting); ``rs``, ``ss`` [n, g, g]: block sums of r*s and s*s; ``rows_r``, ``rows_s``
    [n, t, g]: sums over each block's 4 columns, per row; ``cols_r``, ``cols_s`` [n, g, t]: sums over
    each block's 4 rows, per column; ``clipped`` [n, g, g]: the block holds a pixel <= 0 or >= 1;
    ``r`` [n, t, t]: the unweighted residual, filled only for the tiles asked for."""

    energy: np.ndarray
    rs: np.ndarray
    ss: np.ndarray
    rows_r: np.ndarray
    cols_r: np.ndarray
    rows_s: np.ndarray
    cols_s: np.ndarray
    clipped: np.ndarray
    r: np.ndarray


def tile_stats(x: np.ndarray, k: np.ndarray, multiplicative: bool, want_r: np.ndarray) -> TileStats:
    """One pass over tiles ``x`` [n, t, t] (float32, t a multiple of 4) and fingerprint tiles ``k``
    of the same shape; ``want_r`` [n] bool: which tiles' residual to keep (the FFT's)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = np.ascontiguousarray(k, dtype=np.float32)
    n, t = x.shape[0], x.shape[-1]
    if x.shape != (n, t, t) or k.shape != x.shape or t % WB or t < 2:
        raise ValueError(f"tiles {x.shape} and fingerprint tiles {k.shape} must be equal [n, t, t], t a multiple of {WB}")
    g = t // WB
    z, e = np.zeros, np.empty  # the pass adds into the first kind and writes every element of the second
    st = TileStats(energy=z((n, g, g), np.float32), rs=z((n, g, g), np.float32), ss=z((n, g, g), np.float32),
                   rows_r=e((n, t, g), np.float32), cols_r=z((n, g, t), np.float32),
                   rows_s=e((n, t, g), np.float32), cols_s=z((n, g, t), np.float32),
                   clipped=z((n, g, g), np.bool_), r=np.empty((n, t, t) if want_r.any() else (n, 1, 1), np.float32))
    _fused(x, k, bool(multiplicative), np.asarray(want_r, np.bool_), st.r, st.energy, st.rs, st.ss,
           st.rows_r, st.cols_r, st.rows_s, st.cols_s, st.clipped)
    np.divide(st.energy, np.float32(WB * WB), out=st.energy)
    return st


def _correlate(weight, rs, rows_r, cols_r, rows_s, cols_s, out, a, b):  # type: ignore[no-untyped-def]
    """See :func:`weighted_block_correlation`; loops over block-level arrays only."""
    n, g, _ = weight.shape
    t = g * 4
    inv = np.float32(1.0 / t)
    for m in range(n):
        u = weight[m]
        for i in range(t):
            acc = np.float32(0.0)
            for bj in range(g):
                acc += u[i // 4, bj] * rows_r[m, i, bj]
            a[m, i] = acc * inv
        mean_a = np.float32(a[m].mean())
        b[m] = 0.0
        for bi in range(g):
            for j in range(t):
                b[m, j] += u[bi, j // 4] * cols_r[m, bi, j]
        for j in range(t):
            b[m, j] = b[m, j] * inv - mean_a
        for bi in range(g):
            for bj in range(g):
                acc = u[bi, bj] * rs[m, bi, bj]
                for q in range(4):
                    acc -= a[m, 4 * bi + q] * rows_s[m, 4 * bi + q, bj] + b[m, 4 * bj + q] * cols_s[m, bi, 4 * bj + q]
                out[m, bi, bj] = acc


_correlate_jit = _jit(_correlate)


def weighted_block_correlation(st: TileStats, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block sums of ``w * s``, row means, column means) for ``w``, the residual weighted per block
    by ``weight`` [n, g, g] and then zero-meaned by rows and then columns (:func:`.residual.residual`).

    With ``w_ij = u_B r_ij - a_i - b_j`` (u the block's weight, a the row means of ``u r``, b the
    column means after the rows') the block sum of ``w s`` is ``u_B sum(r s) - sum_i a_i
    (row sums of s in B) - sum_j b_j (column sums of s in B)``: only block-level arrays."""
    n, g, _ = weight.shape
    t = g * WB
    out = np.empty((n, g, g), np.float32)
    a = np.empty((n, t), np.float32)
    b = np.empty((n, t), np.float32)
    _correlate_jit(np.ascontiguousarray(weight, np.float32), st.rs, st.rows_r, st.cols_r, st.rows_s, st.cols_s,
                   out, a, b)
    return out, a, b


def _residual_of(weight, r, a, b, pick, out):  # type: ignore[no-untyped-def]
    for o in range(pick.shape[0]):
        m = pick[o]
        t = r.shape[1]
        bm = b[m]
        for i in range(t):
            u = weight[m, i // 4]
            ai = a[m, i]
            ri = r[m, i]
            oi = out[o, i]
            for blk in range(t // 4):
                ub = u[blk]
                for j in range(4 * blk, 4 * blk + 4):
                    oi[j] = ub * ri[j] - ai - bm[j]


_residual_jit = _jit(_residual_of)


def weighted_residual(st: TileStats, weight: np.ndarray, row_mean: np.ndarray, col_mean: np.ndarray,
                      pick: list[int]) -> np.ndarray:
    """[len(pick), t, t]: the residual of the tiles ``pick`` (kept by :func:`tile_stats`), weighted
    per block and zero-meaned: ``weight_B * r_ij - row_mean_i - col_mean_j``."""
    t = st.r.shape[-1]
    out = np.empty((len(pick), t, t), np.float32)
    _residual_jit(np.ascontiguousarray(weight, np.float32), st.r, row_mean, col_mean, np.asarray(pick, np.int64), out)
    return out


def _power(spec, weight, out):  # type: ignore[no-untyped-def]
    n, h, w = spec.shape
    for m in range(n):
        acc = 0.0
        for i in range(h):
            for j in range(w):
                v = spec[m, i, j]
                acc += (v.real * v.real + v.imag * v.imag) * weight[m, i, j]
        out[m] = acc


_power_jit = _jit(_power)


def spectral_power(spec: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """[n] float64: ``sum |spec|^2 * weight`` per tile over half spectra [n, t, t/2 + 1]; with
    ``weight = |K|^2 *`` each column's multiplicity in the full spectrum this is the full spectrum's
    power of the cross-spectrum ``spec * conj(K)`` (Parseval), without forming the product."""
    out = np.empty(spec.shape[0], np.float64)
    _power_jit(np.ascontiguousarray(spec, np.complex64), np.ascontiguousarray(weight, np.float32), out)
    return out


def warm_up() -> None:
    """Compile (or load from the cache) the kernel before the first image needs it."""
    x = np.full((1, WB, WB), 0.5, np.float32)
    st = tile_stats(x, x, False, np.ones(1, np.bool_))
    u = np.ones((1, 1, 1), np.float32)
    _, a, b = weighted_block_correlation(st, u)
    w = weighted_residual(st, u, a, b, [0])
    spectral_power(w.astype(np.complex64), w)
