"""From a network's output to ab: the regression scaling and the classification decoding knobs.

A regression ('mse') network outputs ab / AB_SCALE through a tanh; `decode` scales it back and
clips it to the colors a photo can hold.

A classification network outputs logits over quantize.NUM_BINS ab bins, at 1 / head_stride of
the input size. Its decoding is a test-time choice with three knobs, all fields of the
ModelConfig (saved in model.json, set by launch.calibrate or `with_decoding`):

- temperature: the annealed mean (Zhang et al. 2016): softmax(logits / T) averaged over the bin
  centers. Lower is closer to the most likely color (more vivid, more mistakes), higher closer
  to the mean (duller, safer).
- prior_correction: first adds prior_correction * bin_log_weights to the logits, with
  bin_log_weights = log w, the training data's rebalancing weights (training writes them into
  model.json). This is post-hoc logit adjustment (Menon et al. 2021, "Long-tail learning via
  logit adjustment"): positive values shift the colors toward rarer, more saturated bins,
  negative ones toward common, duller ones, down to -1, which undoes the training's rebalancing
  (the network learns p * w, so -log w leaves p). 0 leaves the logits as they are.
- chroma_gain: last stretches each image's ab around the image's mean ab (`stretch_chroma`):
  more colorful at an unchanged mean ab (the tint). At a given colorfulness it costs less
  accuracy than a stronger correction or a lower temperature: it is the first-order cheapest way,
  in squared error, to widen the spread of colors that colorfulness measures. 1 leaves ab as it
  is.

`ab_from_output` is `decode` written so that an ONNX export keeps a symbolic batch.
"""

import dataclasses

import jax
import jax.numpy as jnp

from colorjax import constants, quantize

KNOBS = ('temperature', 'prior_correction', 'chroma_gain')


def decode(config, output):
  """The network's output -> ab (B, H, W, 2) in Lab units at the input size (see module doc).

  Args:
    config: the network's models.ModelConfig (its loss and decoding knobs).
    output: the network's output: ab / AB_SCALE (B, H, W, 2) for 'mse', logits (B, h, w, Q) at
      1 / config.head_stride of the input size for 'classification'.
  """
  if config.loss == 'mse':
    # tanh * AB_SCALE reaches 128; no sRGB color has |a| or |b| above AB_MAX.
    return jnp.clip(
      output.astype(jnp.float32) * constants.AB_SCALE, -constants.AB_MAX, constants.AB_MAX
    )
  if config.loss != 'classification':
    raise ValueError(f'unknown loss {config.loss!r}')
  ab_Bxhxwx2 = quantize.annealed_mean(prior_corrected(config, output), config.temperature)
  if config.head_stride != 1:
    B, h, w, _ = ab_Bxhxwx2.shape
    s = config.head_stride
    ab_Bxhxwx2 = jax.image.resize(ab_Bxhxwx2, (B, h * s, w * s, 2), method='bilinear')
  return stretch_chroma(ab_Bxhxwx2, config.chroma_gain)


def prior_corrected(config, logits_BxhxwxQ):
  """logits + config.prior_correction * config.bin_log_weights (unchanged at correction 0)."""
  if not config.prior_correction:
    return logits_BxhxwxQ
  if len(config.bin_log_weights) != quantize.NUM_BINS:
    raise ValueError(
      f'prior_correction needs the {quantize.NUM_BINS} bin_log_weights that training writes '
      f'into model.json; this config has {len(config.bin_log_weights)}'
    )
  log_w = jnp.asarray(config.bin_log_weights, jnp.float32)
  return logits_BxhxwxQ.astype(jnp.float32) + config.prior_correction * log_w


def stretch_chroma(ab_BxHxWx2, gain):
  """mean + gain * (ab - mean), with mean each image's mean ab, clipped to [-AB_MAX, AB_MAX].

  Each image's mean ab (the tint, against the truth's) stays as it is, up to the clipping; the
  spread of its colors around that mean grows by `gain`. gain 1 returns ab unchanged.
  """
  if gain == 1:
    return ab_BxHxWx2
  mean_Bx1x1x2 = jnp.mean(ab_BxHxWx2, axis=(1, 2), keepdims=True)
  stretched = mean_Bx1x1x2 + gain * (ab_BxHxWx2 - mean_Bx1x1x2)
  return jnp.clip(stretched, -constants.AB_MAX, constants.AB_MAX)


def with_decoding(colorizer, *, temperature=None, prior_correction=None, chroma_gain=None):
  """The colorizer with its classification decoding replaced (None keeps the config's value).

  The network and params are unchanged. Raises ValueError for a model without a decoding to set
  (an 'mse' model) when any value is given, and ModelConfig's ValueError for a temperature <= 0,
  a correction below -1 or a chroma gain <= 0.
  """
  given = zip(KNOBS, (temperature, prior_correction, chroma_gain))
  changes = {k: float(v) for k, v in given if v is not None}
  if not changes:
    return colorizer
  if colorizer.config.loss != 'classification':
    raise ValueError(f'a {colorizer.config.loss!r} model takes no {" or ".join(changes)}')
  return colorizer.replace(config=dataclasses.replace(colorizer.config, **changes))


def upsample2_bilinear(x_BxhxwxC):
  """jax.image.resize(..., 'bilinear') by exactly 2 (half-pixel centers, edges clamped), written
  with pad, stack and reshape so that the batch can stay symbolic in an ONNX export."""

  def along(x, axis):
    n = x.shape[axis]
    first, last = (
      jax.lax.slice_in_dim(x, 0, 1, axis=axis),
      jax.lax.slice_in_dim(x, n - 1, n, axis=axis),
    )
    prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    shape = list(x.shape)
    shape[axis] = 2 * n
    return jnp.stack([even, odd], axis=axis + 1).reshape(shape)

  return along(along(x_BxhxwxC, 1), 2)


def ab_from_output(config, output):
  """decode, with a classification head's x2 bilinear upsampling done by upsample2_bilinear
  (jax.image.resize cannot be exported with a symbolic batch) before the chroma stretch."""
  if config.loss != 'classification' or config.head_stride == 1:
    return decode(config, output)
  if config.head_stride != 2:
    raise ValueError(f'cannot export head_stride {config.head_stride}; only 1 and 2')
  at_head = dataclasses.replace(config, head_stride=1, chroma_gain=1.0)
  return stretch_chroma(upsample2_bilinear(decode(at_head, output)), config.chroma_gain)
