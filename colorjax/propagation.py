"""Hints carried over the photo: each hint's correction spread to the pixels that look alike.

The network sees hints as inputs, but a model trained on few photos follows them only weakly
(docs/quality.md). `spread` makes the network's colors obey them, after the classic
edge-aware propagation of user scribbles (Levin et al. 2004, "Colorization using
Optimization"), written as one joint-bilateral normalized convolution: the residual between
each hint and the network's colors under it is added to every pixel in proportion to how alike
the two are in position, lightness and the network's own colors. The last term carries the
network's knowledge: pixels it colored alike are likely one object, so a red point on a shirt
it painted blue turns the blue of that shirt red, not the blue sky beside it. Hinted pixels
take their hint exactly.

The four constants were chosen on coco/val2017 with the shipped model and on the README's
hinted photo: the widest setting of a grid (sigmas 0.5, 15, 9) gained most (+0.70/+2.41/+3.30
dB at 1/5/10 hints) but carried one red point onto every face and the sky of the photo; these
gain +0.52/+2.07/+3.04 and keep it to the shirt and its like (docs/shipped_quality.md).
"""

import jax
import jax.numpy as jnp

from colorjax import constants

SPATIAL = 0.3  # the positional sigma, as a fraction of the image's longer side
LIGHTNESS = 10.0  # the lightness sigma, in L units
CHROMA = 6.0  # the sigma on the network's own colors, in ab units
PRIOR = 2.0  # a pixel takes half a hint's correction where the hint's weight reaches this
GRID = 32  # hints are pooled into cells of a GRID x GRID grid (at most) ...
MAX_CELLS = 128  # ... of which the most covered MAX_CELLS are kept (static shapes)


def spread(L_BxHxWx1, ab_BxHxWx2, hint_ab_BxHxWx2, mask_BxHxWx1):
  """The network's ab with the hints' corrections spread over the image (pure, jit-able).

  Args:
    L_BxHxWx1: lightness in [0, 100].
    ab_BxHxWx2: the network's decoded colors, Lab units.
    hint_ab_BxHxWx2, mask_BxHxWx1: the hints as colorjax.inference.colorize takes them (hint ab
      in Lab units, mask 1 on hinted pixels, 0 elsewhere).

  Returns:
    ab (B, H, W, 2): unchanged in an image without hints; equal to the hint on hinted pixels.
  """
  L = jnp.asarray(L_BxHxWx1, jnp.float32)
  ab = jnp.asarray(ab_BxHxWx2, jnp.float32)
  hint_ab = jnp.asarray(hint_ab_BxHxWx2, jnp.float32)
  mask = jnp.asarray(mask_BxHxWx1, jnp.float32)
  B, H, W, _ = ab.shape
  cell = -(-max(H, W) // GRID)
  Hp, Wp = -(-H // cell) * cell, -(-W // cell) * cell
  rows_H, cols_W = jnp.arange(H) + 0.5, jnp.arange(W) + 0.5  # pixel centers
  yx = jnp.stack(jnp.meshgrid(rows_H, cols_W, indexing='ij'), -1)
  yx = jnp.broadcast_to(yx, (B, H, W, 2))
  # Per cell, sums over its hinted pixels of: 1, the residual, L, the network's ab, position.
  sums = jnp.concatenate([mask, hint_ab - ab, L, ab, yx], -1) * mask
  sums = jnp.pad(sums, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)))
  sums = sums.reshape(B, Hp // cell, cell, Wp // cell, cell, -1).sum((2, 4)).reshape(B, -1, 8)
  weight_BxK, cells = jax.lax.top_k(sums[..., 0], min(MAX_CELLS, sums.shape[1]))
  means = jnp.take_along_axis(sums, cells[..., None], 1) / jnp.maximum(weight_BxK, 1e-6)[..., None]
  residual_BxKx2, L_BxK, ab_BxKx2, yx_BxKx2 = (
    means[..., 1:3],
    means[..., 3],
    means[..., 4:6],
    means[..., 6:8],
  )
  # Weights (B, H, W, K) as products of per-term Gaussians; the positional one is separable
  # into rows and columns, so only lightness and color cost a term per pixel and cell.
  sigma = SPATIAL * max(H, W)
  gauss = lambda d, s: jnp.exp(-0.5 * (d / s) ** 2)
  rows = gauss(rows_H[None, :, None] - yx_BxKx2[:, None, :, 0], sigma)  # (B, H, K)
  cols = gauss(cols_W[None, :, None] - yx_BxKx2[:, None, :, 1], sigma)  # (B, W, K)
  alike = (
    ((L - L_BxK[:, None, None]) / LIGHTNESS) ** 2
    + ((ab[..., :1] - ab_BxKx2[:, None, None, :, 0]) / CHROMA) ** 2
    + ((ab[..., 1:] - ab_BxKx2[:, None, None, :, 1]) / CHROMA) ** 2
  )
  w_BxHxWxK = (weight_BxK[:, None] * rows)[:, :, None] * cols[:, None] * jnp.exp(-0.5 * alike)
  # One product gives the weighted residuals and the weights' sum (a column of ones).
  ones = jnp.ones_like(residual_BxKx2[..., :1])
  sums = jnp.einsum('bhwk,bkc->bhwc', w_BxHxWxK, jnp.concatenate([residual_BxKx2, ones], -1))
  correction = sums[..., :2] / (PRIOR + sums[..., 2:])
  out = jnp.clip(ab + correction, -constants.AB_MAX, constants.AB_MAX)
  return jnp.where(mask > 0, hint_ab, out)


spread_jit = jax.jit(spread)
