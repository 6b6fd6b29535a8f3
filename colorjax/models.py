"""Flax colorization networks: L (B, H, W, 1) in Lab units -> model output at the input size."""

import dataclasses
import functools
import itertools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax import constants, convs, quantize

MODEL_NAMES = ('seed', 'unet', 'effnet_unet')
LOSSES = ('mse', 'classification')
HEAD_STRIDES = (1, 2)
GROUPS = 8  # GroupNorm groups in the U-Net
# How 3x3 convolutions are computed (params and the function are the same): 'xla' is nn.Conv;
# 'matmul' is FastConv3x3, the forms of colorjax.convs that XLA's CPU backend trains
# faster (kernel gradients as matmuls, polyphase stride-2 convolutions, Winograd, upsampling
# convolutions at the input's resolution); 'auto' picks 'matmul' on a CPU, 'xla' elsewhere.
CONV_IMPLS = ('auto', 'xla', 'matmul')
DTYPES = ('float32', 'bfloat16')
MAX_IMAGE_SIZE = 4096  # the networks' side; photos of any size are squashed to it


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a network from its params; saved as model.json."""

  name: str = 'seed'  # the architecture: 'seed' is the report's encoder-decoder
  loss: str = 'mse'  # 'mse': the network outputs ab / AB_SCALE through a tanh
  image_size: int = constants.IMAGE_SIZE  # the size the network was trained at
  dtype: str = 'float32'  # computation dtype; params stay float32
  # 'classification' only: the head outputs quantize.NUM_BINS logits at 1 / head_stride of the
  # input size. The decoding knobs (temperature, prior_correction with the training data's
  # bin_log_weights, chroma_gain) are documented in colorjax/decoding.py.
  temperature: float = quantize.TEMPERATURE
  head_stride: int = 2
  prior_correction: float = 0.0
  bin_log_weights: tuple[float, ...] = ()
  chroma_gain: float = 1.0
  # 'unet': channels at full resolution, doubled at each of 3 downsamplings; 'effnet_unet': the
  # decoder's width (effnet_unet.decoder_channels).
  width: int = 32
  conv: str = 'auto'  # one of CONV_IMPLS; changes the speed, not the params or the function
  # The network also takes user color hints (colorjax.hints): hint ab and a mask, beside L.
  # With no hints (an all-zero mask) it is the automatic colorizer.
  hints: bool = False

  def __post_init__(self):
    if self.name not in MODEL_NAMES:
      raise ValueError(f'unknown model {self.name!r}; choose from {MODEL_NAMES}')
    if self.loss not in LOSSES:
      raise ValueError(f'unknown loss {self.loss!r}; choose from {LOSSES}')
    if self.head_stride not in HEAD_STRIDES:
      raise ValueError(f'head_stride must be one of {HEAD_STRIDES}, got {self.head_stride}')
    if not self.temperature > 0:
      raise ValueError(f'temperature must be positive, got {self.temperature}')
    if not -1 <= self.prior_correction < float('inf'):
      raise ValueError(
        f'prior_correction must be finite and >= -1 (-1 undoes the rebalancing), '
        f'got {self.prior_correction}'
      )
    if not 0 < self.chroma_gain < float('inf'):
      raise ValueError(f'chroma_gain must be positive and finite, got {self.chroma_gain}')
    if self.loss != 'classification' and self.chroma_gain != 1:
      raise ValueError(f"chroma_gain is a 'classification' decoding; a {self.loss!r} model has 1")
    # JSON gives a list; a tuple keeps the config hashable (it is a static argument of jit).
    object.__setattr__(self, 'bin_log_weights', tuple(float(x) for x in self.bin_log_weights))
    if self.conv not in CONV_IMPLS:
      raise ValueError(f'conv must be one of {CONV_IMPLS}, got {self.conv!r}')
    if self.width <= 0 or self.width % GROUPS:
      raise ValueError(f'width must be a positive multiple of {GROUPS}, got {self.width}')
    multiple = 32 if self.name == 'effnet_unet' else 8
    if not (0 < self.image_size <= MAX_IMAGE_SIZE and self.image_size % multiple == 0):
      raise ValueError(
        f'image_size must be a positive multiple of {multiple} up to {MAX_IMAGE_SIZE}, got '
        f'{self.image_size}'
      )
    if self.dtype not in DTYPES:
      raise ValueError(f'dtype must be one of {DTYPES}, got {self.dtype!r}')
    if self.bin_log_weights and len(self.bin_log_weights) != quantize.NUM_BINS:
      raise ValueError(
        f'bin_log_weights must hold {quantize.NUM_BINS} values, got {len(self.bin_log_weights)}'
      )

  @property
  def size_multiple(self):
    """Input heights and widths must be multiples of this (the network's downsamplings)."""
    return 32 if self.name == 'effnet_unet' else 8

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text, source='model.json'):
    """The config of a model.json; ValueError (one line, naming source) for malformed JSON,
    unknown keys, values of the wrong type or out of bounds."""
    try:
      fields = json.loads(text)
    except ValueError as e:
      raise ValueError(f'{source} is not valid JSON: {e}') from None
    if not isinstance(fields, dict):
      raise ValueError(f'{source} must hold a JSON object, got {type(fields).__name__}')
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
      raise ValueError(f'{source} has unknown keys {unknown}; known: {sorted(known)}')
    for name, value in fields.items():
      kind = known[name].type
      ok = {
        'str': isinstance(value, str),
        'bool': isinstance(value, bool),
        'int': isinstance(value, int) and not isinstance(value, bool),
        'float': isinstance(value, (int, float)) and not isinstance(value, bool),
      }.get(kind if isinstance(kind, str) else getattr(kind, '__name__', ''), None)
      if name == 'bin_log_weights':
        ok = isinstance(value, list) and all(
          isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
      if ok is False:
        raise ValueError(f'{source}: {name} must be a {kind}, got {value!r}')
    try:
      return cls(**fields)
    except ValueError as e:
      raise ValueError(f'{source}: {e}') from None


def upsample2(x_BxHxWxC):
  """Nearest-neighbour x2 upsampling; jnp.repeat keeps a symbolic batch for ONNX export."""
  return jnp.repeat(jnp.repeat(x_BxHxWxC, 2, axis=1), 2, axis=2)


class FastConv3x3(nn.Module):
  """nn.Conv(features, (3, 3), strides, padding='SAME'): the same params, init, value and
  gradients, computed by convs.fast_conv3x3 (in the forms convs.forms picks). With upsample=True
  it is nn.Conv applied to upsample2(x), computed by convs.upsample2_conv3x3."""

  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  upsample: bool = False
  kernel_grad_band: int = convs.KERNEL_GRAD_BAND  # see convs.kernel_grad

  @nn.compact
  def __call__(self, x_BxHxWxC):
    C = x_BxHxWxC.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3, 3, C, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    x, kernel = x_BxHxWxC.astype(self.dtype), kernel.astype(self.dtype)
    if self.upsample:
      if self.strides != 1:
        raise ValueError('an upsampling convolution has stride 1')
      y = convs.upsample2_conv3x3(x, kernel)
    else:
      y = convs.fast_conv3x3(x, kernel, self.strides, self.kernel_grad_band)
    return y + bias.astype(self.dtype)


def resolve_conv(conv):
  """'auto' -> 'matmul' on a CPU backend, else 'xla'; other values unchanged."""
  if conv == 'auto':
    return 'matmul' if jax.default_backend() == 'cpu' else 'xla'
  return conv


def _conv_factory(conv, dtype, band):
  """conv(features, window=3, stride=1, upsample=False) -> a fresh conv layer named Conv_0,
  Conv_1, ... in call order, the names nn.Conv would get, so both implementations share params.
  upsample=True gives a 3x3 layer of upsample2(x)."""
  impl, names = resolve_conv(conv), itertools.count()

  def make(features, window=3, stride=1, upsample=False):
    name = f'Conv_{next(names)}'
    if impl == 'matmul' and window == 3:
      return FastConv3x3(features, stride, dtype, upsample, kernel_grad_band=band, name=name)
    layer = nn.Conv(
      features, (window, window), strides=stride, padding='SAME', dtype=dtype, name=name
    )
    return (lambda x: layer(upsample2(x))) if upsample else layer

  return make


def _input(L_BxHxWx1, hints_BxHxWx3, dtype):
  """The first layer's input: L / 100, then the scaled hint channels of a hint-taking model."""
  x = L_BxHxWx1.astype(dtype) * constants.L_INPUT_SCALE
  if hints_BxHxWx3 is None:
    return x
  return jnp.concatenate([x, hints_BxHxWx3.astype(dtype)], axis=-1)


# (features, stride) of the seed network's 3x3 convolutions before its two upsampling ones.
SEED_ENCODER = (
  (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1), (256, 1), (128, 1)
)  # fmt: skip


class SeedNet(nn.Module):
  """The report's encoder-decoder: 3x3 'same' convolutions with ReLU, tanh on ab / 128.

  With num_bins > 0 the final 2-channel tanh convolution becomes a 1x1 convolution to num_bins
  logits, at half the input size (head_stride 2) or repeated to the input size (head_stride 1).
  """

  dtype: jnp.dtype = jnp.float32
  num_bins: int = 0
  head_stride: int = 2
  conv: str = 'auto'  # one of CONV_IMPLS
  kernel_grad_band: int = convs.KERNEL_GRAD_BAND

  @nn.compact
  def __call__(self, L_BxHxWx1, hints_BxHxWx3=None):
    x = _input(L_BxHxWx1, hints_BxHxWx3, self.dtype)
    conv = _conv_factory(self.conv, self.dtype, self.kernel_grad_band)
    for feats, stride in SEED_ENCODER:
      x = nn.relu(conv(feats, stride=stride)(x))
    x = nn.relu(conv(64, upsample=True)(x))
    x = nn.relu(conv(32, upsample=True)(x))
    if self.num_bins:
      logits = conv(self.num_bins, window=1)(x).astype(jnp.float32)
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
  conv: str = 'auto'  # one of CONV_IMPLS
  kernel_grad_band: int = convs.KERNEL_GRAD_BAND

  def _block(self, conv, x, feats):
    for _ in range(2):
      x = conv(feats)(x)
      x = nn.relu(nn.GroupNorm(num_groups=GROUPS, dtype=self.dtype)(x))
    return x

  @nn.compact
  def __call__(self, L_BxHxWx1, hints_BxHxWx3=None):
    x = _input(L_BxHxWx1, hints_BxHxWx3, self.dtype)
    conv = _conv_factory(self.conv, self.dtype, self.kernel_grad_band)
    skips = []
    for level in range(3):
      x = self._block(conv, x, self.width << level)
      skips.append(x)
      x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))  # keyword: jax2onnx needs it
    x = self._block(conv, x, self.width << 3)
    # Classification at half resolution stops before the full-resolution decoder stage.
    last = 1 if self.num_bins and self.head_stride == 2 else 0
    for level in range(2, last - 1, -1):
      feats = self.width << level
      x = conv(feats, upsample=True)(x)
      x = self._block(conv, jnp.concatenate([x, skips[level]], axis=-1), feats)
    if self.num_bins:
      return conv(self.num_bins, window=1)(x).astype(jnp.float32)
    x = jnp.tanh(conv(2, window=1)(x))
    return x.astype(jnp.float32)  # ab / AB_SCALE, (B, H, W, 2)


