"""ab bins vs an independent float64 Lab of every 8-bit color; the quantize math vs NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor
from skimage.color import colorconv

from colorjax import quantize

RNG = np.random.default_rng(0)


def _ab_of_all_8bit_colors_float64():
  """Yields ab (65536, 2) per red value, with scikit-image's matrix and white point in float64."""
  c = np.arange(256) / 255.0
  lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
  m = (
    colorconv.xyz_from_rgb
    / colorconv.xyz_tristimulus_values(illuminant='D65', observer='2')[:, None]
  )
  g, b = np.meshgrid(lin, lin, indexing='ij')
  for r in lin:
    xyz = np.stack([r * m[i, 0] + g * m[i, 1] + b * m[i, 2] for i in range(3)], -1).reshape(-1, 3)
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    yield np.stack([500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], -1)


def test_bins_are_the_grid_cells_holding_srgb_colors():
  centers = quantize.BIN_CENTERS
  assert quantize.NUM_BINS == 268 and centers.shape == (268, 2) and centers.dtype == np.float32
  # Centers of the constants.AB_GRID_* cells: odd multiples of 5 in [-105, 105], all distinct.
  assert np.all(np.abs(centers) <= 105) and np.all(np.mod(centers, 10) == 5)
  assert len(np.unique(centers, axis=0)) == 268
  occupied = np.zeros((22, 22), bool)
  worst = 0.0
  for ab in _ab_of_all_8bit_colors_float64():
    i, j = np.floor((ab + 110) / 10).astype(int).T
    occupied[i, j] = True
    b = quantize.BIN_OF_CELL[i, j]
    assert np.all(b >= 0), 'an 8-bit sRGB color falls outside every bin'
    worst = max(worst, np.sqrt(((ab - centers[b]) ** 2).sum(-1)).max())
  assert worst <= 5 * np.sqrt(2)
  # No extra bins: every bin's cell holds some color.
  np.testing.assert_array_equal(occupied, quantize.BIN_OF_CELL >= 0)
  np.testing.assert_array_equal(occupied, quantize.in_gamut_cells())


def test_nearest_bin_of_srgb_colors_against_skimage():
  rgb = RNG.integers(0, 256, (20000, 3)) / 255.0
  ab = skcolor.rgb2lab(rgb)[:, 1:]
  got = np.asarray(jax.jit(quantize.nearest_bin)(ab.astype(np.float32)))
  d2 = ((ab[:, None, :] - quantize.BIN_CENTERS[None]) ** 2).sum(-1)
  np.testing.assert_allclose(d2[np.arange(len(ab)), got], d2.min(-1), atol=1e-3)
  assert np.sqrt(d2.min(-1)).max() <= 5 * np.sqrt(2)
  assert got.dtype == np.int32


def _soft_encode_numpy(ab, sigma=5.0, k=5):
  d2 = ((ab[..., None, :] - quantize.BIN_CENTERS.astype(np.float64)) ** 2).sum(-1)
  nearest = np.argsort(d2, axis=-1)[..., :k]
  d2_k = np.take_along_axis(d2, nearest, -1)
  w = np.exp(-(d2_k - d2_k[..., :1]) / (2 * sigma**2))
  out = np.zeros(d2.shape)
  np.put_along_axis(out, nearest, w / w.sum(-1, keepdims=True), -1)
  return out


