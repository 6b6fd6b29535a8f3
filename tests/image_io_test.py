"""colorjax.image_io: every PIL mode to 8 bits, EXIF at full size, and refusing unsafe inputs."""

import io
import os
import pickle
import socket
import stat
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from image_fixtures import jpeg, pattern, upright
from PIL import Image, ImageOps

from colorjax import fullsize, image_io
from data_prep import images


def _save(img, fmt, **kw):
  buf = io.BytesIO()
  img.save(buf, fmt, **kw)
  return buf.getvalue()


def _cv2(arr, ext):
  """16-bit PNG / TIFF bytes from an RGB(A) or gray array (OpenCV stores BGR(A))."""
  if arr.ndim == 3:
    arr = arr[..., [2, 1, 0, 3][: arr.shape[-1]]]
  ok, buf = cv2.imencode(ext, arr)
  assert ok
  return buf.tobytes()


def _gray16():
  """uint16 (64, 64): every 16th value of 0..65535, the first row at round(v / 257)'s edges."""
  g = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
  g[0, :8] = [128, 129, 385, 386, 65406, 65407, 65408, 65535]
  return g


def _div257(v):
  return np.round(v.astype(np.float64) / 257.0).astype(np.uint8)


def _white_composite(color, alpha):
  """Over opaque white in floats, rounded: the reference for alpha compositing."""
  a = alpha.astype(np.float64) / 255.0
  return np.round(color * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _png_header(w, h):
  """A PNG of only IHDR and IEND claiming w x h 8-bit RGB pixels (decoding it would fail)."""

  def chunk(tag, data):
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))

  ihdr = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


def _load(source, **kw):
  return images.load_rgb8(source, 16, min_size=1, **kw)


READERS = {'read_image': image_io.read_image, 'load_rgb8': _load}
_OS_OPEN = os.open


@pytest.fixture
def never_opened(monkeypatch):
  """Fails the test if anything opens a file while the guarded call runs."""

  def refuse(*args, **kw):
    raise AssertionError(f'opened {args[0]}')

  monkeypatch.setattr(os, 'open', refuse)
  monkeypatch.setattr('builtins.open', refuse)
  monkeypatch.setattr(io, 'open', refuse)


@pytest.mark.parametrize('fmt', ['cv2.png', 'cv2.tif', 'pil.png', 'pil.tif', 'pil_big_endian.tif'])
def test_16bit_gray_is_scaled_by_257_not_clamped(fmt, tmp_path):
  g = _gray16()
  if fmt.startswith('cv2'):
    data = _cv2(g, fmt[3:])
  elif fmt == 'pil_big_endian.tif':
    data = _save(Image.frombytes('I;16B', (64, 64), g.astype('>u2').tobytes()), 'TIFF')
  else:
    data = _save(Image.fromarray(g), fmt[4:].upper().replace('TIF', 'TIFF'))
  path = tmp_path / f'scan.{fmt.split(".")[-1]}'
  path.write_bytes(data)
  expected = _div257(g)
  assert expected[0, :8].tolist() == [0, 1, 1, 2, 254, 255, 255, 255]
  for got in (image_io.read_image(path), image_io.read_image(data), fullsize.read_image(path)):
    assert got.dtype == np.uint8 and got.shape == (64, 64)
    np.testing.assert_array_equal(got, expected)
  assert (expected < 255).mean() > 0.99  # convert('L') clamped all but 16 of these to 255


@pytest.mark.parametrize('ext', ['.png', '.tif'])
def test_16bit_rgb_and_rgba_keep_the_high_byte(ext):
  """PIL opens 16-bit color PNG/TIFF as 8-bit 'RGB'/'RGBA' by keeping each value's high byte:
  floor(v / 256), within one code of round(v / 257)."""
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 65536, (24, 40, 3), dtype=np.uint16)
  got = image_io.read_image(_cv2(rgb, ext))
  assert got.shape == (24, 40, 3)
  np.testing.assert_array_equal(got, rgb >> 8)
  assert np.abs(got.astype(int) - _div257(rgb)).max() <= 1
  alpha = np.where(np.arange(40) < 20, 0, 65535).astype(np.uint16)[None, :, None]
  rgba = np.concatenate([rgb, np.broadcast_to(alpha, (24, 40, 1))], -1)
  got = image_io.read_image(_cv2(rgba, ext))
  assert (got[:, :20] == 255).all()  # transparent: white
  np.testing.assert_array_equal(got[:, 20:], rgb[:, 20:] >> 8)