@dataclasses.dataclass(frozen=True)
class Network:
  """A config's Flax module with the colorizers' input contract: L (B, H, W, 1) in [0, 100] and,
  for a hint-taking config, optional hints = (hint ab (B, H, W, 2) in Lab units, mask
  (B, H, W, 1) in {0, 1}); None means no hint anywhere. init and apply return what the module's
  do (the output is decoded by colorjax.decoding)."""

  config: ModelConfig
  module: nn.Module

  def _hint_channels(self, L_BxHxWx1, hints):
    from colorjax import hints as hints_lib  # pylint: disable=g-import-not-at-top

    if not self.config.hints:
      if hints is not None:
        raise ValueError('this model was trained without hints; it takes none')
      return None
    hint_ab, mask = hints_lib.no_hints(L_BxHxWx1) if hints is None else hints
    if hint_ab.shape != L_BxHxWx1.shape[:-1] + (2,) or mask.shape != L_BxHxWx1.shape:
      raise ValueError(
        f'hints must be ab {L_BxHxWx1.shape[:-1] + (2,)} and mask {L_BxHxWx1.shape}, got '
        f'{hint_ab.shape} and {mask.shape}'
      )
    return hints_lib.scaled_hints(jnp.asarray(hint_ab, jnp.float32), jnp.asarray(mask, jnp.float32))

  def init(self, rng, L_BxHxWx1, hints=None):
    return self.module.init(rng, L_BxHxWx1, self._hint_channels(L_BxHxWx1, hints))

  def apply(self, params, L_BxHxWx1, hints=None):
    return self.module.apply(params, L_BxHxWx1, self._hint_channels(L_BxHxWx1, hints))


