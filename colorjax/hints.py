"""User color hints (ideepcolor): sampled on device for training, or given on photos of any size."""

import dataclasses
import json
import math
import numbers
import pathlib
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import constants, lab


@dataclasses.dataclass(frozen=True)
class HintConfig:
  """ideepcolor's training protocol (Zhang et al. 2017; colorization-pytorch's
  `add_color_patches_rand_gt`).

  Attributes:
    continue_prob: points are added while a uniform draw is < continue_prob: a geometric number
      of points, P(n) = (1 - p) p^n, mean p / (1 - p) = 7 for 7/8; 1/8 of images get none.
    max_points: the static cap (shapes). Counts above it become max_points: the truncated tail
      has probability p^(max_points + 1) (1.2% for 7/8 and 32) and the mean drops to
      p (1 - p^max_points) / (1 - p) (6.90 instead of 7); see `truncated_prob`, `mean_points`.
    min_patch, max_patch: each patch's side is a uniform integer in [min_patch, max_patch].
    sigma_scale: each patch's top-left corner, per axis, is floor(N((n - P + 1) / 2, sigma)),
      sigma = (n - P + 1) * sigma_scale, clipped to [0, n - P] so the P x P patch fits (n: H or W).
      The floor makes the patch's center (corner + P / 2) average about n / 2.
  """

  continue_prob: float = 7 / 8
  max_points: int = 32
  min_patch: int = 1
  max_patch: int = 9
  sigma_scale: float = 0.25

  def __post_init__(self):
    if not 0.0 <= self.continue_prob < 1.0:
      raise ValueError(f'continue_prob must be in [0, 1), got {self.continue_prob}')
    if not isinstance(self.max_points, int) or self.max_points < 1:
      raise ValueError(f'max_points must be an int >= 1, got {self.max_points!r}')
    if not (
      isinstance(self.min_patch, int)
      and isinstance(self.max_patch, int)
      and 1 <= self.min_patch <= self.max_patch
    ):
      raise ValueError(
        f'need ints 1 <= min_patch <= max_patch, got {self.min_patch!r}, {self.max_patch!r}'
      )
    if not self.sigma_scale > 0.0:
      raise ValueError(f'sigma_scale must be > 0, got {self.sigma_scale}')

  @property
  def truncated_prob(self):
    """P(the geometric count exceeds max_points), mass moved onto max_points."""
    return self.continue_prob ** (self.max_points + 1)

  @property
  def mean_points(self):
    """The mean number of points after truncation."""
    p = self.continue_prob
    return p * (1 - p**self.max_points) / (1 - p)


class Points(NamedTuple):
  """Sampled patches: count (B,) int32; slots k >= count[b] are inactive.

  top_left (B, K, 2) int32 (row, col) and size (B, K) int32: patch k covers rows
  top_left[b, k, 0] + [0, size) and cols top_left[b, k, 1] + [0, size).
  """

  count: jax.Array
  top_left: jax.Array
  size: jax.Array


def _corners(rng, batch, height, width, size_BxK, sigma_scale):
  """ideepcolor's Gaussian top-left corners; slot k's draw depends only on (rng, k), so the
  first N points of a draw with more slots are the same points (nested evaluation sweeps)."""
  k = size_BxK.shape[1]
  z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), (batch, 2)), out_axes=1)(
    jnp.arange(k)
  )
  extent = jnp.array([height, width], jnp.float32) - size_BxK[..., None].astype(jnp.float32) + 1
  top_left = jnp.floor(extent / 2 + extent * sigma_scale * z)
  return jnp.clip(top_left, 0, extent - 1).astype(jnp.int32)


def _check_shape(ab, patch):
  if ab.ndim != 4 or ab.shape[-1] != 2:
    raise ValueError(f'expected ab of shape (B, H, W, 2), got {ab.shape}')
  if patch > min(ab.shape[1:3]):
    raise ValueError(f'patch side {patch} exceeds the image {ab.shape[1]}x{ab.shape[2]}')


def sample_points(rng, shape, config):
  """Draws the training protocol's patches for images of shape (B, H, W[, C]) (jit-able).

  Returns:
    Points with K = config.max_points slots.
  """
  batch, height, width = shape[:3]
  rng_count, rng_size, rng_pos = jax.random.split(rng, 3)
  go = jax.random.uniform(rng_count, (batch, config.max_points)) < config.continue_prob
  count = jnp.sum(jnp.cumprod(go, axis=1), axis=1).astype(jnp.int32)
  size = jax.random.randint(
    rng_size, (batch, config.max_points), config.min_patch, config.max_patch + 1, jnp.int32
  )
  return Points(count, _corners(rng_pos, batch, height, width, size, config.sigma_scale), size)


