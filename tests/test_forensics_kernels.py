"""The fingerprint check's compiled pass (edge_agent.forensics.kernels) measures what the numpy
definition of the residual (edge_agent.forensics.residual) defines: the same statistics, on a
simulated radiograph with burnt-out and empty pixels, for both fingerprint models."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.forensics.kernels import (
    spectral_power,
    tile_stats,
    weighted_block_correlation,
    weighted_residual,
)
from edge_agent.forensics.residual import WB, block_sums, residual, spectrum_multiplicity, wiener_weight
from edge_agent.forensics.simulator import Panel, PanelSpec
from edge_agent.tiling import grid_tiles


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    img = Panel(PanelSpec(21, shape=(256, 512))).acquire(rng)
    img[40:44, 100:180] = 1.0  # burnt out
    img[200, 300:310] = 0.0  # empty
    x = grid_tiles(img, 256, 64)[0][:, 0]
    k = rng.standard_normal(x.shape).astype(np.float32) * np.float32(0.01)
    return x, k


def _blocks_with(mask: np.ndarray) -> np.ndarray:
    n, t, _ = mask.shape
    return mask.reshape(n, t // WB, WB, t // WB, WB).any(axis=(2, 4))


@pytest.mark.parametrize("multiplicative", [False, True])
def test_fused_pass_gives_the_reference_residual_statistics(tiles, multiplicative):
    x, k = tiles
    s = k * x if multiplicative else k
    want = np.array([True, False])
    st = tile_stats(x, k, multiplicative, want)
    w_ref, weight_ref, local_ref = residual(x)
    np.testing.assert_allclose(st.energy, local_ref, rtol=1e-4, atol=1e-12)
    weight = wiener_weight(st.energy)
    np.testing.assert_allclose(weight, weight_ref, rtol=1e-4)
    ws4, row_mean, col_mean = weighted_block_correlation(st, weight)
    ref = block_sums(w_ref * s)
    np.testing.assert_allclose(ws4, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(st.ss, block_sums(s * s), rtol=1e-4)
    w = weighted_residual(st, weight, row_mean, col_mean, [0])
    np.testing.assert_allclose(w[0], w_ref[0], rtol=1e-3, atol=1e-5 * np.abs(w_ref[0]).max())
    assert np.array_equal(st.clipped, _blocks_with((x <= 0) | (x >= 1)))
    assert st.clipped.any() and not st.clipped.all()


def test_spectral_power_is_the_full_cross_spectrum_power(tiles):
    x, k = tiles
    w = residual(x)[0]
    t = x.shape[-1]
    kf = np.fft.rfft2(k)
    power = spectral_power(np.fft.rfft2(w).astype(np.complex64),
                           ((kf.real**2 + kf.imag**2) * spectrum_multiplicity(t)).astype(np.float32))
    full = np.abs(np.fft.fft2(w) * np.conj(np.fft.fft2(k))) ** 2
    np.testing.assert_allclose(power, full.sum(axis=(1, 2)), rtol=1e-4)


def test_tiles_that_do_not_fit_the_pass_are_refused_with_their_shapes():
    x = np.zeros((1, 10, 10), np.float32)
    with pytest.raises(ValueError, match="multiple of 4"):
        tile_stats(x, x, False, np.zeros(1, bool))


def test_kernels_still_compile_where_no_cache_directory_is_writable(monkeypatch):
    # numba refuses cache=True when neither the package's folder nor the user's cache directory is
    # writable (a read-only install run by a user without a home): the kernel is then compiled in memory
    import numba

    from edge_agent.forensics import kernels

    real = numba.njit

    def njit(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function '_power': no locator available for file")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", njit)
    power = kernels._jit(kernels._power)
    spec = np.ones((2, 3, 4), np.complex64) * (1 + 1j)
    out = np.empty(2)
    power(spec, np.full((2, 3, 4), 0.5, np.float32), out)
    assert np.allclose(out, 12.0)


def test_a_fingerprint_check_without_numba_says_what_to_install(monkeypatch):
    import sys

    from edge_agent.errors import ForensicsError
    from edge_agent.forensics import FingerprintCheck, enroll

    fp = enroll([np.random.default_rng(0).random((64, 64), dtype=np.float32)])
    monkeypatch.delitem(sys.modules, "edge_agent.forensics.kernels", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not installed
    with pytest.raises(ForensicsError, match="needs numba"):
        FingerprintCheck(fp, tile=64, cell=32)
