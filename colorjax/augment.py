"""The report's augmentation (rotation, zoom, horizontal flip): a pure, jit-able device function."""

import dataclasses
import math

import jax
import jax.numpy as jnp

from colorjax import records

FILL_MODES = ('nearest', 'reflect', 'constant')


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """One random affine transform per example, applied identically to L and ab.

  Attributes:
    rotation_deg: the angle is drawn uniformly in [-rotation_deg, rotation_deg] degrees;
      positive angles turn the content counterclockwise (np.rot90's direction).
    zoom: the magnification is drawn uniformly in [1 - zoom, 1 + zoom] (> 1 enlarges the
      content, about the image center). Keras' ImageDataGenerator(zoom_range=zoom) draws the
      sampling step in the same range instead, i.e. the reciprocal magnification, and draws it
      per axis; here one isotropic factor keeps the aspect ratio.
    flip: mirror left-right with probability 1/2.
    fill: how samples outside the image are filled: 'nearest' (edge value, Keras' default and
      the report's), 'reflect' (half-sample mirror, scipy's 'reflect') or 'constant' (zeros: black
      and neutral, interpolated towards the edge like scipy's 'grid-constant').
  """

  rotation_deg: float = 20.0
  zoom: float = 0.2
  flip: bool = True
  fill: str = 'nearest'

  def __post_init__(self):
    if self.fill not in FILL_MODES:
      raise ValueError(f'fill must be one of {FILL_MODES}, got {self.fill!r}')
    if not 0.0 <= self.zoom < 1.0:
      raise ValueError(f'zoom must be in [0, 1), got {self.zoom}')
    if not 0.0 <= self.rotation_deg <= 180.0:
      raise ValueError(f'rotation_deg must be in [0, 180], got {self.rotation_deg}')

  @classmethod
  def none(cls):
    """The evaluation setting: inputs pass through unchanged."""
    return cls(rotation_deg=0.0, zoom=0.0, flip=False)

  @property
  def is_identity(self):
    return self.rotation_deg == 0.0 and self.zoom == 0.0 and not self.flip


def prepare_batch(batch):
  """{'L': uint8 (B,H,W,1), 'ab': int8 (B,H,W,2)} codes -> float32 L, ab in Lab units."""
  L_q, ab_q = batch['L'], batch['ab']
  if L_q.ndim != 4 or L_q.shape[-1] != 1 or ab_q.shape != L_q.shape[:-1] + (2,):
    raise ValueError(f'expected L (B, H, W, 1) and ab (B, H, W, 2), got {L_q.shape}, {ab_q.shape}')
  return records.dequantize(L_q, ab_q, xp=jnp)


def sample_params(rng, batch_size, config):
  """Draws per-example (angle in radians, magnification, flip as +-1.0), each of shape (B,)."""
  rng_angle, rng_zoom, rng_flip = jax.random.split(rng, 3)
  max_angle = math.radians(config.rotation_deg)
  angle = jax.random.uniform(rng_angle, (batch_size,), jnp.float32, -max_angle, max_angle)
  scale = jax.random.uniform(
    rng_zoom, (batch_size,), jnp.float32, 1.0 - config.zoom, 1.0 + config.zoom
  )
  if config.flip:
    flip = jnp.where(jax.random.bernoulli(rng_flip, 0.5, (batch_size,)), -1.0, 1.0)
  else:
    flip = jnp.ones((batch_size,), jnp.float32)
  return angle, scale, flip.astype(jnp.float32)


def sampling_matrix(angle, scale, flip):
  """The 2x2 matrix taking an output offset (dy, dx) from the center to the input offset."""
  cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
  # Inverse rotation and zoom, after mirroring the output's x offset when flip == -1.
  return jnp.array([[cos, sin * flip], [-sin, cos * flip]])


def _fold(t, n, fill):
  """Maps sample positions into the range whose edge-clamped bilinear value equals `fill`'s.

  Continuous in t, so rounding differences between recomputations cannot make a jump.
  """
  if fill == 'reflect':  # half-sample symmetric about -0.5 and n - 0.5: a triangle wave
    t = jnp.mod(t + 0.5, 2.0 * n)
    t = jnp.where(t < n, t, 2.0 * n - t) - 0.5
  if fill == 'constant':  # one ring of zeros in front of the image: position + 1
    return jnp.clip(t + 1.0, 0.0, n + 1.0)
  return jnp.clip(t, 0.0, n - 1.0)


