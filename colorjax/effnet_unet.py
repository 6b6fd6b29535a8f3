"""A U-Net on the ImageNet-pretrained EfficientNet-Lite0: semantic colors from little data.

The encoder sees the photo as a pretrained classifier does: L turned into its neutral gray sRGB
value in [-1, 1] on all three channels. Its features after blocks 0, 2, 4, 10 and 15 (strides
2 to 32) are the skips of a decoder of 3x3 convolutions, GroupNorm and ReLU (no running
statistics: the encoder's BatchNorm is frozen, so params alone define the model). Hints, when
the model takes them, enter at every scale: through an extra stem convolution of the encoder
(zero at init), as a hint pyramid added to each lower-resolution decoder stage (`hint_pyramid`:
a 1x1 projection per stage, so a hint reaches the coarse stages that spread a color over an
object), and beside L at the full-resolution stage (which puts a color exactly where it was
given). A model that saw hints only through the stem learned to ignore them (docs/quality.md).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax import constants, effnet, lab

# Decoder channels at strides 16, 8, 4, 2 and 1 for width 32 (they scale with the width).
DECODER_CHANNELS = (128, 96, 64, 32, 16)
SIZE_MULTIPLE = 32  # five stride-2 stages


def decoder_channels(width, groups):
  """The decoder's channels for a width (32 gives DECODER_CHANNELS), multiples of groups."""
  return tuple(max(groups, round(c * width / 32 / groups) * groups) for c in DECODER_CHANNELS)


def encoder_input(L_BxHxWx1):
  """L in [0, 100] -> the gray RGB in [-1, 1] that the ImageNet encoder expects."""
  gray = lab.gray_srgb(L_BxHxWx1.astype(jnp.float32), jnp) * 2.0 - 1.0
  return jnp.concatenate([gray] * 3, axis=-1)


def hint_pyramid(hints_BxHxWx3, stride):
  """colorjax.hints.scaled_hints pooled by `stride`: (B, H/stride, W/stride, 3) of the mean
  hint ab over the hinted pixels of each cell and a 0/1 "has a hint" channel, zero where a cell
  holds no hint (so a model given no hints sees exactly zero here)."""
  B, H, W, _ = hints_BxHxWx3.shape
  h, w = H // stride, W // stride
  cells = hints_BxHxWx3.astype(jnp.float32).reshape(B, h, stride, w, stride, 3).mean((2, 4))
  coverage = cells[..., 2:] + 0.5  # the hinted fraction of the cell (mask - 0.5 was fed)
  has_hint = (coverage > 0.5 / (stride * stride)).astype(jnp.float32)
  ab = cells[..., :2] / jnp.maximum(coverage, 1.0 / (stride * stride))
  return jnp.concatenate([ab * has_hint, has_hint], axis=-1)


class EffNetUNet(nn.Module):
  """L (B, H, W, 1), H and W multiples of 32 -> ab / AB_SCALE (tanh) at the input size, or
  num_bins logits at 1 / head_stride of it.

  conv(features, window=3, stride=1, upsample=False) builds the decoder's convolutions (the
  FastConv3x3 factory of colorjax.models); hints_BxHxWx3 are colorjax.hints.scaled_hints.
  """

  conv_factory: object
  width: int = 32
  groups: int = 8
  num_bins: int = 0
  head_stride: int = 2
  dtype: jnp.dtype = jnp.float32
  fast_depthwise: bool = False  # effnet.DepthwiseConv in the encoder (faster on a CPU)

  def _block(self, conv, x, feats):
    for _ in range(2):
      x = conv(feats)(x)
      x = nn.relu(nn.GroupNorm(num_groups=self.groups, dtype=self.dtype)(x))
    return x

  @nn.compact
  def __call__(self, L_BxHxWx1, hints_BxHxWx3=None):
    H, W = L_BxHxWx1.shape[1:3]
    if H % SIZE_MULTIPLE or W % SIZE_MULTIPLE:
      raise ValueError(f'the effnet_unet needs sizes divisible by {SIZE_MULTIPLE}, got {H}x{W}')
    conv = self.conv_factory()
    encoder = effnet.EfficientNetLite0(
      dtype=self.dtype, fast_depthwise=self.fast_depthwise, name='encoder'
    )
    features = encoder(encoder_input(L_BxHxWx1), features_only=True, stem_extra=hints_BxHxWx3)
    x = features[-1]
    channels = decoder_channels(self.width, self.groups)
    # Classification at half resolution stops before the full-resolution stage.
    stages = 4 if self.num_bins and self.head_stride == 2 else 5
    for level in range(stages):
      x = nn.relu(conv(channels[level], upsample=True)(x))
      if hints_BxHxWx3 is not None and level < 4:
        stride = 2 ** (4 - level)
        pyramid = hint_pyramid(hints_BxHxWx3, stride).astype(self.dtype)
        x = x + nn.Dense(channels[level], use_bias=False, dtype=self.dtype, name=f'hint_{level}')(
          pyramid
        )
      if level < 4:
        skip = features[3 - level].astype(self.dtype)
      else:
        full = [L_BxHxWx1.astype(self.dtype) * constants.L_INPUT_SCALE]
        skip = jnp.concatenate(full + ([] if hints_BxHxWx3 is None else [hints_BxHxWx3]), -1)
      x = self._block(conv, jnp.concatenate([x, skip.astype(self.dtype)], axis=-1), channels[level])
    if self.num_bins:
      return conv(self.num_bins, window=1)(x).astype(jnp.float32)
    return jnp.tanh(conv(2, window=1)(x)).astype(jnp.float32)  # ab / AB_SCALE, (B, H, W, 2)


def with_imagenet_encoder(variables):
  """An EffNetUNet's variables ({'params': ...}) with the encoder's pretrained params put in
  (the extra stem convolution of a hint-taking model stays as initialized: zero)."""
  params = dict(variables['params'])
  encoder = dict(params['encoder'])
  for name, value in effnet.imagenet_params(include_head=False).items():
    shapes = jax.tree.map(jnp.shape, (encoder.get(name), value))
    if shapes[0] != shapes[1]:
      raise ValueError(
        f'the pretrained encoder layer {name} has shapes {shapes[1]}, not {shapes[0]}'
      )
    encoder[name] = jax.tree.map(jnp.asarray, value)
  params['encoder'] = encoder
  return {**variables, 'params': params}