def test_alpha_is_composited_on_white():
  rgb = pattern(8, 12, 1)
  alpha = np.tile(np.array([0, 255, 128, 37], np.uint8), (8, 3))
  rgba = np.concatenate([rgb, alpha[..., None]], -1)
  expected = _white_composite(rgb, alpha[..., None])
  assert (expected[alpha == 0] == 255).all()
  np.testing.assert_array_equal(expected[alpha == 255], rgb[alpha == 255])
  png = _save(Image.fromarray(rgba, 'RGBA'), 'PNG')
  np.testing.assert_array_equal(image_io.read_image(png), expected)
  np.testing.assert_array_equal(image_io.read_image(rgba), expected)  # arrays too: not dropped
  gray = rgb[..., 0]
  la = _save(Image.fromarray(np.stack([gray, alpha], -1), 'LA'), 'PNG')
  got = image_io.read_image(la)
  assert got.shape == (8, 12)  # gray with alpha stays gray
  np.testing.assert_array_equal(got, _white_composite(gray, alpha))


def test_palette_transparency_is_composited_on_white():
  p = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), 'P')
  p.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0])
  for fmt in ('PNG', 'GIF'):
    img = Image.open(io.BytesIO(_save(p, fmt, transparency=0)))
    assert img.mode == 'P' and 'transparency' in img.info, fmt
    got = image_io.read_image(img)
    np.testing.assert_array_equal(got[0], [[255, 255, 255], [200, 100, 50], [0, 0, 0]], fmt)
    np.testing.assert_array_equal(np.asarray(image_io.to_rgb(img)), got)


def test_gray_modes_stay_gray_and_equal_to_rgb():
  """read_image keeps the gray PIL modes 2-D with the value to_rgb puts in R, G and B."""
  rng = np.random.default_rng(1)
  g8 = rng.integers(0, 256, (6, 9), dtype=np.uint8)
  a8 = rng.integers(0, 256, (6, 9), dtype=np.uint8)
  g16 = rng.integers(0, 65536, (6, 9), dtype=np.uint16)
  f = rng.uniform(0, 1, (6, 9)).astype(np.float32)
  cases = {
    '1': (Image.fromarray(g8 > 127), np.where(g8 > 127, 255, 0)),
    'L': (Image.fromarray(g8), g8),
    'LA': (Image.fromarray(np.stack([g8, a8], -1), 'LA'), _white_composite(g8, a8)),
    'I;16': (Image.fromarray(g16), _div257(g16)),
    'I;16B': (Image.frombytes('I;16B', (9, 6), g16.astype('>u2').tobytes()), _div257(g16)),
    'I': (Image.fromarray(g16.astype(np.int32)), _div257(g16)),
    'F': (Image.fromarray(f), np.round(f.astype(np.float64) * 255)),
  }
  for mode, (img, expected) in cases.items():
    assert img.mode == mode
    got = image_io.read_image(img)
    assert got.shape == (6, 9), mode
    np.testing.assert_array_equal(got, expected, err_msg=mode)
    np.testing.assert_array_equal(np.asarray(image_io.to_rgb(img)), np.stack([got] * 3, -1))
  big = Image.fromarray(np.full((2, 2), 70000, np.int32))  # 32-bit ints beyond 16 bits: white
  np.testing.assert_array_equal(image_io.read_image(big), 255)
  premultiplied = Image.fromarray(np.stack([g8, a8], -1), 'LA').convert('La')
  la = np.asarray(premultiplied.convert('LA'))  # PIL has no 'La' -> 'RGBA' conversion
  got = image_io.read_image(premultiplied)
  np.testing.assert_array_equal(got, _white_composite(la[..., 0], la[..., 1]))


@pytest.mark.parametrize('fmt', ['JPEG', 'TIFF'])
def test_cmyk_matches_pil_convert(fmt):
  data = _save(Image.fromarray(pattern(20, 30, 2)).convert('CMYK'), fmt)
  img = Image.open(io.BytesIO(data))
  assert img.mode == 'CMYK'
  got = image_io.read_image(data)
  np.testing.assert_array_equal(got, np.asarray(img.convert('RGB')))