def transform_image(image_HxWxC, angle, scale, flip, fill='nearest'):
  """Rotates (radians, counterclockwise), zooms and mirrors one image about its center.

  Bilinear sampling: output[p] = image[c + M (p - c)], M = sampling_matrix(angle, scale, flip),
  c = ((H - 1) / 2, (W - 1) / 2); the same convention as scipy.ndimage.affine_transform(order=1).
  """
  h, w, c = image_HxWxC.shape
  center = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
  m = sampling_matrix(angle, scale, flip)
  yy, xx = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32) - center[0],
    jnp.arange(w, dtype=jnp.float32) - center[1],
    indexing='ij',
  )
  y = _fold(m[0, 0] * yy + m[0, 1] * xx + center[0], h, fill)
  x = _fold(m[1, 0] * yy + m[1, 1] * xx + center[1], w, fill)
  if fill == 'constant':  # zeros: 1 row/col before, 2 after (the second tap of the last one)
    padded = jnp.pad(image_HxWxC, ((1, 2), (1, 2), (0, 0)))
  else:  # one replicated row/col after, for the second tap of the last position
    padded = jnp.pad(image_HxWxC, ((0, 1), (0, 1), (0, 0)), mode='edge')
  hp, wp = padded.shape[:2]
  # Each tap gathers its own (row, col) along with the pixel, and weights come from those
  # gathered positions (tent functions). XLA may recompute y and x in several fusions with
  # different rounding (FMA contraction); weights computed from floor(y) in one fusion and
  # indices from floor(y) in another would pick the wrong pixel wherever y is within 1e-6 of
  # an integer. Tent weights of the gathered positions stay right for any such copy of y.
  rows, cols = jnp.meshgrid(
    jnp.arange(hp, dtype=jnp.float32), jnp.arange(wp, dtype=jnp.float32), indexing='ij'
  )
  table = jnp.concatenate([padded.astype(jnp.float32), rows[..., None], cols[..., None]], -1)
  table = table.reshape(hp * wp, c + 2)
  y0 = jnp.clip(jnp.floor(y).astype(jnp.int32), 0, hp - 2)
  x0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, wp - 2)
  out = jnp.zeros((h, w, c), jnp.float32)
  for dy in (0, 1):
    for dx in (0, 1):
      tap = table[(y0 + dy) * wp + (x0 + dx)]
      weight = jnp.maximum(1.0 - jnp.abs(y - tap[..., c]), 0.0) * jnp.maximum(
        1.0 - jnp.abs(x - tap[..., c + 1]), 0.0
      )
      out = out + weight[..., None] * tap[..., :c]
  return out


def augment_batch(rng, L_BxHxWx1, ab_BxHxWx2, config):
  """Applies one random transform per example to L and ab alike (float32 Lab units, jit-able).

  Args:
    rng: a JAX PRNG key, e.g. the train step's key; the same key gives the same transforms.
    L_BxHxWx1: lightness in [0, 100].
    ab_BxHxWx2: chroma in Lab units.
    config: a static AugmentConfig (bind it with functools.partial under jit).

  Returns:
    (L, ab) float32 with the input shapes; the inputs themselves when config.is_identity.
  """
  if L_BxHxWx1.ndim != 4 or L_BxHxWx1.shape[-1] != 1:
    raise ValueError(f'expected L of shape (B, H, W, 1), got {L_BxHxWx1.shape}')
  if ab_BxHxWx2.shape != L_BxHxWx1.shape[:-1] + (2,):
    raise ValueError(f'expected ab of shape {L_BxHxWx1.shape[:-1] + (2,)}, got {ab_BxHxWx2.shape}')
  if config.is_identity:
    return L_BxHxWx1, ab_BxHxWx2
  params = sample_params(rng, L_BxHxWx1.shape[0], config)
  Lab = jnp.concatenate([L_BxHxWx1, ab_BxHxWx2], axis=-1).astype(jnp.float32)
  out = jax.vmap(transform_image, in_axes=(0, 0, 0, 0, None))(Lab, *params, config.fill)
  return out[..., :1], out[..., 1:]
