"""One image -> an 8-bit RGB square (by colorjax.image_io) -> one record, or a reason to skip."""

import functools

import cv2
import numpy as np

from colorjax import constants, lab, records
from colorjax.image_io import (  # noqa: F401  (re-exported: data_prep's names for the one reader)
  FAST_MIN_RATIO,
  RESAMPLE,
  RESIZE_MODES,
  SKIP_REASONS,
  Skip,
  load_rgb8,
  resize_box,
  to_rgb,
)

# Mean chroma sqrt(a^2 + b^2) below which a photo counts as grayscale (sepia is well above).
GRAY_CHROMA = 2.0
cv2.setNumThreads(1)  # one thread per data_prep worker process


# Statistics of an ab code pair read as one uint16 (the int8 a and b of a pixel, in memory
# order): its histogram bin on the AB_GRID_* grid (values beyond the grid fall in the edge bins)
# and its chroma. Counting the 65536 pairs once makes both per-image statistics cheap.
_PAIRS = np.arange(2**16, dtype=np.uint16).view(np.int8).reshape(-1, 2).astype(np.float64)
_PAIR_AB = _PAIRS * constants.AB_QUANT_STEP
_PAIR_BIN = np.clip(
  np.floor((_PAIR_AB - constants.AB_GRID_MIN) / constants.AB_GRID_STEP),
  0,
  constants.AB_GRID_SIZE - 1,
).astype(np.intp)
_PAIR_BIN = _PAIR_BIN[:, 0] * constants.AB_GRID_SIZE + _PAIR_BIN[:, 1]
_PAIR_CHROMA = np.hypot(_PAIR_AB[:, 0], _PAIR_AB[:, 1])


def ab_statistics(ab_q):
  """int8 ab codes (..., 2) -> (int64 (AB_GRID_SIZE,) * 2 histogram, rows a and columns b;
  mean chroma sqrt(a^2 + b^2) of the codes)."""
  pairs = np.ascontiguousarray(ab_q, np.int8).view(np.uint16).reshape(-1)
  counts = np.bincount(pairs, minlength=2**16)
  present = np.flatnonzero(counts)  # a photo holds a few thousand of the 65536 pairs
  weights = counts[present].astype(np.float64)
  hist = np.bincount(_PAIR_BIN[present], weights=weights, minlength=constants.AB_GRID_SIZE**2)
  hist = hist.astype(np.int64).reshape(constants.AB_GRID_SIZE, constants.AB_GRID_SIZE)
  chroma = float(weights @ _PAIR_CHROMA[present]) / max(pairs.size, 1)
  return hist, chroma


@functools.cache
def lab_code_table():
  """uint32 (2**24,): for each 8-bit sRGB color r | g << 8 | b << 16, its record codes packed
  as L | a << 8 | b << 16 (uint8 L, int8 a and b): quantize_L/quantize_ab of rgb8_to_lab, so a
  lookup gives exactly what converting and quantizing would. 64 MiB, built in about a second."""
  table = np.empty(2**24, np.uint32)
  codes = table.view(np.uint8).reshape(-1, 4)
  chunk = 2**20
  for start in range(0, 2**24, chunk):
    rgb = np.arange(start, start + chunk, dtype=np.uint32).view(np.uint8).reshape(-1, 4)
    lab_c = lab.rgb8_to_lab(np.ascontiguousarray(rgb[:, :3]))
    part = codes[start : start + chunk]
    part[:, 0] = records.quantize_L(lab_c[:, 0])
    part[:, 1:3] = records.quantize_ab(lab_c[:, 1:]).view(np.uint8)
    part[:, 3] = 0
  return table


def lab_codes(rgb_u8):
  """uint8 sRGB (..., 3) -> (uint8 L codes (...), int8 ab codes (..., 2)), the record's
  quantization of rgb8_to_lab, by one table lookup per pixel."""
  rgb_u8 = np.asarray(rgb_u8)
  if rgb_u8.dtype != np.uint8 or rgb_u8.ndim < 1 or rgb_u8.shape[-1] != 3:
    raise ValueError(f'expected uint8 (..., 3), got {rgb_u8.dtype} {rgb_u8.shape}')
  rgbx = cv2.cvtColor(rgb_u8.reshape(1, -1, 3), cv2.COLOR_RGB2RGBA)  # r, g, b, 255: a uint32
  index = rgbx.view(np.uint32).reshape(-1) & np.uint32(0xFFFFFF)
  packed = np.take(lab_code_table(), index).reshape(rgb_u8.shape[:-1])
  ab_pairs = (packed >> 8).astype(np.uint16)  # the int8 a, b of a pixel in memory order
  return packed.astype(np.uint8), ab_pairs.view(np.int8).reshape(packed.shape + (2,))


def make_record(
  source, id, image_size, *, resize='crop', min_size=64, max_pixels=None, gray_chroma=GRAY_CHROMA
):  # pylint: disable=redefined-builtin
  """One input -> (record bytes, ab histogram of its quantized codes); raises Skip.

  Arguments as load_rgb8; id is stored in the record; photos whose mean chroma (of the
  quantized ab) is under gray_chroma are skipped as 'grayscale'.
  """
  rgb = load_rgb8(source, image_size, resize=resize, min_size=min_size, max_pixels=max_pixels)
  L_q, ab_q = lab_codes(rgb)
  hist, chroma = ab_statistics(ab_q)
  if chroma < gray_chroma:
    raise Skip('grayscale', f'mean chroma {chroma:.2f} < {gray_chroma}')
  return records.encode_example(L_q, ab_q, id), hist
