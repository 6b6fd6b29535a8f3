"""Flax colorization networks: L (B, H, W, 1) in Lab units -> model output at the input size."""

import dataclasses
import json

import flax.linen as nn
import jax.numpy as jnp

from colorjax import constants

MODEL_NAMES = ('seed',)
LOSSES = ('mse',)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a network from its params; saved as model.json."""

  name: str = 'seed'  # the architecture: 'seed' is the report's encoder-decoder
  loss: str = 'mse'  # 'mse': the network outputs ab / AB_SCALE through a tanh
  image_size: int = constants.IMAGE_SIZE  # the size the network was trained at
  dtype: str = 'float32'  # computation dtype; params stay float32

  def __post_init__(self):
    if self.name not in MODEL_NAMES:
      raise ValueError(f'unknown model {self.name!r}; choose from {MODEL_NAMES}')
    if self.loss not in LOSSES:
      raise ValueError(f'unknown loss {self.loss!r}; choose from {LOSSES}')

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text):
    return cls(**json.loads(text))


def upsample2(x_BxHxWxC):
  """Nearest-neighbour x2 upsampling; jnp.repeat keeps a symbolic batch for ONNX export."""
  return jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)


class SeedNet(nn.Module):
  """The report's encoder-decoder: 3x3 'same' convolutions with ReLU, tanh on ab / 128."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, L_BxHxWx1):
    x = L_BxHxWx1.astype(self.dtype) * constants.L_INPUT_SCALE
    conv = lambda feats, stride=1: nn.Conv(
        feats, (3, 3), strides=stride, padding='SAME', dtype=self.dtype)
    for feats, stride in ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1),
                          (256, 1), (128, 1)):
      x = nn.relu(conv(feats, stride)(x))
    x = upsample2(x)
    x = nn.relu(conv(64)(x))
    x = upsample2(x)
    x = nn.relu(conv(32)(x))
    x = jnp.tanh(conv(2)(x))
    return upsample2(x).astype(jnp.float32)  # ab / AB_SCALE, (B, H, W, 2)


def create_model(config: ModelConfig) -> nn.Module:
  """The Flax module for a config."""
  dtype = jnp.dtype(config.dtype)
  if config.name == 'seed':
    return SeedNet(dtype=dtype)
  raise ValueError(f'unknown model {config.name!r}')