def test_float_tiff_and_arrays():
  f = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
  data = _save(Image.fromarray(f), 'TIFF')
  assert Image.open(io.BytesIO(data)).mode == 'F'
  expected = np.round(f.astype(np.float64) * 255).astype(np.uint8)
  np.testing.assert_array_equal(image_io.read_image(data), expected)
  np.testing.assert_array_equal(image_io.read_image(f), expected)
  np.testing.assert_array_equal(image_io.read_image(f.astype(np.float64)[..., None]), expected)
  rgb16 = np.random.default_rng(2).integers(0, 65536, (4, 5, 3), dtype=np.uint16)
  np.testing.assert_array_equal(image_io.read_image(rgb16), _div257(rgb16))
  rgb8 = pattern(4, 5, 3)
  assert image_io.read_image(rgb8) is rgb8  # uint8 arrays as they are
  np.testing.assert_array_equal(image_io.read_image(rgb8[..., :1]), rgb8[..., 0])
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    image_io.read_image(f * 2)
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    image_io.read_image(np.full((2, 2), np.nan))
  with pytest.raises(ValueError, match='uint8, uint16 or float'):
    image_io.read_image(np.zeros((2, 2), np.int64))
  with pytest.raises(ValueError, match='grayscale or RGB'):
    image_io.read_image(np.zeros((2, 2, 2), np.uint8))
  with pytest.raises(ValueError, match='grayscale or RGB'):
    image_io.read_image(np.zeros((0, 2, 3), np.uint8))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_at_full_resolution(orientation):
  exif = Image.Exif()
  exif[0x0112] = orientation
  rgb = pattern(12, 20, 4)
  png = _save(Image.fromarray(rgb), 'PNG', exif=exif.tobytes())  # lossless: exact reference
  got = image_io.read_image(png)
  np.testing.assert_array_equal(got, upright(Image.fromarray(rgb), orientation))
  gray16 = _gray16()[:12, :20]
  tif = _save(Image.fromarray(gray16), 'TIFF', tiffinfo={0x0112: orientation})
  got = image_io.read_image(tif)
  np.testing.assert_array_equal(got, upright(Image.fromarray(_div257(gray16)), orientation))
  photo = jpeg(rgb, exif=exif.tobytes())
  ref = ImageOps.exif_transpose(Image.open(io.BytesIO(photo)))
  np.testing.assert_array_equal(image_io.read_image(photo), np.asarray(ref))
  pil = Image.open(io.BytesIO(photo))
  np.testing.assert_array_equal(image_io.read_image(pil), np.asarray(ref))  # PIL images too


@pytest.mark.parametrize('reader', READERS)
def test_fifo_is_refused_without_opening_it(reader, tmp_path, never_opened):
  fifo = tmp_path / 'pipe.png'
  os.mkfifo(fifo)
  outcome = {}

  def call():
    try:
      READERS[reader](fifo)
    except Exception as e:  # pylint: disable=broad-except
      outcome['error'] = e

  start = time.monotonic()
  thread = threading.Thread(target=call, daemon=True)
  thread.start()
  thread.join(timeout=2.0)
  if thread.is_alive():  # blocked in open(): a writer releases it
    os.close(_OS_OPEN(fifo, os.O_WRONLY | os.O_NONBLOCK))
    pytest.fail('reading a FIFO blocked')
  assert time.monotonic() - start < 2.0
  error = outcome['error']
  assert isinstance(error, image_io.Skip) and error.reason == 'unreadable', error
  assert str(fifo) in str(error) and 'FIFO' in str(error)


@pytest.mark.parametrize('reader', READERS)
@pytest.mark.parametrize('device', ['/dev/zero', '/dev/urandom'])
def test_symlink_to_a_device_is_refused(reader, device, tmp_path, never_opened):
  if not os.path.exists(device):
    pytest.skip(f'no {device}')
  link = tmp_path / 'photo.jpg'
  link.symlink_to(device)
  with pytest.raises(image_io.Skip, match='character device, not a regular file') as e:
    READERS[reader](link)
  assert e.value.reason == 'unreadable' and device in str(e.value)


@pytest.mark.parametrize('reader', READERS)
def test_directory_and_socket_are_refused(reader, tmp_path, never_opened):
  folder = tmp_path / 'photo.png'
  folder.mkdir()
  with pytest.raises(image_io.Skip, match='directory'):
    READERS[reader](folder)
  if not hasattr(socket, 'AF_UNIX'):
    return
  path = tmp_path / 's.png'
  with socket.socket(socket.AF_UNIX) as sock:
    sock.bind(str(path))
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    with pytest.raises(image_io.Skip, match='socket'):
      READERS[reader](path)


