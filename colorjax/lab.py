"""sRGB <-> CIELAB (D65, 2 degree observer) for NumPy and JAX arrays of shape (..., 3)."""

import numpy as np

# Linear sRGB -> XYZ, the matrix scikit-image uses (derived from the sRGB primaries and D65).
XYZ_FROM_RGB = np.array(
  [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
  dtype=np.float64,
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float64)

# CIE constants: f(t) = cbrt(t) above EPSILON, linear below (continuous at the joint).
_EPSILON = 216.0 / 24389.0
_KAPPA_LINEAR = 24389.0 / 27.0 / 116.0  # slope of f below EPSILON
_DELTA = 6.0 / 29.0


def _xp(x):
  """NumPy for NumPy inputs, jax.numpy for anything else (JAX arrays, tracers)."""
  if isinstance(x, (np.ndarray, np.generic, list, tuple, float, int)):
    return np
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  return jnp


def _check(x, xp):
  x = xp.asarray(x, dtype=xp.float32)
  if x.ndim < 1 or x.shape[-1] != 3:
    raise ValueError(f'expected an array of shape (..., 3), got {x.shape}')
  return x


def srgb_to_linear(c, xp=np):
  """IEC 61966-2-1 decoding of companded sRGB values in [0, 1]."""
  safe = xp.maximum(c, 0.04045)  # keeps the unused branch finite for gradients
  return xp.where(c <= 0.04045, c / 12.92, ((safe + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c, xp=np):
  """IEC 61966-2-1 encoding of linear values; input clipped to [0, 1]."""
  c = xp.clip(c, 0.0, 1.0)
  safe = xp.maximum(c, 0.0031308)
  return xp.where(c <= 0.0031308, c * 12.92, 1.055 * safe ** (1.0 / 2.4) - 0.055)


def _f(t, xp):
  safe = xp.maximum(t, _EPSILON)
  return xp.where(t > _EPSILON, xp.cbrt(safe), t * _KAPPA_LINEAR + 16.0 / 116.0)


def _f_inv(f, xp):
  safe = xp.maximum(f, _DELTA)
  return xp.where(f > _DELTA, safe**3, (f - 16.0 / 116.0) / _KAPPA_LINEAR)


def linear_rgb_to_lab(lin, xp=np):
  """Linear RGB (..., 3) -> Lab; the shared tail of rgb_to_lab and the 8-bit fast path."""
  m = xp.asarray((XYZ_FROM_RGB / D65_WHITE[:, None]).T, dtype=xp.float32)
  xyz = lin @ m
  f = _f(xyz, xp)
  L = 116.0 * f[..., 1] - 16.0
  a = 500.0 * (f[..., 0] - f[..., 1])
  b = 200.0 * (f[..., 1] - f[..., 2])
  return xp.stack([L, a, b], axis=-1)


def rgb_to_lab(rgb):
  """sRGB in [0, 1] of shape (..., 3) -> CIELAB float32 (L in [0, 100]).

  Works on NumPy arrays (returns NumPy) and JAX arrays (jit-able, differentiable).
  """
  xp = _xp(rgb)
  rgb = _check(rgb, xp)
  return linear_rgb_to_lab(srgb_to_linear(rgb, xp), xp)


def lab_to_rgb(lab):
  """CIELAB (..., 3) -> sRGB float32 clipped to [0, 1]; finite for any finite input."""
  xp = _xp(lab)
  lab = _check(lab, xp)
  fy = (lab[..., 0] + 16.0) / 116.0
  fx = fy + lab[..., 1] / 500.0
  fz = xp.maximum(fy - lab[..., 2] / 200.0, 0.0)  # z < 0 is out of gamut (as scikit-image)
  xyz = _f_inv(xp.stack([fx, fy, fz], axis=-1), xp)
  m = xp.asarray((RGB_FROM_XYZ * D65_WHITE[None, :]).T, dtype=xp.float32)
  return linear_to_srgb(xyz @ m, xp).astype(xp.float32)


# 8-bit fast path for data preparation: the companding becomes a 256-entry lookup table, and
# the rest runs in float32 over chunks of pixels in small reused buffers (whole-image float
# temporaries cost more in page faults and cache misses than the arithmetic). Same numbers as
# rgb_to_lab within ~2e-4 for all 2^24 colors.
SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
_XYZN_FROM_RGB = (XYZ_FROM_RGB / D65_WHITE[:, None]).astype(np.float32)  # rows: X/Xn, Y/Yn, Z/Zn
_CHUNK = 8192  # pixels per step: each float32 buffer is 32 KiB


def rgb8_to_lab(rgb_u8):
  """uint8 sRGB (..., 3) -> Lab float32 with NumPy; same numbers as rgb_to_lab(rgb / 255)."""
  rgb_u8 = np.asarray(rgb_u8)
  if rgb_u8.dtype != np.uint8 or rgb_u8.ndim < 1 or rgb_u8.shape[-1] != 3:
    raise ValueError(f'expected uint8 (..., 3), got {rgb_u8.dtype} {rgb_u8.shape}')
  flat = rgb_u8.reshape(-1, 3)
  out = np.empty(flat.shape, np.float32)
  m = min(_CHUNK, flat.shape[0])
  lin = np.empty((3, m), np.float32)
  f = np.empty((3, m), np.float32)  # f(X/Xn), f(Y/Yn), f(Z/Zn)
  t = np.empty(m, np.float32)
  tmp = np.empty(m, np.float32)
  low = np.empty(m, bool)
  for start in range(0, flat.shape[0], _CHUNK):
    rgb = flat[start : start + _CHUNK]
    k = rgb.shape[0]
    if k < m:  # the last, shorter chunk
      lin, f, t, tmp, low = lin[:, :k], f[:, :k], t[:k], tmp[:k], low[:k]
    for c in range(3):
      np.take(SRGB8_TO_LINEAR, rgb[:, c], out=lin[c])
    for i in range(3):
      np.multiply(lin[0], _XYZN_FROM_RGB[i, 0], out=t)
      for c in (1, 2):
        np.multiply(lin[c], _XYZN_FROM_RGB[i, c], out=tmp)
        t += tmp
      np.cbrt(t, out=f[i])
      np.less_equal(t, np.float32(_EPSILON), out=low)
      np.multiply(t, np.float32(_KAPPA_LINEAR), out=tmp)
      tmp += np.float32(16.0 / 116.0)
      np.copyto(f[i], tmp, where=low)
    lab = out[start : start + k]
    np.multiply(f[1], np.float32(116.0), out=tmp)
    tmp -= np.float32(16.0)
    lab[:, 0] = tmp
    np.subtract(f[0], f[1], out=tmp)
    tmp *= np.float32(500.0)
    lab[:, 1] = tmp
    np.subtract(f[1], f[2], out=tmp)
    tmp *= np.float32(200.0)
    lab[:, 2] = tmp
  return out.reshape(rgb_u8.shape)


def gray_srgb(L, xp=np):
  """Companded sRGB value in [0, 1] of the neutral gray of lightness L (any shape): how a
  grayscale photo with that L looks to a network trained on RGB photos."""
  return linear_to_srgb(_f_inv((L + 16.0) / 116.0, xp), xp)
