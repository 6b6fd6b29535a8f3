"""The one image reader: files, bytes, PIL images, arrays -> 8-bit gray or RGB, or a Skip reason."""

import io
import os
import stat
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps

RESIZE_MODES = ('crop', 'squash')
# Why an input can be left out; every reason is a key of data_prep's manifest 'skipped'.
SKIP_REASONS = ('not_an_image', 'unreadable', 'decompression_bomb', 'too_small', 'grayscale')
MAX_BYTES = 512 << 20  # files larger than this are refused before reading (max_bytes default)
# PIL modes read as 2-D gray by read_image (to_rgb gives the same value in R, G and B).
GRAY_MODES = frozenset({'1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'})
_ALPHA_MODES = frozenset({'RGBA', 'LA', 'PA', 'La', 'RGBa'})
RESAMPLE = Image.Resampling.BICUBIC  # antialiased when shrinking (PIL widens the kernel)
# 8-bit YCbCr and gray JPEGs take a fast path in load_rgb8 (2x PIL's speed): libjpeg-turbo
# decodes them scaled by the smallest M/8 that keeps both sides >= image_size (the DCT-domain
# scaling is the antialiasing filter), 'crop' cuts the centered square to whole pixels, then
# OpenCV's bicubic resizes by a factor of at least FAST_MIN_RATIO (a mild, alias-free step);
# larger remaining factors go through PIL's antialiased bicubic instead. Anything libjpeg-turbo
# reports a problem with (truncated data, odd markers) goes through PIL, which decodes it or
# says why it cannot.
FAST_MIN_RATIO = 0.75
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the array operation that makes the image upright, as
# ImageOps.exif_transpose does (np.rot90 turns counterclockwise); for (H, W) and (H, W, C).
ORIENT = {
  2: lambda a: a[:, ::-1],
  3: lambda a: a[::-1, ::-1],
  4: lambda a: a[::-1],
  5: lambda a: a.swapaxes(0, 1),
  6: lambda a: np.rot90(a, -1),
  7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
  8: lambda a: np.rot90(a, 1),
}
_FILE_KINDS = (
  (stat.S_ISDIR, 'a directory'),
  (stat.S_ISFIFO, 'a FIFO (named pipe)'),
  (stat.S_ISCHR, 'a character device'),
  (stat.S_ISBLK, 'a block device'),
  (stat.S_ISSOCK, 'a socket'),
)


class Skip(ValueError):
  """An input that cannot be used, with one of SKIP_REASONS and a one-line message.

  str() is 'reason: message', the message one sentence that names the input.
  """

  def __init__(self, reason, message=''):
    if reason not in SKIP_REASONS:
      raise ValueError(f'reason must be one of {SKIP_REASONS}, got {reason!r}')
    message = ' '.join(str(message).split())  # one line, whatever the decoder said
    super().__init__(f'{reason}: {message}' if message else reason)
    self.reason = reason
    self.message = message

  def __reduce__(self):  # picklable across worker processes despite the two arguments
    return type(self), (self.reason, self.message)