@pytest.mark.parametrize('reader', READERS)
def test_file_over_max_bytes_is_refused_before_reading(reader, tmp_path, monkeypatch):
  path = tmp_path / 'photo.png'
  path.write_bytes(_save(Image.fromarray(pattern(20, 20, 5)), 'PNG'))
  size = path.stat().st_size
  assert READERS[reader](path, max_bytes=size).shape[:2] in ((20, 20), (16, 16))
  with monkeypatch.context() as m:
    m.setattr(os, 'open', lambda *a, **k: pytest.fail('opened a file over max_bytes'))
    with pytest.raises(image_io.Skip, match=f'{size} bytes, more than max_bytes={size - 1}'):
      READERS[reader](path, max_bytes=size - 1)


@pytest.mark.parametrize('reader', READERS)
def test_decompression_bomb_is_refused_from_the_header(reader, tmp_path):
  path = tmp_path / 'bomb.png'
  path.write_bytes(_png_header(3000, 2000))  # no pixel data: decoding would say 'unreadable'
  with pytest.raises(image_io.Skip, match='3000x2000 = 6000000 pixels') as e:
    READERS[reader](path, max_pixels=10**6)
  assert e.value.reason == 'decompression_bomb' and str(path) in str(e.value)
  path.write_bytes(_png_header(20000, 20000))  # over twice PIL's limit: PIL refuses it as well
  with pytest.raises(image_io.Skip, match='decompression_bomb'):
    READERS[reader](path)
  small = _save(Image.fromarray(pattern(40, 40, 6)), 'PNG')
  with pytest.raises(image_io.Skip, match='decompression_bomb'):
    READERS[reader](small, max_pixels=40 * 39)
  assert READERS[reader](small, max_pixels=40 * 40).shape[:2] in ((40, 40), (16, 16))


@pytest.mark.parametrize('reader', READERS)
def test_truncated_non_image_and_missing_files_say_why(reader, tmp_path):
  photo = jpeg(pattern(64, 64, 7))
  cases = {
    'cut.jpg': (photo[: len(photo) // 2], 'unreadable', 'truncated'),
    'notes.jpg': (b'not a photo\n' * 10, 'not_an_image', 'not in an image format'),
    'missing.jpg': (None, 'unreadable', 'No such file'),
  }
  for name, (data, reason, words) in cases.items():
    path = tmp_path / name
    if data is not None:
      path.write_bytes(data)
    with pytest.raises(image_io.Skip) as e:
      READERS[reader](path)
    message = str(e.value)
    assert e.value.reason == reason and words in message and str(path) in message, message
    assert message.startswith(f'{reason}: ') and '\n' not in message
    assert isinstance(e.value, ValueError)


def test_skip_survives_pickling_and_checks_its_reason():
  e = pickle.loads(pickle.dumps(image_io.Skip('too_small', 'x is 3x3')))
  assert (e.reason, e.message, str(e)) == ('too_small', 'x is 3x3', 'too_small: x is 3x3')
  with pytest.raises(ValueError, match='reason'):
    image_io.Skip('bad reason')
  assert images.Skip is image_io.Skip and images.load_rgb8 is image_io.load_rgb8


@pytest.mark.parametrize('kind', ['gray16.png', 'rgb16.tif', 'rgba16.png', 'la.png'])
@pytest.mark.parametrize('resize', ['crop', 'squash'])
def test_load_rgb8_is_read_image_resized(kind, resize, tmp_path):
  """data_prep's square and colorize's full-size read agree on one file."""
  rng = np.random.default_rng(3)
  if kind == 'la.png':
    data = _save(Image.fromarray(rng.integers(0, 256, (40, 56, 2), dtype=np.uint8), 'LA'), 'PNG')
  else:
    channels = {'gray16.png': (), 'rgb16.tif': (3,), 'rgba16.png': (4,)}[kind]
    data = _cv2(rng.integers(0, 65536, (40, 56) + channels, dtype=np.uint16), kind[-4:])
  path = tmp_path / kind
  path.write_bytes(data)
  full = image_io.read_image(path)
  assert full.shape[:2] == (40, 56)
  img = Image.fromarray(full).convert('RGB')
  box = image_io.resize_box(img.size, resize)
  expected = np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC, box=box))
  got = images.load_rgb8(path, 16, resize=resize, min_size=16)
  np.testing.assert_array_equal(got, expected)