def test_soft_encode_matches_numpy_sums_to_one_and_peaks_at_nearest():
  ab = RNG.uniform(-100, 100, (3, 7, 2)).astype(np.float32)
  ab[0, 0] = [200.0, -300.0]  # far outside the gamut: still a finite distribution
  got = np.asarray(jax.jit(quantize.soft_encode)(ab))
  assert got.shape == (3, 7, 268)
  np.testing.assert_allclose(got, _soft_encode_numpy(ab.astype(np.float64)), atol=1e-5)
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
  nonzero = (got > 0).sum(-1)
  assert nonzero[0, 0] >= 1 and np.all(nonzero.ravel()[1:] == 5)  # far away, the rest underflow
  np.testing.assert_array_equal(got.argmax(-1), quantize.nearest_bin(ab))
  # At a bin center the nearest bin is that one; its 4 grid neighbors get exp(-100 / 50) each.
  c = quantize.BIN_CENTERS[quantize.BIN_OF_CELL[11, 11]]
  enc = np.asarray(quantize.soft_encode(c))
  np.testing.assert_allclose(enc.max(), 1 / (1 + 4 * np.exp(-2.0)), rtol=1e-5)
  with pytest.raises(ValueError, match=r'\(\.\.\., 2\)'):
    quantize.soft_encode(np.zeros((4, 3)))
  with pytest.raises(ValueError, match='k must be'):
    quantize.soft_encode(np.zeros((4, 2)), k=0)


def test_prior_from_histogram_matches_numpy():
  hist = RNG.integers(0, 1000, (22, 22)).astype(np.float64)
  g = -105 + 10 * np.arange(22)
  ref = np.zeros(268)
  for q, (a, b) in enumerate(quantize.BIN_CENTERS.astype(np.float64)):
    for i in range(22):
      for j in range(22):
        ref[q] += hist[i, j] * np.exp(-((a - g[i]) ** 2 + (b - g[j]) ** 2) / 50.0)
  ref /= ref.sum()
  got = np.asarray(quantize.prior_from_histogram(hist))
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-9)
  # All mass in one in-gamut cell: the prior peaks at that cell's bin.
  one = np.zeros((22, 22))
  one[13, 4] = 5
  assert int(np.argmax(quantize.prior_from_histogram(one))) == quantize.BIN_OF_CELL[13, 4]
  with pytest.raises(ValueError, match=r'\(22, 22\)'):
    quantize.prior_from_histogram(np.ones((23, 23)))
  with pytest.raises(ValueError, match='non-negative'):
    quantize.prior_from_histogram(-one)


def test_rebalance_weights():
  prior = RNG.dirichlet(np.full(268, 0.3))
  w = np.asarray(jax.jit(quantize.rebalance_weights)(prior))
  np.testing.assert_allclose((prior * w).sum(), 1.0, rtol=1e-5)
  ref = 1 / (0.5 * prior + 0.5 / 268)
  np.testing.assert_allclose(w, ref / (prior * ref).sum(), rtol=1e-5)
  # Rare colors weigh more; lam = 1 ignores the prior (all weights 1).
  assert w[np.argmin(prior)] > 1 > w[np.argmax(prior)]
  np.testing.assert_allclose(quantize.rebalance_weights(prior, lam=1.0), np.ones(268), rtol=1e-6)
  with pytest.raises(ValueError, match='lam'):
    quantize.rebalance_weights(prior, lam=0.0)
  with pytest.raises(ValueError, match='shape'):
    quantize.rebalance_weights(prior[:10])


def test_annealed_mean_is_mean_at_t1_and_mode_as_t_goes_to_0():
  logits = RNG.normal(0, 2, (4, 5, 268)).astype(np.float32)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  mean = p @ quantize.BIN_CENTERS
  np.testing.assert_allclose(quantize.annealed_mean(logits, T=1.0), mean, atol=1e-3)
  mode = quantize.BIN_CENTERS[logits.argmax(-1)]
  np.testing.assert_allclose(
    jax.jit(quantize.annealed_mean)(jnp.asarray(logits), 1e-3), mode, atol=1e-3
  )
  # In between, the default temperature sits between mean and mode (sharper than the mean).
  mid = np.asarray(quantize.annealed_mean(logits))
  assert np.abs(mid - mode).mean() < np.abs(mean - mode).mean()
  with pytest.raises(ValueError, match='temperature'):
    quantize.annealed_mean(logits, T=0.0)
  with pytest.raises(ValueError, match='logits'):
    quantize.annealed_mean(logits[..., :10])