def paint(ab_BxHxWx2, points, window):
  """Hints from patches: each active patch holds its mean ground-truth ab (jit-able).

  Where patches overlap, the later slot overwrites the earlier (ideepcolor paints in order).

  Args:
    ab_BxHxWx2: ground-truth chroma in Lab units.
    points: the patches (Points).
    window: a static bound on the patch sides, <= H and W.

  Returns:
    hint_ab (B, H, W, 2) float32, zero outside the mask; mask (B, H, W, 1) float32 in {0, 1}.
  """
  ab = jnp.asarray(ab_BxHxWx2, jnp.float32)
  batch, height, width, _ = ab.shape
  if window > min(height, width):
    raise ValueError(f'window {window} exceeds the image {height}x{width}')
  k = points.size.shape[1]
  # Each patch is read and written through a window x window box that holds it and fits in the
  # image: work ~ B K window^2 instead of B K H W (a per-pixel test of every slot, into which XLA
  # also fuses the sampling, costs 25 ms at 16x128x128).
  start = jnp.minimum(points.top_left, jnp.array([height, width]) - window)  # (B, K, 2)
  y = start[:, :, 0, None] + jnp.arange(window)  # (B, K, window)
  x = start[:, :, 1, None] + jnp.arange(window)
  lo, hi = points.top_left[:, :, None, :], (points.top_left + points.size[..., None])[:, :, None]
  in_y, in_x = (y >= lo[..., 0]) & (y < hi[..., 0]), (x >= lo[..., 1]) & (x < hi[..., 1])
  active = jnp.arange(k)[None, :] < points.count[:, None]
  inside = in_y[..., :, None] & in_x[..., None, :] & active[..., None, None]  # (B, K, w, w)
  b = jnp.arange(batch)[:, None, None, None]
  yy, xx = y[..., :, None], x[..., None, :]
  # Masked sums of at most window^2 pixels: exact, unlike an integral image's differences.
  sums = jnp.sum(jnp.where(inside[..., None], ab[b, yy, xx], 0.0), axis=(2, 3))
  means_BxKx2 = sums / (points.size.astype(jnp.float32) ** 2)[..., None]
  # 1 + the last slot covering each pixel (0: none): a scatter-max is order-free, unlike a
  # scatter of values whose duplicates XLA may apply in any order.
  slot = jnp.where(inside, jnp.arange(1, k + 1)[None, :, None, None], 0)
  last = jnp.zeros((batch, height, width), jnp.int32).at[b, yy, xx].max(slot)
  hinted = last > 0
  hint_ab = jnp.take_along_axis(means_BxKx2, jnp.maximum(last - 1, 0).reshape(batch, -1, 1), 1)
  hint_ab = jnp.where(hinted[..., None], hint_ab.reshape(batch, height, width, 2), 0.0)
  return hint_ab, hinted[..., None].astype(jnp.float32)


def sample_hints(rng, ab_BxHxWx2, config):
  """Training hints: ideepcolor's random patches of mean ground-truth ab (pure, jit-able).

  Args:
    rng: a JAX PRNG key; the same key gives the same hints.
    ab_BxHxWx2: ground-truth chroma in Lab units.
    config: a static HintConfig (bind it with functools.partial under jit).

  Returns:
    (hint_ab (B, H, W, 2) in Lab units, zero where not hinted; mask (B, H, W, 1) in {0, 1}).
  """
  _check_shape(ab_BxHxWx2, config.max_patch)
  return paint(ab_BxHxWx2, sample_points(rng, ab_BxHxWx2.shape, config), config.max_patch)


def sample_points_at(rng, shape, num_points, patch_size, config=HintConfig()):
  """Exactly num_points patches of side patch_size at the protocol's Gaussian positions.

  Points are nested: for one rng, the first N of a draw of M > N points are the N-point draw.
  """
  batch, height, width = shape[:3]
  size = jnp.full((batch, num_points), patch_size, jnp.int32)
  count = jnp.full((batch,), num_points, jnp.int32)
  return Points(count, _corners(rng, batch, height, width, size, config.sigma_scale), size)


