"""Flax colorization networks: L (B, H, W, 1) in Lab units -> model output at the input size."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax import constants, quantize

MODEL_NAMES = ('seed', 'unet')
LOSSES = ('mse', 'classification')
HEAD_STRIDES = (1, 2)
GROUPS = 8  # GroupNorm groups in the U-Net


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a network from its params; saved as model.json."""

  name: str = 'seed'  # the architecture: 'seed' is the report's encoder-decoder
  loss: str = 'mse'  # 'mse': the network outputs ab / AB_SCALE through a tanh
  image_size: int = constants.IMAGE_SIZE  # the size the network was trained at
  dtype: str = 'float32'  # computation dtype; params stay float32
  # 'classification' only: the head outputs quantize.NUM_BINS logits at 1 / head_stride of the input
  # size, decoded by the annealed mean at this temperature.
  temperature: float = quantize.TEMPERATURE
  head_stride: int = 2
  width: int = 32  # 'unet' only: channels at full resolution, doubled at each of 3 downsamplings

  def __post_init__(self):
    if self.name not in MODEL_NAMES:
      raise ValueError(f'unknown model {self.name!r}; choose from {MODEL_NAMES}')
    if self.loss not in LOSSES:
      raise ValueError(f'unknown loss {self.loss!r}; choose from {LOSSES}')
    if self.head_stride not in HEAD_STRIDES:
      raise ValueError(f'head_stride must be one of {HEAD_STRIDES}, got {self.head_stride}')
    if not self.temperature > 0:
      raise ValueError(f'temperature must be positive, got {self.temperature}')
    if self.width <= 0 or self.width % GROUPS:
      raise ValueError(f'width must be a positive multiple of {GROUPS}, got {self.width}')

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text):
    return cls(**json.loads(text))


def upsample2(x_BxHxWxC):
  """Nearest-neighbour x2 upsampling; jnp.repeat keeps a symbolic batch for ONNX export."""
  return jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)


class SeedNet(nn.Module):
  """The report's encoder-decoder: 3x3 'same' convolutions with ReLU, tanh on ab / 128.

  With num_bins > 0 the final 2-channel tanh convolution becomes a 1x1 convolution to num_bins
  logits, at half the input size (head_stride 2) or repeated to the input size (head_stride 1).
  """

  dtype: jnp.dtype = jnp.float32
  num_bins: int = 0
  head_stride: int = 2

  @nn.compact
  def __call__(self, L_BxHxWx1):
    x = L_BxHxWx1.astype(self.dtype) * constants.L_INPUT_SCALE
    # fmt: off
    conv = lambda feats, stride=1: nn.Conv(
        feats, (3, 3), strides=stride, padding='SAME', dtype=self.dtype)
    for feats, stride in ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1),
                          (256, 1), (128, 1)):
      x = nn.relu(conv(feats, stride)(x))
    # fmt: on
    x = upsample2(x)
    x = nn.relu(conv(64)(x))
    x = upsample2(x)
    x = nn.relu(conv(32)(x))
    if self.num_bins:
      logits = nn.Conv(self.num_bins, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)
      return upsample2(logits) if self.head_stride == 1 else logits  # (B, H/s, W/s, Q)
    x = jnp.tanh(conv(2)(x))
    return upsample2(x).astype(jnp.float32)  # ab / AB_SCALE, (B, H, W, 2)


class UNet(nn.Module):
  """Encoder-decoder with skip connections: 3 downsamplings, 3x3 convs, GroupNorm and ReLU.

  Params are the whole state (no batch statistics). Heads: ab / AB_SCALE through a tanh at the
  input size (num_bins = 0), or num_bins logits from a 1x1 convolution at 1 / head_stride of it.
  H and W must be multiples of 8.
  """

  width: int = 32
  num_bins: int = 0
  head_stride: int = 2
  dtype: jnp.dtype = jnp.float32

  def _block(self, x, feats):
    for _ in range(2):
      x = nn.Conv(feats, (3, 3), padding='SAME', dtype=self.dtype)(x)
      x = nn.relu(nn.GroupNorm(num_groups=GROUPS, dtype=self.dtype)(x))
    return x

  @nn.compact
  def __call__(self, L_BxHxWx1):
    x = L_BxHxWx1.astype(self.dtype) * constants.L_INPUT_SCALE
    skips = []
    for level in range(3):
      x = self._block(x, self.width << level)
      skips.append(x)
      x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))  # keyword: jax2onnx needs it
    x = self._block(x, self.width << 3)
    # Classification at half resolution stops before the full-resolution decoder stage.
    last = 1 if self.num_bins and self.head_stride == 2 else 0
    for level in range(2, last - 1, -1):
      feats = self.width << level
      x = nn.Conv(feats, (3, 3), padding='SAME', dtype=self.dtype)(upsample2(x))
      x = self._block(jnp.concatenate([x, skips[level]], axis=-1), feats)
    if self.num_bins:
      return nn.Conv(self.num_bins, (1, 1), dtype=self.dtype)(x).astype(jnp.float32)
    x = jnp.tanh(nn.Conv(2, (1, 1), dtype=self.dtype)(x))
    return x.astype(jnp.float32)  # ab / AB_SCALE, (B, H, W, 2)


def create_model(config: ModelConfig) -> nn.Module:
  """The Flax module for a config."""
  dtype = jnp.dtype(config.dtype)
  num_bins = quantize.NUM_BINS if config.loss == 'classification' else 0
  if config.name == 'seed':
    return SeedNet(dtype=dtype, num_bins=num_bins, head_stride=config.head_stride)
  if config.name == 'unet':
    return UNet(config.width, num_bins=num_bins, head_stride=config.head_stride, dtype=dtype)
  raise ValueError(f'unknown model {config.name!r}')


def decode(config: ModelConfig, output, temperature=None):
  """The network's output -> ab (B, H, W, 2) in Lab units at the input size.

  'mse': output * AB_SCALE clipped to [-AB_MAX, AB_MAX]. 'classification': the annealed mean of
  the logits at `temperature` (default config.temperature), upsampled bilinearly by
  config.head_stride.
  """
  if config.loss == 'mse':
    if temperature is not None:
      raise ValueError("an 'mse' model takes no temperature")
    # tanh * AB_SCALE reaches 128; no sRGB color has |a| or |b| above AB_MAX.
    return jnp.clip(
      output.astype(jnp.float32) * constants.AB_SCALE, -constants.AB_MAX, constants.AB_MAX
    )
  if config.loss != 'classification':
    raise ValueError(f'unknown loss {config.loss!r}')
  ab_Bxhxwx2 = quantize.annealed_mean(
    output, config.temperature if temperature is None else temperature
  )
  if config.head_stride == 1:
    return ab_Bxhxwx2
  B, h, w, _ = ab_Bxhxwx2.shape
  s = config.head_stride
  return jax.image.resize(ab_Bxhxwx2, (B, h * s, w * s, 2), method='bilinear')
