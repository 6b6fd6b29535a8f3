"""Photos of any size: reading, full-resolution L, the network's square input, and the join of
the network's ab, upsampled, to the photo's own L (chroma reduced where needed to stay in sRGB)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from colorjax import constants, image_io, lab

_PIXELS_PER_CHUNK = 1 << 20  # full-resolution pixels joined at a time: bounds memory for any photo


def read_image(image, *, max_pixels=None, max_bytes=None):
  """A path, bytes, PIL image or array -> uint8 gray (H, W) or RGB (H, W, 3), by image_io."""
  return image_io.read_image(image, max_pixels=max_pixels, max_bytes=max_bytes)


_GRAY8_TO_L = lab.rgb8_to_lab(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1))[:, 0]


def lightness(image_u8):
  """Full-resolution L (H, W) float32 of a uint8 gray or RGB image, converted in row chunks."""
  if image_u8.ndim == 2:
    return _GRAY8_TO_L[image_u8]
  L = np.empty(image_u8.shape[:2], np.float32)
  rows = max(1, _PIXELS_PER_CHUNK // L.shape[1])
  for r in range(0, L.shape[0], rows):
    L[r : r + rows] = lab.rgb8_to_lab(image_u8[r : r + rows])[..., 0]
  return L


def model_input(image_u8, size):
  """L (size, size) of the photo squashed to size x size with an antialiasing (Lanczos) filter."""
  pil = Image.fromarray(image_u8)
  small = np.asarray(pil.resize((size, size), Image.LANCZOS, reducing_gap=3.0))
  return lightness(small)


def _bilinear_taps(n_out, n_in):
  """Source indices and weights of half-pixel bilinear resampling (as jax.image.resize)."""
  x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
  x = np.clip(x, 0, n_in - 1)
  x0 = np.floor(x).astype(np.int32)
  x1 = np.minimum(x0 + 1, n_in - 1)
  return x0, x1, (x - x0).astype(np.float32)


def upsample_rows(ab_hxwx2, height, width, r0, r1):
  """Rows r0:r1 of ab (h, w, 2) bilinearly resized to (height, width, 2), as join computes them."""
  y0, y1, wy = (t[r0:r1] for t in _bilinear_taps(height, ab_hxwx2.shape[0]))
  wide = _widen(jnp.asarray(ab_hxwx2, jnp.float32), *_bilinear_taps(width, ab_hxwx2.shape[1]))
  return np.asarray(_lerp_rows(wide, y0, y1, wy))


def _lerp_rows(ab_hxWx2, y0, y1, wy):
  """Rows of ab interpolated between source rows y0 and y1 with weights wy."""
  return ab_hxWx2[y0] * (1 - wy)[:, None, None] + ab_hxWx2[y1] * wy[:, None, None]


def _linear_rgb(L, a, b):
  """Unclipped linear R, G, B of Lab pixels (jnp, any shape), as elementwise sums (fusable)."""
  fy = (L + 16.0) / 116.0
  xyz = [lab._f_inv(f, jnp) for f in (fy + a / 500.0, fy, fy - b / 200.0)]  # pylint: disable=protected-access
  return [sum(float(m[i]) * xyz[i] for i in range(3)) for m in _RGB_FROM_XYZN]


_RGB_FROM_XYZN = (lab.RGB_FROM_XYZ * lab.D65_WHITE[None, :]).astype(np.float32)  # rows: R, G, B


def _inside(rgb):
  ok = [(c >= -1e-4) & (c <= 1 + 1e-4) for c in rgb]  # float32 slack
  return ok[0] & ok[1] & ok[2]


def in_gamut(L_N, ab_Nx2):
  """Whether each Lab pixel lies inside sRGB (jnp; float32 slack of 1e-4)."""
  return _inside(_linear_rgb(L_N, ab_Nx2[:, 0], ab_Nx2[:, 1]))


def fit_gamut(L_N, ab_Nx2, iterations=8):
  """Scales the chroma of out-of-sRGB pixels down to the gamut's edge, keeping L and hue (jnp).

  Clipping RGB instead would change the lightness; with this the output keeps the input's L.
  ab is first clamped to [-AB_MAX, AB_MAX]; the edge is found by bisection on the chroma scale
  (to 1/2**iterations of it). Pixels already inside are unchanged.
  """
  ab_Nx2 = jnp.clip(ab_Nx2, -constants.AB_MAX, constants.AB_MAX)

  def bisect(_, lo_hi):
    lo, hi = lo_hi
    mid = (lo + hi) / 2
    ok = in_gamut(L_N, ab_Nx2 * mid[:, None])
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  ones = jnp.ones(L_N.shape, jnp.float32)
  lo, _ = jax.lax.fori_loop(0, iterations, bisect, (0 * ones, ones))  # scale 0 (gray) is inside
  return ab_Nx2 * jnp.where(in_gamut(L_N, ab_Nx2), ones, lo)[:, None]


# sRGB companding to 8 bits as a lookup table on linear values in steps of 2**-15: the code of
# round(linear * 2**15) is off by at most 0.06 of a code (the curve's steepest slope is 3300
# codes per unit), so it differs from rounding the exact curve only at a code's rounding edge.
# Indices above 2**15 (uint16) mark pixels outside sRGB, which are then fitted.
_LINEAR_STEPS = 1 << 15
_OUTSIDE = np.uint16(0xFFFF)
_LINEAR_TO_SRGB8 = np.zeros(1 << 16, np.uint8)
_LINEAR_TO_SRGB8[: _LINEAR_STEPS + 1] = np.round(
  lab.linear_to_srgb(np.arange(_LINEAR_STEPS + 1, dtype=np.float64) / _LINEAR_STEPS) * 255.0
)
# sRGB decoding of 8-bit codes above the linear segment as a degree-7 polynomial (max error 5e-6
# over the 256 codes; L within 0.01 of `lightness`): XLA vectorizes it, unlike a table gather.
_DECODE_POLY = np.polynomial.polynomial.polyfit(
  np.arange(11, 256) / 255.0, lab.srgb_to_linear(np.arange(11, 256) / 255.0), 7
).astype(np.float32)
_Y_FROM_RGB = (lab.XYZ_FROM_RGB[1] / lab.D65_WHITE[1]).astype(np.float32)


def _table_index(rgb):
  """Linear R, G, B -> indices into _LINEAR_TO_SRGB8, uint16 (..., 3)."""
  to_index = lambda c: jnp.round(jnp.clip(c, 0.0, 1.0) * _LINEAR_STEPS).astype(jnp.uint16)
  return jnp.stack([to_index(c) for c in rgb], axis=-1)


def _rows_lightness(source):
  """L (R, W) of float32 L rows, uint8 gray rows (R, W) or uint8 RGB rows (R, W, 3) (jnp)."""
  if source.dtype != jnp.uint8:
    return source
  channels = [source] if source.ndim == 2 else [source[..., c] for c in range(3)]
  linear = []
  for code in channels:
    c = code.astype(jnp.float32) * (1 / 255)
    poly = functools.reduce(
      lambda acc, k: acc * c + float(k), _DECODE_POLY[-2::-1], _DECODE_POLY[-1]
    )
    linear.append(jnp.where(code <= 10, c / 12.92, poly))  # code 10 / 255 < 0.04045 < 11 / 255
  y = linear[0] if len(linear) == 1 else sum(float(w) * v for w, v in zip(_Y_FROM_RGB, linear))
  # f(y) = cbrt(y) above EPSILON: exp(log(y) / 3) vectorizes, XLA's cbrt does not.
  cube_root = jnp.exp(jnp.log(jnp.maximum(y, lab._EPSILON)) / 3)  # pylint: disable=protected-access
  return jnp.where(y > lab._EPSILON, 116.0 * cube_root - 16.0, y * (116.0 * lab._KAPPA_LINEAR))  # pylint: disable=protected-access


@jax.jit
def _widen(ab_hxwx2, x0, x1, wx):
  """ab (h, w, 2) upsampled to (h, W, 2) along rows only: once per photo, chunks share it."""
  return ab_hxwx2[:, x0] * (1 - wx)[None, :, None] + ab_hxwx2[:, x1] * wx[None, :, None]


@jax.jit
def _join_rows(source, ab_hxWx2, y0, y1, wy):
  """Table indices (R, W, 3) uint16 of one chunk of rows; _OUTSIDE in red: outside sRGB."""
  ab = jnp.clip(_lerp_rows(ab_hxWx2, y0, y1, wy), -constants.AB_MAX, constants.AB_MAX)
  rgb = _linear_rgb(_rows_lightness(source), ab[..., 0], ab[..., 1])
  index = _table_index(rgb)
  return index.at[..., 0].set(jnp.where(_inside(rgb), index[..., 0], _OUTSIDE))


@jax.jit
def _join_rows_fitted(source, ab_hxWx2, y0, y1, wy):
  """As _join_rows with every pixel gamut-fitted: for chunks that are mostly outside sRGB."""
  ab = _lerp_rows(ab_hxWx2, y0, y1, wy)
  L = _rows_lightness(source)
  ab = fit_gamut(L.reshape(-1), ab.reshape(-1, 2)).reshape(ab.shape)
  return _table_index(_linear_rgb(L, ab[..., 0], ab[..., 1]))


@jax.jit
def _fitted_index(L_N, ab_Nx2):
  ab_Nx2 = fit_gamut(L_N, ab_Nx2)
  return _table_index(_linear_rgb(L_N, ab_Nx2[:, 0], ab_Nx2[:, 1]))


def _padded(x, size):
  out = np.zeros((size,) + x.shape[1:], x.dtype)
  out[: len(x)] = x
  return out


def _pow2(n, least):
  return 1 << max(least, (n - 1).bit_length())


def _round_up(n, multiple):
  return -(-n // multiple) * multiple


def join(source, ab_small):
  """Full-resolution L and model-size ab (h, w, 2) -> RGB uint8 (H, W, 3) with that L.

  Args:
    source: float32 L (H, W) in [0, 100], or the uint8 photo itself, gray (H, W) or RGB
      (H, W, 3), whose L is taken (the same as `lightness`, computed chunk by chunk).
    ab_small: ab in Lab units (h, w, 2), upsampled bilinearly to (H, W).

  Works on chunks of whole rows in one jitted function (upsampling, Lab -> linear RGB, gamut
  test, sRGB encoding by table lookup), so memory stays bounded for any photo. Chunks are padded
  to 64 rows and 128 columns: few compiled shapes. Only the pixels outside sRGB go through the
  (costlier) gamut fit, compacted unless they are most of the chunk.
  """
  source = np.asarray(source)
  if source.dtype != np.uint8:
    source = source.astype(np.float32, copy=False)
  if source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[-1] != 3):
    raise ValueError(f'expected L (H, W) or a uint8 photo (H, W[, 3]), got {source.shape}')
  height, width = source.shape[:2]
  ab_small = np.asarray(ab_small, np.float32)
  padded_width = _round_up(width, 128)
  rows = min(_round_up(height, 64), max(1, _PIXELS_PER_CHUNK // padded_width))
  ys = _bilinear_taps(height, ab_small.shape[0])
  xs = [_padded(t, padded_width) for t in _bilinear_taps(width, ab_small.shape[1])]
  ab_wide = _widen(ab_small, *xs)
  rgb = np.empty((height, width, 3), np.uint8)
  chunk = np.zeros((rows, padded_width) + source.shape[2:], source.dtype)
  for r in range(0, height, rows):
    n = min(rows, height - r)
    chunk[:n, :width] = source[r : r + n]
    y0, y1, wy = (_padded(t[r : r + n], rows) for t in ys)
    index = np.asarray(_join_rows(chunk, ab_wide, y0, y1, wy))[:n, :width]
    np.take(_LINEAR_TO_SRGB8, index, out=rgb[r : r + n])
    out = np.flatnonzero(index[..., 0] == _OUTSIDE)
    if out.size > n * width // 3:  # mostly outside: fitting all in XLA beats compacting
      index = np.asarray(_join_rows_fitted(chunk, ab_wide, y0, y1, wy))[:n, :width]
      np.take(_LINEAR_TO_SRGB8, index, out=rgb[r : r + n])
    elif out.size:
      row, col = np.divmod(out, width)
      ab_rows = (
        ab_small[y0[:n]] * (1 - wy[:n])[:, None, None] + ab_small[y1[:n]] * wy[:n, None, None]
      )
      x0, x1, wx = (t[col] for t in xs)
      ab = ab_rows[row, x0] * (1 - wx)[:, None] + ab_rows[row, x1] * wx[:, None]
      pixels = chunk[row, col]
      if pixels.dtype != np.uint8:
        L = pixels
      else:
        L = _GRAY8_TO_L[pixels] if pixels.ndim == 1 else lab.rgb8_to_lab(pixels)[:, 0]
      size = _pow2(out.size, 10)
      fitted = np.asarray(_fitted_index(_padded(L, size), _padded(ab, size)))[: out.size]
      rgb[r + row, col] = _LINEAR_TO_SRGB8[fitted]
  return rgb