def create_model(config: ModelConfig, *, kernel_grad_band=convs.KERNEL_GRAD_BAND) -> Network:
  """The network of a config (see Network); kernel_grad_band is convs.kernel_grad's band
  (bench.train times band 0)."""
  dtype = jnp.dtype(config.dtype)
  num_bins = quantize.NUM_BINS if config.loss == 'classification' else 0
  common = dict(num_bins=num_bins, head_stride=config.head_stride, dtype=dtype)
  band = kernel_grad_band
  if config.name == 'seed':
    module = SeedNet(conv=config.conv, kernel_grad_band=band, **common)
  elif config.name == 'unet':
    module = UNet(config.width, conv=config.conv, kernel_grad_band=band, **common)
  elif config.name == 'effnet_unet':
    from colorjax import effnet_unet  # pylint: disable=g-import-not-at-top

    factory = functools.partial(_conv_factory, config.conv, dtype, band)
    fast = resolve_conv(config.conv) == 'matmul'
    module = effnet_unet.EffNetUNet(factory, config.width, GROUPS, **common, fast_depthwise=fast)
  else:
    raise ValueError(f'unknown model {config.name!r}')
  return Network(config, module)


def conv_forms(config: ModelConfig, batch_size=1):
  """[(layer path, input shape, convs.Forms or 'upsample 2x2')] of a network's fast 3x3
  convolutions at config.image_size (empty unless its conv resolves to 'matmul')."""
  found = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, FastConv3x3) and context.method_name == '__call__':
      x = args[0]
      if module.upsample:
        how = 'upsample2 + 3x3 as one 2x2 convolution'
      else:
        kernel_shape = (3, 3, x.shape[-1], module.features)
        how = convs.forms(x.shape, kernel_shape, module.strides, module.kernel_grad_band)
      found.append(('/'.join(module.path), tuple(x.shape), how))
    return next_fun(*args, **kwargs)

  L = jax.ShapeDtypeStruct((batch_size, config.image_size, config.image_size, 1), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: create_model(config).init(jax.random.key(0), x), L)
  return found
