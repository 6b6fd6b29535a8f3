"""Quantized ab: the in-gamut bins, soft-encoding, the color prior and annealed-mean decoding.

Bin definition ("cell contains"): the ab plane is cut into the histogram grid of constants.AB_GRID_*
(22 x 22 cells of 10 x 10 over [-110, 110]); a cell is a bin when it contains the ab of at least
one of the 16,777,216 8-bit sRGB colors (Lab from colorjax.lab.rgb8_to_lab, the data pipeline's
conversion). That gives Q = 268 bins, centered at odd multiples of 5. (Zhang et al.'s 313 bins are
centered at multiples of 10 and come from a looser hull; the same "cell contains" rule on that
shifted grid gives 261.) Because the bins are cells of the data_prep histogram, the prior maps onto
them with no resampling. Every sRGB color lies in a bin, so its nearest bin center is at most
5 * sqrt(2) away.

The bins take ~1 s to compute, so they are computed on first use and cached for the process:
`BIN_CENTERS` (Q, 2) float32, `NUM_BINS` and `BIN_OF_CELL` (22, 22) int32 (-1 outside the gamut) are
module attributes computed lazily (PEP 562).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import constants, lab

SIGMA = 5.0  # Gaussian width in ab units, for soft-encoding and for smoothing the prior
NEIGHBORS = 5  # soft-encoding spreads each target ab over its 5 nearest bin centers
LAMBDA = 0.5  # rebalancing: mix of the prior and the uniform distribution
TEMPERATURE = 0.38  # annealed-mean decoding

# Centers of the 22 histogram cells along a (or b): -105, -95, ..., 105.
GRID_CENTERS_1D = (
  constants.AB_GRID_MIN + (np.arange(constants.AB_GRID_SIZE) + 0.5) * constants.AB_GRID_STEP
).astype(np.float32)


def cell_index(ab, xp=np):
  """Histogram cell (i, j) of ab (..., 2), clipped to the grid: i indexes a, j indexes b."""
  idx = xp.floor((ab - constants.AB_GRID_MIN) / constants.AB_GRID_STEP).astype(xp.int32)
  return xp.clip(idx, 0, constants.AB_GRID_SIZE - 1)


@functools.cache
def in_gamut_cells():
  """(22, 22) bool: cell (i, j) contains the ab of some 8-bit sRGB color."""
  # rgb8_to_lab's arithmetic, split by channel: XYZ = lin(r) m_r + lin(g) m_g + lin(b) m_b, with the
  # green-blue plane precomputed once; no matmul, so it runs in ~1 s without BLAS threads.
  lin = lab.SRGB8_TO_LINEAR
  m = (lab.XYZ_FROM_RGB / lab.D65_WHITE[:, None]).T.astype(np.float32)  # row c: channel c's XYZ
  xyz_gb = (lin[:, None, None] * m[1] + lin[None, :, None] * m[2]).reshape(-1, 3)
  n = constants.AB_GRID_SIZE
  seen = np.zeros(n * n, dtype=bool)
  for r in range(256):
    f = lab._f(xyz_gb + lin[r] * m[0], np)  # pylint: disable=protected-access
    ab = np.stack([500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], axis=-1)
    idx = cell_index(ab)
    seen[idx[:, 0] * n + idx[:, 1]] = True
  return seen.reshape(n, n)


@functools.cache
def _bins():
  cells = in_gamut_cells()
  i, j = np.nonzero(cells)  # row-major: sorted by a, then b
  centers = np.stack([GRID_CENTERS_1D[i], GRID_CENTERS_1D[j]], axis=-1).astype(np.float32)
  bin_of_cell = np.full(cells.shape, -1, dtype=np.int32)
  bin_of_cell[i, j] = np.arange(len(i), dtype=np.int32)
  centers.setflags(write=False)
  bin_of_cell.setflags(write=False)
  return centers, bin_of_cell


def __getattr__(name):
  if name == 'BIN_CENTERS':
    return _bins()[0]
  if name == 'BIN_OF_CELL':
    return _bins()[1]
  if name == 'NUM_BINS':
    return len(_bins()[0])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _check_ab(ab):
  ab = jnp.asarray(ab, jnp.float32)
  if ab.ndim < 1 or ab.shape[-1] != 2:
    raise ValueError(f'expected ab of shape (..., 2), got {ab.shape}')
  return ab


def _sq_dist_to_bins(ab):
  """(..., 2) -> (..., Q) squared distances to the bin centers."""
  c = jnp.asarray(_bins()[0])
  return (ab[..., 0:1] - c[:, 0]) ** 2 + (ab[..., 1:2] - c[:, 1]) ** 2


def nearest_bin(ab):
  """Index (int32, shape ...) of the bin center nearest to ab (..., 2)."""
  return jnp.argmin(_sq_dist_to_bins(_check_ab(ab)), axis=-1).astype(jnp.int32)


def soft_encode_sparse(ab, sigma=SIGMA, k=NEIGHBORS):
  """The k nearest bins of ab (..., 2) and their Gaussian weights, nearest first.

  Returns:
    (bins (..., k) int32, weights (..., k) float32 summing to 1).
  """
  ab = _check_ab(ab)
  if not 1 <= k <= _bins()[0].shape[0]:
    raise ValueError(f'k must be in [1, {_bins()[0].shape[0]}], got {k}')
  if sigma <= 0:
    raise ValueError(f'sigma must be positive, got {sigma}')
  _, bins = jax.lax.top_k(-_sq_dist_to_bins(ab), k)
  # The distances again from the k centers: using top_k's values makes XLA's CPU backend pick
  # a sort 20x slower than the index-only top_k.
  d2 = jnp.sum((ab[..., None, :] - jnp.asarray(_bins()[0])[bins]) ** 2, axis=-1)
  # Shifting by the nearest distance keeps exp() away from underflow far outside the gamut.
  logits = (d2[..., :1] - d2) / (2.0 * sigma**2)
  # The barrier keeps XLA from fusing top_k into each consumer of the bins (recomputing it per
  # element): a classification train step ran 15x slower on a CPU without it.
  return jax.lax.optimization_barrier((bins.astype(jnp.int32), jax.nn.softmax(logits, axis=-1)))


def soft_encode(ab, sigma=SIGMA, k=NEIGHBORS):
  """Soft-encoded target (..., Q): a Gaussian (sigma in ab units) over the k nearest bin centers."""
  bins, weights = soft_encode_sparse(ab, sigma, k)
  q = _bins()[0].shape[0]
  return jnp.einsum('...k,...kq->...q', weights, jax.nn.one_hot(bins, q, dtype=weights.dtype))


def _concrete(x):
  return not isinstance(x, jax.core.Tracer)


def prior_from_histogram(hist_22x22, sigma=SIGMA):
  """The color prior over the Q bins from an ab histogram on the constants.AB_GRID_* cells.

  Args:
    hist_22x22: pixel counts; hist[i, j] counts ab with a in cell i and b in cell j (the layout of
      np.histogram2d(a, b, bins=22, range=[[-110, 110]] * 2)).
    sigma: width of the Gaussian smoothing in ab units.

  Returns:
    (Q,) float32 summing to 1: p_q proportional to sum_j hist_j exp(-|c_q - g_j|^2 / (2 sigma^2)),
    with c_q the bin centers and g_j the 22 x 22 cell centers (mass smoothed outside the gamut
    is dropped before normalizing).
  """
  n = constants.AB_GRID_SIZE
  hist = jnp.asarray(hist_22x22, jnp.float32)
  if hist.shape != (n, n):
    raise ValueError(f'expected a ({n}, {n}) histogram, got {hist.shape}')
  if sigma <= 0:
    raise ValueError(f'sigma must be positive, got {sigma}')
  if _concrete(hist) and (np.any(np.asarray(hist) < 0) or not np.asarray(hist).sum() > 0):
    raise ValueError('the histogram needs non-negative counts with a positive total')
  g = jnp.asarray(GRID_CENTERS_1D)
  c = jnp.asarray(_bins()[0])
  # The Gaussian is separable: smooth along a, then along b.
  ka = jnp.exp(-((c[:, 0:1] - g) ** 2) / (2.0 * sigma**2))  # (Q, 22)
  kb = jnp.exp(-((c[:, 1:2] - g) ** 2) / (2.0 * sigma**2))  # (Q, 22)
  smoothed = jnp.einsum('qi,ij,qj->q', ka, hist / hist.sum(), kb)
  return smoothed / smoothed.sum()


def rebalance_weights(prior, lam=LAMBDA):
  """Class weights w = 1 / ((1 - lam) * prior + lam / Q), scaled so that sum(prior * w) = 1."""
  prior = jnp.asarray(prior, jnp.float32)
  q = _bins()[0].shape[0]
  if prior.shape != (q,):
    raise ValueError(f'expected a prior of shape ({q},), got {prior.shape}')
  if not 0.0 < lam <= 1.0:
    raise ValueError(f'lam must be in (0, 1], got {lam}')
  if _concrete(prior) and (np.any(np.asarray(prior) < 0) or not np.asarray(prior).sum() > 0):
    raise ValueError('the prior needs non-negative values with a positive total')
  prior = prior / prior.sum()
  w = 1.0 / ((1.0 - lam) * prior + lam / q)
  return w / jnp.sum(prior * w)


def annealed_mean(logits, T=TEMPERATURE):
  """ab (..., 2) from bin logits (..., Q): the mean of softmax(logits / T) over the bin centers.

  T = 1 gives the mean of the predicted distribution, T -> 0 its mode.
  """
  logits = jnp.asarray(logits)
  q = _bins()[0].shape[0]
  if logits.ndim < 1 or logits.shape[-1] != q:
    raise ValueError(f'expected logits of shape (..., {q}), got {logits.shape}')
  if _concrete(T) and not T > 0:
    raise ValueError(f'temperature must be positive, got {T}')
  p = jax.nn.softmax(logits.astype(jnp.float32) / T, axis=-1)
  return p @ jnp.asarray(_bins()[0])