def read_file(path, max_bytes=None):
  """The bytes of a regular file of at most max_bytes; raises Skip('unreadable') otherwise.

  Anything that is not a regular file after following symlinks (a directory, FIFO, device,
  socket) is refused from os.stat, before it is opened: opening a FIFO would block and reading
  /dev/zero would never end. The file is then opened non-blocking and checked again by fstat
  (it may have been replaced in between), and read up to max_bytes + 1 bytes.

  Args:
    path: a str or os.PathLike.
    max_bytes: the largest size read (None: MAX_BYTES; 0: no limit).
  Returns:
    bytes.
  """
  name = os.fspath(path)
  max_bytes = MAX_BYTES if max_bytes is None else max_bytes
  try:
    _check_regular(name, os.stat(name), max_bytes)
    fd = os.open(name, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_BINARY', 0))
  except OSError as e:
    raise Skip('unreadable', f'cannot read {name}: {e.strerror or e}') from None
  try:
    with os.fdopen(fd, 'rb') as f:
      _check_regular(name, os.fstat(f.fileno()), max_bytes)
      data = f.read(max_bytes + 1) if max_bytes else f.read()
  except OSError as e:
    raise Skip('unreadable', f'cannot read {name}: {e.strerror or e}') from None
  if max_bytes and len(data) > max_bytes:
    raise Skip('unreadable', f'{name} grew past max_bytes={max_bytes} while it was read')
  return data


def _check_regular(name, info, max_bytes):
  for test, kind in _FILE_KINDS:
    if test(info.st_mode):
      real = os.path.realpath(name)
      target = f' (a link to {real})' if real != os.path.abspath(name) else ''
      raise Skip('unreadable', f'{name}{target} is {kind}, not a regular file')
  if not stat.S_ISREG(info.st_mode):
    raise Skip('unreadable', f'{name} is not a regular file')
  if max_bytes and info.st_size > max_bytes:
    raise Skip('unreadable', f'{name} has {info.st_size} bytes, more than max_bytes={max_bytes}')


def _describe(source):
  """How messages name an input."""
  if isinstance(source, (bytes, bytearray, memoryview)):
    return f'the {len(source)} bytes of image data'
  if isinstance(source, Image.Image):
    return getattr(source, 'filename', '') or 'the PIL image'
  if isinstance(source, np.ndarray):
    return f'the {source.dtype} array {source.shape}'
  return os.fspath(source)


def _check_pixels(size, what, max_pixels):
  max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
  w, h = size
  if max_pixels and w * h > max_pixels:
    raise Skip(
      'decompression_bomb', f'{what} is {w}x{h} = {w * h} pixels, more than max_pixels={max_pixels}'
    )


def _open(data, what, max_pixels):
  """Encoded bytes -> a lazily decoded PIL image whose header passed the max_pixels check."""
  with warnings.catch_warnings():
    # max_pixels decides (it may allow more than PIL's warning limit); PIL still refuses
    # anything over twice its MAX_IMAGE_PIXELS by DecompressionBombError.
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
      raise Skip('not_an_image', f'{what} is not in an image format PIL can read') from None
    except Image.DecompressionBombError as e:
      raise Skip('decompression_bomb', f'{what}: {e}') from None
    except Exception as e:  # pylint: disable=broad-except  (corrupt headers)
      raise Skip('unreadable', f'cannot open {what}: {type(e).__name__}: {e}') from None
  _check_pixels(img.size, what, max_pixels)
  return img


def _on_white(color_u8, alpha_u8):
  """Color composited over opaque white by its alpha: round(255 - (255 - c) * a / 255)."""
  ink = (255 - color_u8).astype(np.uint16) * alpha_u8  # <= 65025: fits uint16
  return (255 - (ink + 127) // 255).astype(np.uint8)


# uint8 round(v / 257) of every 16-bit v, as (v + 128) // 257 (v / 257 is never k + 1/2): one
# lookup per pixel, 6x faster than the arithmetic on a large scan.
_DIV257 = ((np.arange(1 << 16, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def _scale16(x):
  """Integers in the 16-bit range -> uint8 round(v / 257), clipped to [0, 255]."""
  if x.dtype.kind != 'u' or x.dtype.itemsize != 2:
    x = np.clip(x, 0, 65535).astype(np.uint16)
  return _DIV257[x]


def _has_alpha(img):
  return img.mode in _ALPHA_MODES or (img.mode == 'P' and 'transparency' in img.info)


def _pixels8(img):
  """A loaded PIL image -> uint8 (H, W) for GRAY_MODES, else uint8 (H, W, 3) RGB.

  16-bit and 32-bit integers ('I;16*', 'I') are scaled by 1/257; float 'F' by 255 when its
  maximum is <= 1 (else read as 0..255); alpha is composited on white; other modes ('P',
  'CMYK', 'YCbCr', ...) by PIL's convert('RGB').
  """
  mode = img.mode
  if mode in ('L', 'RGB'):
    return np.asarray(img)
  if mode == 'F':
    x = np.asarray(img, np.float64)
    if x.size and np.nanmax(x) <= 1.0:
      x = x * 255.0
    return np.nan_to_num(np.clip(np.rint(x), 0, 255)).astype(np.uint8)
  if mode.startswith('I'):
    return _scale16(np.asarray(img))
  if mode == '1':
    return np.asarray(img.convert('L'))
  if mode in ('LA', 'La'):
    la = np.asarray(img.convert('LA'))  # 'La' (premultiplied) has no direct RGBA conversion
    return _on_white(la[..., 0], la[..., 1])
  if _has_alpha(img):
    rgba = np.asarray(img.convert('RGBA'))
    return _on_white(rgba[..., :3], rgba[..., 3:])
  return np.asarray(img.convert('RGB'))


def to_rgb(img):
  """Any PIL mode -> an 8-bit 'RGB' PIL image, by the conversions of read_image.

  Args:
    img: a PIL image.
  Returns:
    the image itself when already 'RGB', else a converted copy.
  """
  if img.mode == 'RGB':
    return img
  if not (img.mode.startswith('I') or img.mode == 'F' or _has_alpha(img)):
    return img.convert('RGB')  # the same values _pixels8 gives, without a copy through NumPy
  pixels = _pixels8(img)
  return Image.fromarray(pixels).convert('RGB') if pixels.ndim == 2 else Image.fromarray(pixels)


def _array8(image):
  """A uint8, uint16 or float ([0, 1]) array (H, W[, 1|3|4]) -> uint8 (H, W) or (H, W, 3)."""
  image = np.asarray(image)
  shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))
  if not shape_ok or 0 in image.shape:
    raise ValueError(f'expected a grayscale or RGB image (H, W[, 1|3|4]), got shape {image.shape}')
  if image.dtype == np.uint16:
    image = _scale16(image)
  elif np.issubdtype(image.dtype, np.floating):
    lo, hi = float(np.min(image)), float(np.max(image))
    if not (lo >= 0.0 and hi <= 1.0):  # NaN fails too
      raise ValueError(f'expected float values in [0, 1], got values in [{lo}, {hi}]')
    image = np.rint(image.astype(np.float64) * 255.0).astype(np.uint8)
  elif image.dtype != np.uint8:
    raise ValueError(f'expected a uint8, uint16 or float image, got {image.dtype}')
  if image.ndim == 3 and image.shape[-1] == 1:
    return image[..., 0]
  if image.ndim == 3 and image.shape[-1] == 4:
    return _on_white(image[..., :3], image[..., 3:])
  return image


def read_image(source, *, max_pixels=None, max_bytes=None):
  """A photo at its own size, upright -> uint8 (H, W) gray or (H, W, 3) RGB; raises Skip.

  Gray PIL modes (GRAY_MODES: '1', 'L', 'LA', 'La', 'I', 'I;16*', 'F') stay 2-D; every mode is
  converted as to_rgb converts it (16-bit gray scaled by 1/257, alpha composited on white).
  Files and bytes are checked before decoding: a regular file of at most max_bytes, a header of
  at most max_pixels.

  Args:
    source: a file path, encoded bytes, a PIL image (its EXIF orientation applied) or an array
      (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha composited on white) of uint8, uint16
      (scaled by 1/257) or floats in [0, 1] (scaled by 255).
    max_pixels: larger images are refused as 'decompression_bomb' from their header (None:
      PIL's Image.MAX_IMAGE_PIXELS; 0: no limit, though PIL refuses twice its limit itself).
    max_bytes: larger files are refused as 'unreadable' before reading (None: MAX_BYTES; 0: no
      limit).
  Returns:
    uint8 (H, W) or (H, W, 3); a uint8 array input of those shapes is returned as it is.
  Raises:
    Skip: (a ValueError) files that are missing, not regular, too large, not images, too many
      pixels or undecodable; the message names the file.
    ValueError: arrays of another dtype or shape, or floats outside [0, 1].
  """
  if isinstance(source, np.ndarray):
    return _array8(source)
  what = _describe(source)
  if isinstance(source, Image.Image):
    img = source
  else:
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else None
    img = _open(read_file(source, max_bytes) if data is None else data, what, max_pixels)
  try:
    img.load()
    orientation = img.getexif().get(ORIENTATION_TAG, 1)  # PNG's eXIf is known after load
    pixels = _pixels8(img)
  except Exception as e:  # pylint: disable=broad-except  (truncated, corrupt, odd modes)
    raise Skip('unreadable', f'cannot decode {what}: {type(e).__name__}: {e}') from None
  if orientation in ORIENT:
    pixels = np.ascontiguousarray(ORIENT[orientation](pixels))
  return pixels


def load_rgb8(source, image_size, *, resize='crop', min_size=64, max_pixels=None, max_bytes=None):
  """Reads and resizes one image to uint8 (image_size, image_size, 3); raises Skip.

  Args:
    source: a file path, encoded bytes, or an array as read_image takes.
    image_size: side of the output square.
    resize: 'crop' (centered square, then resample) or 'squash' (resample the whole image).
    min_size: inputs whose shorter side is smaller are skipped as 'too_small'.
    max_pixels: larger inputs are skipped as 'decompression_bomb' (None: PIL's limit).
    max_bytes: larger files are skipped as 'unreadable' before reading (None: MAX_BYTES).
  Returns:
    uint8 array (image_size, image_size, 3).
  """
  if resize not in RESIZE_MODES:
    raise ValueError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
  what = _describe(source)
  data = None
  if isinstance(source, np.ndarray):
    img = Image.fromarray(_array8(source))
    _check_pixels(img.size, what, max_pixels)
  else:
    if isinstance(source, (bytes, bytearray, memoryview)):
      data = bytes(source)
    else:
      data = read_file(source, max_bytes)
    img = _open(data, what, max_pixels)
  w, h = img.size
  if min(w, h) < min_size:
    raise Skip('too_small', f'{what} is {w}x{h}, under min_size={min_size}')
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
    raise Skip('unreadable', f'cannot decode {what}: {type(e).__name__}: {e}') from None
  img = img.resize((image_size, image_size), RESAMPLE, box=resize_box(img.size, resize))
  return np.asarray(img)


def resize_box(size, resize):
  """The source box (left, upper, right, lower) that is resampled to the output square."""
  w, h = size
  if resize == 'squash':
    return (0.0, 0.0, float(w), float(h))
  side = min(w, h)  # the centered square: same as shorter side -> image_size, then center crop
  return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def _fast_jpeg(data, img, image_size, resize):
  """A YCbCr or gray JPEG -> uint8 (image_size, image_size, 3) by the fast path, or None when
  libjpeg-turbo reports any problem (PIL then decodes it, or explains why it cannot)."""
  try:
    orientation = img.getexif().get(ORIENTATION_TAG, 1)
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
  return np.ascontiguousarray(ORIENT.get(orientation, lambda a: a)(rgb))
