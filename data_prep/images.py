"""One image file or array -> an 8-bit RGB square -> one colorjax record, or a reason to skip."""

import functools
import io
import os
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from colorjax import constants, lab, records

RESIZE_MODES = ('crop', 'squash')
# Why an input can be left out; every reason is a key of the manifest's 'skipped'.
SKIP_REASONS = ('not_an_image', 'unreadable', 'decompression_bomb', 'too_small', 'grayscale')
# Mean chroma sqrt(a^2 + b^2) below which a photo counts as grayscale (sepia is well above).
GRAY_CHROMA = 2.0
RESAMPLE = Image.Resampling.BICUBIC  # antialiased when shrinking (PIL widens the kernel)
# 8-bit YCbCr and gray JPEGs take a fast path (2x PIL's speed): libjpeg-turbo decodes them scaled
# by the smallest M/8 that keeps both sides >= image_size (the DCT-domain scaling is the
# antialiasing filter), 'crop' cuts the centered square to whole pixels, then OpenCV's bicubic
# resizes by a factor of at least FAST_MIN_RATIO (a mild, alias-free step); larger remaining
# factors go through PIL's antialiased bicubic instead. Anything libjpeg-turbo reports a problem
# with (truncated data, odd markers) goes through PIL, which decodes it or says why it cannot.
FAST_MIN_RATIO = 0.75
cv2.setNumThreads(1)  # one thread per data_prep worker process
# EXIF orientation (tag 0x0112) -> the array operation that makes the image upright, as
# ImageOps.exif_transpose does (np.rot90 turns counterclockwise).
_ORIENT = {
  2: lambda a: a[:, ::-1],
  3: lambda a: a[::-1, ::-1],
  4: lambda a: a[::-1],
  5: lambda a: a.transpose(1, 0, 2),
  6: lambda a: np.rot90(a, -1),
  7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
  8: lambda a: np.rot90(a, 1),
}


class Skip(Exception):
  """An input that is left out, with one of SKIP_REASONS and a short message."""

  def __init__(self, reason, message=''):
    assert reason in SKIP_REASONS, reason
    super().__init__(f'{reason}: {message}')
    self.reason = reason
    self.message = message


def to_rgb(img):
  """Any PIL mode -> 'RGB' 8-bit: alpha composited on white, 16-bit and float scaled to 8 bits."""
  if img.mode == 'RGB':
    return img
  if img.mode.startswith('I') or img.mode == 'F':
    x = np.asarray(img, np.float64)
    if img.mode == 'F' and x.size and np.nanmax(x) <= 1.0:
      x = x * 255.0  # float images in [0, 1]
    elif img.mode != 'F':
      x = x / 257.0  # 16-bit range (I;16*, and I as PNG decoders produce it)
    x = np.nan_to_num(np.clip(np.rint(x), 0, 255)).astype(np.uint8)
    return Image.fromarray(x, 'L').convert('RGB')
  has_alpha = img.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or (
    img.mode == 'P' and 'transparency' in img.info
  )
  if has_alpha:
    rgba = img.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert('RGB')
  return img.convert('RGB')


def resize_box(size, resize):
  """The source box (left, upper, right, lower) that is resampled to the output square."""
  w, h = size
  if resize == 'squash':
    return (0.0, 0.0, float(w), float(h))
  side = min(w, h)  # the centered square: same as shorter side -> image_size, then center crop
  return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def load_rgb8(source, image_size, *, resize='crop', min_size=64, max_pixels=None):
  """Reads and resizes one image to uint8 (image_size, image_size, 3); raises Skip.

  Args:
    source: a file path, encoded bytes, or a uint8 array (H, W, 3|4) or (H, W).
    image_size: side of the output square.
    resize: 'crop' (centered square, then resample) or 'squash' (resample the whole image).
    min_size: inputs whose shorter side is smaller are skipped as 'too_small'.
    max_pixels: larger inputs are skipped as 'decompression_bomb' (default PIL's limit).
  Returns:
    uint8 array (image_size, image_size, 3).
  """
  if resize not in RESIZE_MODES:
    raise ValueError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
  max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
  data = None
  if isinstance(source, np.ndarray):
    img = Image.fromarray(source)
  else:
    if isinstance(source, (bytes, bytearray)):
      data = bytes(source)
    else:
      try:
        with open(os.fspath(source), 'rb') as f:
          data = f.read()
      except OSError as e:
        raise Skip('unreadable', f'{type(e).__name__}: {e}') from None
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      try:
        img = Image.open(io.BytesIO(data))
      except Image.UnidentifiedImageError as e:
        raise Skip('not_an_image', str(e)) from None
      except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Skip('decompression_bomb', str(e)) from None
      except Exception as e:  # pylint: disable=broad-except
        raise Skip('unreadable', f'{type(e).__name__}: {e}') from None
  w, h = img.size
  if max_pixels and w * h > max_pixels:
    raise Skip('decompression_bomb', f'{w}x{h} pixels exceed {max_pixels}')
  if min(w, h) < min_size:
    raise Skip('too_small', f'{w}x{h} is under min_size={min_size}')
  if img.format == 'JPEG' and img.mode in ('RGB', 'L'):
    rgb = _fast_jpeg(data, img, image_size, resize)
    if rgb is not None:
      return rgb
  try:
    if img.format == 'JPEG':
      img.draft('RGB', (image_size, image_size))  # DCT-domain downscale while >= image_size
    img.load()
    ImageOps.exif_transpose(img, in_place=True)  # a no-op (no copy) for most photos
    img = to_rgb(img)
  except Exception as e:  # pylint: disable=broad-except  (truncated, corrupt, odd modes)
    raise Skip('unreadable', f'{type(e).__name__}: {e}') from None
  img = img.resize((image_size, image_size), RESAMPLE, box=resize_box(img.size, resize))
  return np.asarray(img)


def _fast_jpeg(data, img, image_size, resize):
  """A YCbCr or gray JPEG -> uint8 (image_size, image_size, 3) by the fast path, or None when
  libjpeg-turbo reports any problem (PIL then decodes it, or explains why it cannot)."""
  try:
    orientation = img.getexif().get(0x0112, 1)
    rgb = simplejpeg.decode_jpeg(data, 'RGB', min_height=image_size, min_width=image_size)
  except Exception:  # pylint: disable=broad-except  (truncated, corrupt, unusual markers)
    return None
  h, w = rgb.shape[:2]
  if resize == 'crop':
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    rgb = rgb[top : top + side, left : left + side]
  if max(rgb.shape[:2]) * FAST_MIN_RATIO <= image_size:
    rgb = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
  else:
    rgb = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), RESAMPLE))
  return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(rgb))


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
