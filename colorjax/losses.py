"""Training losses: the report's MSE on ab / AB_SCALE and the rebalanced soft cross-entropy."""

import jax
import jax.numpy as jnp

from colorjax import constants, quantize

# Examples whose mean chroma sqrt(a^2 + b^2) is below this (about one just-noticeable difference)
# are grayscale or nearly so: no color to learn, so the classification loss leaves them out.
MIN_CHROMA = 2.0


def _check_ab(ab_BxHxWx2, name='ab'):
  if ab_BxHxWx2.ndim != 4 or ab_BxHxWx2.shape[-1] != 2:
    raise ValueError(f'expected {name} of shape (B, H, W, 2), got {ab_BxHxWx2.shape}')


def mse_per_example(pred_scaled_BxHxWx2, ab_BxHxWx2):
  """The report's MSE per example (B,): mean over pixels and both channels of
  (prediction - ab / AB_SCALE)^2."""
  _check_ab(pred_scaled_BxHxWx2, 'pred_scaled')
  _check_ab(ab_BxHxWx2)
  if pred_scaled_BxHxWx2.shape != ab_BxHxWx2.shape:
    raise ValueError(f'shapes differ: {pred_scaled_BxHxWx2.shape} vs {ab_BxHxWx2.shape}')
  target = ab_BxHxWx2.astype(jnp.float32) / constants.AB_SCALE
  return jnp.mean((pred_scaled_BxHxWx2.astype(jnp.float32) - target) ** 2, axis=(1, 2, 3))


def mse_loss(pred_scaled_BxHxWx2, ab_BxHxWx2):
  """The report's MSE over a batch (every example weighs the same)."""
  return jnp.mean(mse_per_example(pred_scaled_BxHxWx2, ab_BxHxWx2))


def downsample_ab(ab_BxHxWx2, h, w):
  """Mean of ab over (H / h) x (W / w) blocks; H and W must be multiples of h and w."""
  _check_ab(ab_BxHxWx2)
  B, H, W, _ = ab_BxHxWx2.shape
  if H % h or W % w:
    raise ValueError(f'target size {H}x{W} is not a multiple of the logits size {h}x{w}')
  blocks = ab_BxHxWx2.astype(jnp.float32).reshape(B, h, H // h, w, W // w, 2)
  return blocks.mean(axis=(2, 4))


def chroma_mask(ab_BxHxWx2, min_chroma=MIN_CHROMA):
  """(B,) float32: 1 where an example's mean chroma is at least min_chroma, else 0."""
  _check_ab(ab_BxHxWx2)
  ab = ab_BxHxWx2.astype(jnp.float32)
  chroma = jnp.sqrt(jnp.sum(ab**2, axis=-1) + 1e-12).mean(axis=(1, 2))
  return (chroma >= min_chroma).astype(jnp.float32)


def classification_loss(
  logits_BxhxwxQ,
  ab_BxHxWx2,
  weights_Q,
  sigma=quantize.SIGMA,
  k=quantize.NEIGHBORS,
  min_chroma=MIN_CHROMA,
):
  """Rebalanced cross-entropy between predicted bin logits and the soft-encoded target ab.

  The target is block-averaged to the logits' resolution, soft-encoded over its k nearest bins,
  and each pixel's cross-entropy is weighted by weights_Q of its nearest bin. Examples with mean
  chroma below min_chroma get weight 0.

  Args:
    logits_BxhxwxQ: bin logits; h and w divide the target's H and W.
    ab_BxHxWx2: target ab in Lab units.
    weights_Q: per-bin weights, e.g. quantize.rebalance_weights(prior); all ones for plain CE.
    sigma, k: soft-encoding width (ab units) and number of neighbors.
    min_chroma: examples below this mean chroma are left out.

  Returns:
    (loss, aux): loss = sum of weighted pixel cross-entropies over kept pixels / their count
    (0 when no example is kept); aux holds 'example_loss' (B,) and 'example_kept' (B,) for exact
    dataset means, 'ce' (unweighted cross-entropy over kept pixels), 'top1' (fraction of kept
    pixels whose argmax logit is the target's nearest bin) and 'kept' (fraction of examples kept).
  """
  _check_ab(ab_BxHxWx2)
  q = quantize.NUM_BINS
  if logits_BxhxwxQ.ndim != 4 or logits_BxhxwxQ.shape[-1] != q:
    raise ValueError(f'expected logits of shape (B, h, w, {q}), got {logits_BxhxwxQ.shape}')
  B, h, w, _ = logits_BxhxwxQ.shape
  if ab_BxHxWx2.shape[0] != B:
    raise ValueError(f'batch sizes differ: logits {B}, ab {ab_BxHxWx2.shape[0]}')
  weights_Q = jnp.asarray(weights_Q, jnp.float32)
  if weights_Q.shape != (q,):
    raise ValueError(f'expected weights of shape ({q},), got {weights_Q.shape}')

  bins_Bxhxwxk, soft_Bxhxwxk = quantize.soft_encode_sparse(
    downsample_ab(ab_BxHxWx2, h, w), sigma, k
  )
  logp_BxhxwxQ = jax.nn.log_softmax(logits_BxhxwxQ.astype(jnp.float32), axis=-1)
  # The soft target is zero outside its k bins, so the cross-entropy needs only those k terms.
  ce_Bxhxw = -jnp.sum(soft_Bxhxwxk * jnp.take_along_axis(logp_BxhxwxQ, bins_Bxhxwxk, -1), -1)
  nearest_Bxhxw = bins_Bxhxwxk[..., 0]
  mask_B = chroma_mask(ab_BxHxWx2, min_chroma)
  pixel_mask_Bxhxw = jnp.broadcast_to(mask_B[:, None, None], ce_Bxhxw.shape)
  count = jnp.maximum(pixel_mask_Bxhxw.sum(), 1.0)
  weighted = weights_Q[nearest_Bxhxw] * ce_Bxhxw
  loss = jnp.sum(pixel_mask_Bxhxw * weighted) / count
  hits = (jnp.argmax(logits_BxhxwxQ, axis=-1) == nearest_Bxhxw).astype(jnp.float32)
  aux = {
    'example_loss': mask_B * weighted.mean(axis=(1, 2)),  # (B,), 0 where left out
    'example_kept': mask_B,  # (B,); dataset loss = sum(example_loss) / sum(example_kept)
    'ce': jnp.sum(pixel_mask_Bxhxw * ce_Bxhxw) / count,
    'top1': jnp.sum(pixel_mask_Bxhxw * hits) / count,
    'kept': mask_B.mean(),
  }
  return loss, aux