def sample_hints_at(rng, ab_BxHxWx2, num_points, patch_size=6, config=HintConfig()):
  """Evaluation hints: exactly num_points patches of side patch_size (ideepcolor evaluates 6x6).

  Args:
    rng: a JAX PRNG key, fixed for reproducible evaluation.
    ab_BxHxWx2: ground-truth chroma in Lab units.
    num_points, patch_size: static ints (num_points >= 0).
    config: only sigma_scale is used.

  Returns:
    (hint_ab, mask) as sample_hints.
  """
  if num_points < 0:
    raise ValueError(f'num_points must be >= 0, got {num_points}')
  _check_shape(ab_BxHxWx2, patch_size)
  if num_points == 0:
    return no_hints(ab_BxHxWx2.shape[:-1] + (1,))
  points = sample_points_at(rng, ab_BxHxWx2.shape, num_points, patch_size, config)
  return paint(ab_BxHxWx2, points, patch_size)


def scaled_hints(hint_ab, mask):
  """The hint channels as ideepcolor feeds them: [hint_ab / AB_MAX, mask - 0.5], (..., 3).

  Unhinted pixels read (0, 0, -0.5), so a neutral hint (ab = 0) stays distinct from no hint.
  """
  return jnp.concatenate([hint_ab / constants.AB_MAX, mask - 0.5], axis=-1)


def network_inputs(L_BxHxWx1, hint_ab, mask):
  """The network's input with hints: [L * L_INPUT_SCALE, hint_ab / AB_MAX, mask - 0.5], (..., 4).

  L is scaled as the automatic colorizer's input (L / 100), not ideepcolor's (L - 50) / 100.
  """
  return jnp.concatenate([L_BxHxWx1 * constants.L_INPUT_SCALE, scaled_hints(hint_ab, mask)], -1)


def no_hints(shape_or_L):
  """Zero hint ab (..., 2) and zero mask (..., 1) for L (..., 1) or its shape: no user input."""
  shape = tuple(shape_or_L.shape if hasattr(shape_or_L, 'shape') else shape_or_L)
  if not shape or shape[-1] != 1:
    raise ValueError(f'expected the shape of L (..., 1), got {shape}')
  return jnp.zeros(shape[:-1] + (2,), jnp.float32), jnp.zeros(shape, jnp.float32)


# Hints on photos: JSON schema {"hints": [{"x", "y", exactly one of "color" ('#rrggbb') or
# "ab" ([a, b]), optional "radius" (photo pixels, null or absent: the default)}]}.
_FIELDS = ('x', 'y', 'color', 'ab', 'radius')
_HEX = re.compile(r'#[0-9a-fA-F]{6}')


def _number(name, value):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f'field {name!r} must be a finite number, got {value!r}')
  return float(value)


@dataclasses.dataclass(frozen=True)
class Hint:
  """One user hint on a photo.

  Attributes:
    x, y: column and row in photo pixels (floats allowed). Pixel (i, j) covers [i, i + 1) x
      [j, j + 1), so integer coordinates are pixel centers; inside: 0 <= x <= W - 1,
      0 <= y <= H - 1.
    color: sRGB '#rrggbb' (only its a, b are used; the photo keeps its own L), or
    ab: (a, b) in Lab units within [-AB_MAX, AB_MAX]; exactly one of color and ab.
    radius: half the patch's side in photo pixels; None: a 3x3 patch at the network's size
      whatever the photo's size (a small patch, inside the 1..9 sides training draws).
  """

  x: float
  y: float
  color: str | None = None
  ab: tuple[float, float] | None = None
  radius: float | None = None

  def __post_init__(self):
    _number('x', self.x)
    _number('y', self.y)
    if (self.color is None) == (self.ab is None):
      raise ValueError("give exactly one of fields 'color' and 'ab'")
    if self.color is not None and not (isinstance(self.color, str) and _HEX.fullmatch(self.color)):
      raise ValueError(f"field 'color' must be '#rrggbb', got {self.color!r}")
    if self.ab is not None:
      if isinstance(self.ab, (str, bytes)) or not hasattr(self.ab, '__len__') or len(self.ab) != 2:
        raise ValueError(f"field 'ab' must be a pair [a, b], got {self.ab!r}")
      ab = tuple(_number('ab', v) for v in self.ab)
      if max(abs(v) for v in ab) > constants.AB_MAX:
        raise ValueError(f"field 'ab' must lie in [-{constants.AB_MAX:g}, {constants.AB_MAX:g}]")
      object.__setattr__(self, 'ab', ab)
    if self.radius is not None and _number('radius', self.radius) < 0:
      raise ValueError(f"field 'radius' must be >= 0, got {self.radius!r}")

  @property
  def ab_value(self):
    """(a, b) of the hint in Lab units: the given pair, or that of the sRGB color."""
    if self.ab is not None:
      return self.ab
    rgb = np.array([int(self.color[i : i + 2], 16) for i in (1, 3, 5)], np.float32) / 255.0
    return tuple(float(v) for v in lab.rgb_to_lab(rgb)[1:])


