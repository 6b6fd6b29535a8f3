"""The one record format: a Lab image as 8-bit L and ab plus its source id, after a short header.

Layout (little endian): b'CJX1' | uint16 H | uint16 W | uint16 len(id) | id (UTF-8)
| L as uint8 (H*W, L = q * 100/255) | ab as int8 (H*W*2, ab = q). Worst-case quantization
error: 100/510 ~= 0.196 in L, 0.5 in a and b (values beyond [-128, 127] are clipped; sRGB
colors never reach them).
"""

import struct

import numpy as np

from colorjax import constants

MAGIC = b'CJX1'
_HEADER = struct.Struct('<4sHHH')
L_MAX_ERROR = constants.L_QUANT_STEP / 2
AB_MAX_ERROR = constants.AB_QUANT_STEP / 2


def quantize_L(L):
  """L float in [0, 100] -> uint8 codes."""
  q = np.rint(np.asarray(L, np.float32) / np.float32(constants.L_QUANT_STEP))
  return np.clip(q, 0, 255).astype(np.uint8)


def quantize_ab(ab):
  """ab float in Lab units -> int8 codes."""
  q = np.rint(np.asarray(ab, np.float32) / np.float32(constants.AB_QUANT_STEP))
  return np.clip(q, -128, 127).astype(np.int8)


def encode_example(L, ab, id):  # pylint: disable=redefined-builtin
  """Serializes one image. L: (H, W) or (H, W, 1) in [0, 100]; ab: (H, W, 2) in Lab units."""
  L = np.asarray(L)
  ab = np.asarray(ab)
  if L.ndim == 3 and L.shape[-1] == 1:
    L = L[..., 0]
  if L.ndim != 2 or ab.shape != L.shape + (2,):
    raise ValueError(f'expected L (H, W[, 1]) and ab (H, W, 2), got {L.shape} and {ab.shape}')
  h, w = L.shape
  id_bytes = str(id).encode('utf-8')
  if max(h, w) > 0xFFFF or len(id_bytes) > 0xFFFF:
    raise ValueError('image side or id too long for the record header')
  L_q = L if L.dtype == np.uint8 else quantize_L(L)
  ab_q = ab if ab.dtype == np.int8 else quantize_ab(ab)
  return b''.join(
    (
      _HEADER.pack(MAGIC, h, w, len(id_bytes)),
      id_bytes,
      np.ascontiguousarray(L_q).tobytes(),
      np.ascontiguousarray(ab_q).tobytes(),
    )
  )


def decode_quantized(data):
  """bytes -> {'L': uint8 (H, W, 1), 'ab': int8 (H, W, 2), 'id': str}, without dequantizing."""
  magic, h, w, n = _HEADER.unpack_from(data, 0)
  if magic != MAGIC:
    raise ValueError(f'not a colorjax record (magic {magic!r})')
  start = _HEADER.size + n
  if len(data) != start + 3 * h * w:
    raise ValueError(f'record of {len(data)} bytes does not hold a {h}x{w} image')
  L = np.frombuffer(data, np.uint8, h * w, start).reshape(h, w, 1)
  ab = np.frombuffer(data, np.int8, 2 * h * w, start + h * w).reshape(h, w, 2)
  return {'L': L, 'ab': ab, 'id': bytes(data[_HEADER.size : start]).decode('utf-8')}


def dequantize(L_q, ab_q, xp=np):
  """uint8 L and int8 ab codes -> float32 Lab units (NumPy or jax.numpy, given as xp)."""
  L = xp.asarray(L_q).astype(xp.float32) * xp.float32(constants.L_QUANT_STEP)
  ab = xp.asarray(ab_q).astype(xp.float32) * xp.float32(constants.AB_QUANT_STEP)
  return L, ab


def decode_example(data):
  """bytes -> {'L': float32 (H, W, 1) in [0, 100], 'ab': float32 (H, W, 2), 'id': str}."""
  ex = decode_quantized(data)
  L, ab = dequantize(ex['L'], ex['ab'])
  return {'L': L, 'ab': ab, 'id': ex['id']}
