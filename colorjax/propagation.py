"""Hints carried over the photo: each hint's color spread to the pixels that look alike.

The network sees hints as inputs, but a model trained on few photos follows them only weakly
(docs/quality.md). `spread` makes the network's colors obey them, after the classic
edge-aware propagation of user scribbles (Levin et al. 2004, "Colorization using
Optimization"), written as one joint-bilateral normalized convolution: every pixel takes a
weighted mean of its own color and the hints' colors, each hint weighted by how alike the pixel
and the hint are in position, lightness and the network's own colors. The last term carries the
network's knowledge: pixels it colored alike are likely one object, so a red point on a shirt
it painted blue turns that shirt red, not the blue sky beside it. Hinted pixels take their hint
exactly.

The four constants were chosen on coco/val2017 with the shipped model and by the README's
hinted photo: blending toward the hint's color beats adding its correction (hint minus the
network's color under it), which moves an alike pixel by the hint's error rather than its own;
wider sigmas gain more PSNR but carry a hint onto unrelated things across the photo. The
measurements: the model card's hint curve and docs/shipped_quality.md.
"""

import jax
import jax.numpy as jnp

from colorjax import decoding

SPATIAL = 0.3  # the positional sigma, as a fraction of the image's longer side
LIGHTNESS = 10.0  # the lightness sigma, in L units
CHROMA = 12.0  # the sigma on the network's own colors, in ab units
PRIOR = 2.0  # the weight of a pixel's own color: a hint's weight of PRIOR takes it halfway
GRID = 32  # hints are pooled into cells of a GRID x GRID grid (at most) ...
MAX_CELLS = 128  # ... of which the most covered MAX_CELLS are kept (static shapes)
# The weights are computed on the image halved while its longer side exceeds WEIGHT_SIDE (and
# both sides are even), then upsampled: a 256x256 photo's weights cost a quarter as much, and
# the network's colors they follow are computed at half its resolution anyway.
WEIGHT_SIDE = 128


def _halvings(H, W):
  n = 0
  while max(H, W) >> n > WEIGHT_SIDE and not (H >> n) % 2 and not (W >> n) % 2:
    n += 1
  return n


def spread(L_BxHxWx1, ab_BxHxWx2, hint_ab_BxHxWx2, mask_BxHxWx1):
  """The network's ab with the hints' colors spread over the image (pure, jit-able).

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
  # Per cell, sums over its hinted pixels of: 1, the hint's ab, L, the network's ab, position.
  sums = jnp.concatenate([mask, hint_ab, L, ab, yx], -1) * mask
  sums = jnp.pad(sums, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)))
  sums = sums.reshape(B, Hp // cell, cell, Wp // cell, cell, -1).sum((2, 4)).reshape(B, -1, 8)
  weight_BxK, cells = jax.lax.top_k(sums[..., 0], min(MAX_CELLS, sums.shape[1]))
  means = jnp.take_along_axis(sums, cells[..., None], 1) / jnp.maximum(weight_BxK, 1e-6)[..., None]
  hint_BxKx2, L_BxK, ab_BxKx2, yx_BxKx2 = (
    means[..., 1:3],
    means[..., 3],
    means[..., 4:6],
    means[..., 6:8],
  )
  # Weights (B, h, w, K) as products of per-term Gaussians, on the grid of h x w pixels of
  # `scale` image pixels each (the lightness and colors averaged over them); the positional one
  # is separable into rows and columns, so only lightness and color cost a term per pixel and
  # cell.
  n = _halvings(H, W)
  scale, h, w = 2**n, H >> n, W >> n
  L_s, ab_s = (x.reshape(B, h, scale, w, scale, -1).mean((2, 4)) for x in (L, ab))
  sigma = SPATIAL * max(H, W)
  gauss = lambda d, s: jnp.exp(-0.5 * (d / s) ** 2)
  rows = gauss((jnp.arange(h) + 0.5)[None, :, None] * scale - yx_BxKx2[:, None, :, 0], sigma)
  cols = gauss((jnp.arange(w) + 0.5)[None, :, None] * scale - yx_BxKx2[:, None, :, 1], sigma)
  alike = (
    ((L_s - L_BxK[:, None, None]) / LIGHTNESS) ** 2
    + ((ab_s[..., :1] - ab_BxKx2[:, None, None, :, 0]) / CHROMA) ** 2
    + ((ab_s[..., 1:] - ab_BxKx2[:, None, None, :, 1]) / CHROMA) ** 2
  )
  w_BxhxwxK = (weight_BxK[:, None] * rows)[:, :, None] * cols[:, None] * jnp.exp(-0.5 * alike)
  # One product gives the weighted hint colors and the weights' sum (a column of ones); each
  # pixel takes the weighted mean of its own color (weight PRIOR) and the hints'.
  ones = jnp.ones_like(hint_BxKx2[..., :1])
  sums = jnp.einsum('bhwk,bkc->bhwc', w_BxhxwxK, jnp.concatenate([hint_BxKx2, ones], -1))
  for _ in range(n):
    sums = decoding.upsample2_bilinear(sums)
  out = (PRIOR * ab + sums[..., :2]) / (PRIOR + sums[..., 2:])
  return jnp.where(mask > 0, hint_ab, out)


spread_jit = jax.jit(spread)