def _check_inside(hints, width, height):
  for i, h in enumerate(hints):
    if not (0 <= h.x <= width - 1 and 0 <= h.y <= height - 1):
      raise ValueError(f'hint {i} at (x={h.x:g}, y={h.y:g}) is outside the {width}x{height} photo')


def rasterize(hints, photo_height, photo_width, size):
  """Hints in photo pixels -> the hint channels of the photo squashed to size x size.

  The hint's position (x + 0.5, y + 0.5) scales by (size / W, size / H); its patch is centered
  on the network pixel holding that position and spans 2 k + 1 pixels per axis with
  k = floor(radius * size / W) (or / H), the odd count nearest the radius' diameter, at least
  one pixel; k = 1 (3x3) for radius None. Patches are clipped to the image; later hints
  overwrite earlier ones.

  Returns:
    (hint_ab (size, size, 2), mask (size, size, 1)) float32 NumPy arrays.
  """
  _check_inside(hints, photo_width, photo_height)
  hint_ab = np.zeros((size, size, 2), np.float32)
  mask = np.zeros((size, size, 1), np.float32)
  for h in hints:
    col, row = int((h.x + 0.5) * size / photo_width), int((h.y + 0.5) * size / photo_height)
    if h.radius is None:
      kx = ky = 1
    else:
      kx, ky = (int(math.floor(h.radius * size / n)) for n in (photo_width, photo_height))
    rows = slice(max(row - ky, 0), row + ky + 1)
    cols = slice(max(col - kx, 0), col + kx + 1)
    hint_ab[rows, cols] = h.ab_value
    mask[rows, cols] = 1.0
  return hint_ab, mask


def parse_hints(obj):
  """Validates a hints document (schema above) -> list[Hint]; one-line ValueErrors name the
  hint's index and the field."""
  if not isinstance(obj, dict) or set(obj) != {'hints'} or not isinstance(obj['hints'], list):
    raise ValueError('expected an object {"hints": [...]} with no other keys')
  hints = []
  for i, item in enumerate(obj['hints']):
    if not isinstance(item, dict):
      raise ValueError(f'hint {i}: expected an object, got {item!r}')
    unknown = sorted(set(item) - set(_FIELDS), key=str)
    if unknown:
      raise ValueError(f'hint {i}: unknown field(s) {", ".join(map(repr, unknown))}')
    for name in ('x', 'y'):
      if name not in item:
        raise ValueError(f'hint {i}: missing field {name!r}')
    try:
      hints.append(Hint(**item))
    except ValueError as e:
      raise ValueError(f'hint {i}: {e}') from None
  return hints


def _plain(v):
  """A JSON-serializable Python int or float (NumPy scalars are not)."""
  return int(v) if isinstance(v, numbers.Integral) else float(v)


def dump_hints(hints):
  """list[Hint] -> the JSON document parse_hints reads (round trip)."""
  out = []
  for h in hints:
    item = {'x': _plain(h.x), 'y': _plain(h.y)}
    item.update({'color': h.color} if h.color is not None else {'ab': list(h.ab)})
    if h.radius is not None:
      item['radius'] = _plain(h.radius)
    out.append(item)
  return {'hints': out}


def load_hints(path, photo_size=None):
  """Reads and validates a hints JSON file; with photo_size=(W, H), checks points are inside."""
  path = pathlib.Path(path)
  try:
    text = path.read_text()
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: hints file not found') from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: bad JSON at line {e.lineno} column {e.colno}: {e.msg}') from None
  try:
    hints = parse_hints(obj)
    if photo_size is not None:
      _check_inside(hints, *photo_size)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None
  return hints


def sidecar_path(image_path):
  """The hints file beside an image: dir/NAME.jpg -> dir/NAME.hints.json."""
  return pathlib.Path(image_path).with_suffix('.hints.json')
