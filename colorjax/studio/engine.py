"""The studio's work without the web: photos kept in memory, previews, downloads, suggestions."""

import collections
import dataclasses
import io
import math
import numbers
import re
import secrets
import tempfile
import threading

import jax.numpy as jnp
import numpy as np
from PIL import Image

from colorjax import decoding, fullsize, image_io, inference, propagation
from colorjax import hints as hints_lib
from colorjax import suggest as suggest_lib

FORMATS = {'png': ('image/png', 'png'), 'jpg': ('image/jpeg', 'jpg')}
PHOTO_ID = re.compile(r'[A-Za-z0-9_-]{8,32}')
_NAME_CHARS = re.compile(r'[^\w .()+-]')


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one studio accepts and keeps.

  Attributes:
    max_upload_bytes: larger uploads are refused before (or while) they are read.
    max_pixels: larger photos are refused from their header, before decoding.
    max_photos, max_stored_pixels: photos kept in memory; the least recently used go first.
    max_hints: hints per request.
    max_json_bytes: request bodies other than uploads.
    preview_side: the preview's longest side in pixels (photos are never enlarged).
    workers: decodes, joins and encodings running at once (the network runs one at a time).
    uploads: upload bodies read at once (the rest wait, unread, in the socket).
    vividness: the lowest and highest vividness (a multiple of the model's chroma gain).
    suggestions: colors suggested at a point.
  """

  max_upload_bytes: int = 50 << 20
  max_pixels: int = 40_000_000
  max_photos: int = 12
  max_stored_pixels: int = 160_000_000
  max_hints: int = 256
  max_json_bytes: int = 256 << 10
  preview_side: int = 800
  workers: int = 2
  uploads: int = 4
  vividness: tuple[float, float] = (0.25, 3.0)
  suggestions: int = 8

  def as_dict(self):
    return dataclasses.asdict(self)


class StudioError(Exception):
  """A refusal with its HTTP status and a one-sentence message for the page."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status = status
    self.message = ' '.join(str(message).split())


def one_line(error):
  return ' '.join(str(error).split()) or type(error).__name__


def clean_name(name):
  """A display name from a client's file name: its last path part, safe characters only."""
  base = re.split(r'[\\/]', str(name or ''))[-1]
  base = _NAME_CHARS.sub('_', base).strip(' .')[:100]
  return base or 'photo'


def stem(name):
  return name.rsplit('.', 1)[0] if '.' in name.strip('.') else name


@dataclasses.dataclass(eq=False)
class Photo:
  """One uploaded photo: the full-resolution pixels, the network's input and the preview."""

  id: str
  name: str
  image: np.ndarray  # uint8 (H, W) or (H, W, 3), the photo as read_image gives it
  model_L: np.ndarray  # (S, S) float32, the network's input
  preview: np.ndarray  # uint8, longest side <= Limits.preview_side
  original_jpeg: bytes  # the preview of the photo itself, for the page's "before"
  # (hints key, ab (S, S, 2) at chroma gain 1, the hints at the network's size or None) of the
  # last request
  cache: tuple | None = None

  @property
  def height(self):
    return self.image.shape[0]

  @property
  def width(self):
    return self.image.shape[1]

  @property
  def pixels(self):
    return self.height * self.width

  def describe(self):
    return {
      'id': self.id,
      'name': self.name,
      'width': self.width,
      'height': self.height,
      'preview_width': self.preview.shape[1],
      'preview_height': self.preview.shape[0],
    }


class PhotoStore:
  """Photos by id, at most max_photos and max_pixels in all; the least recently used leave."""

  def __init__(self, max_photos, max_pixels):
    self._photos = collections.OrderedDict()
    self._lock = threading.Lock()
    self._max_photos = max_photos
    self._max_pixels = max_pixels

  def add(self, photo):
    """Keeps photo; returns the ids evicted to make room."""
    evicted = []
    with self._lock:
      self._photos[photo.id] = photo
      while len(self._photos) > 1 and (
        len(self._photos) > self._max_photos
        or sum(p.pixels for p in self._photos.values()) > self._max_pixels
      ):
        evicted.append(self._photos.popitem(last=False)[0])
    return evicted

  def get(self, photo_id):
    """The photo (now the most recently used); StudioError 404 for an unknown id."""
    if not isinstance(photo_id, str) or not PHOTO_ID.fullmatch(photo_id):
      raise StudioError(404, 'There is no such photo.')
    with self._lock:
      photo = self._photos.get(photo_id)
      if photo is None:
        raise StudioError(
          404,
          'This photo is no longer in memory (the studio keeps the '
          f'{self._max_photos} most recently used); add it again.',
        )
      self._photos.move_to_end(photo_id)
      return photo

  def remove(self, photo_id):
    with self._lock:
      return self._photos.pop(photo_id, None) is not None

  def list(self):
    with self._lock:
      return list(self._photos.values())


def _jpeg(image_u8, quality=90):
  buffer = io.BytesIO()
  Image.fromarray(image_u8).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _encode(image_u8, fmt):
  buffer = io.BytesIO()
  if fmt == 'png':
    # Level 1: a 12-megapixel PNG in 0.7 s instead of 4 s at the default 6, 15% larger.
    Image.fromarray(image_u8).save(buffer, format='PNG', compress_level=1)
  else:
    Image.fromarray(image_u8).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _downscale(image_u8, side):
  height, width = image_u8.shape[:2]
  scale = side / max(height, width)
  if scale >= 1:
    return image_u8
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  return np.asarray(Image.fromarray(image_u8).resize(size, Image.LANCZOS, reducing_gap=3.0))


def _number(name, value, lo, hi):
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise StudioError(400, f'Field {name!r} must be a finite number, got {value!r}.')
  if not lo <= value <= hi:
    raise StudioError(400, f'Field {name!r} must lie in [{lo:g}, {hi:g}], got {value:g}.')
  return float(value)


def _round_up(n, multiple):
  return -(-n // multiple) * multiple


class Engine:
  """Colorizes the studio's photos with one model; thread-safe (the network runs one at a time).

  The network's ab is computed at chroma gain 1 and stretched per request (the vividness), so a
  vividness change costs a join, not a network run; the last ab of each photo is kept, so the
  download of what the preview shows joins the same ab at full size.
  """

  def __init__(self, colorizer, predict=None, backend='jax fp32', limits=None):
    """Args:
    colorizer: a Colorizer with params (colorjax.load).
    predict: (L (B, S, S), hints) -> ab (B, S, S, 2) at chroma gain 1, hints not spread (the
      engine spreads them after the vividness stretch; see make_engine); default: JAX.
    backend: what predict runs on, for the page.
    limits: a Limits.
    """
    self.colorizer = colorizer
    self.config = colorizer.config
    self.limits = limits or Limits()
    self.backend = backend
    self.classification = self.config.loss == 'classification'
    self._predict = predict or inference.batch_predictor(gain_one(colorizer), 1, False)
    self._model_lock = threading.Lock()
    self.store = PhotoStore(self.limits.max_photos, self.limits.max_stored_pixels)

  def info(self):
    """What the page needs to know about the model and the limits."""
    return {
      'model': self.config.name,
      'loss': self.config.loss,
      'image_size': self.config.image_size,
      'hints': bool(self.config.hints),
      'suggest': bool(self.classification and self.config.hints),
      'vividness': self.classification,
      'chroma_gain': self.config.chroma_gain,
      'backend': self.backend,
      'limits': self.limits.as_dict(),
    }

  # -- photos ----------------------------------------------------------------------------------

  def add_photo(self, data, name):
    """Decodes an upload (never trusting its name or type) and keeps it; returns the Photo."""
    name = clean_name(name)
    limits = self.limits
    if len(data) > limits.max_upload_bytes:
      raise StudioError(413, too_many_bytes(name, len(data), limits.max_upload_bytes))
    if not data:
      raise StudioError(400, f'{name} is empty.')
    try:
      image = image_io.read_image(
        bytes(data), max_pixels=limits.max_pixels, max_bytes=limits.max_upload_bytes
      )
    except image_io.Skip as e:
      message = e.message.replace(f'the {len(data)} bytes of image data', name)
      if e.reason == 'decompression_bomb':
        raise StudioError(413, f'{message}; the studio refuses it before decoding.') from None
      if e.reason == 'not_an_image':
        raise StudioError(
          415, f'{name} is not an image the studio can read (JPEG, PNG, TIFF, WebP).'
        ) from None
      raise StudioError(415, f'{name} could not be decoded: {message}.') from None
    if min(image.shape[:2]) < 8:
      raise StudioError(415, f'{name} is {image.shape[1]}x{image.shape[0]}; too small to color.')
    preview = _downscale(image, limits.preview_side)
    photo = Photo(
      id=secrets.token_urlsafe(12),
      name=name,
      image=image,
      model_L=fullsize.model_input(image, self.config.image_size),
      preview=preview,
      original_jpeg=_jpeg(preview),
    )
    self.store.add(photo)
    return photo

  # -- requests --------------------------------------------------------------------------------

  def parse_hints(self, photo, items):
    """A request's hints (the CLI's JSON schema, by colorjax.hints.parse_hints), checked against
    the photo and the limits -> list[Hint]."""
    if items is None or items == []:
      return []
    if not self.config.hints:
      raise StudioError(400, 'This model was trained without hints; it takes none.')
    if not isinstance(items, list):
      raise StudioError(400, "Field 'hints' must be a list.")
    if len(items) > self.limits.max_hints:
      raise StudioError(400, f'At most {self.limits.max_hints} hints, got {len(items)}.')
    try:
      parsed = hints_lib.parse_hints({'hints': items})
    except ValueError as e:
      raise StudioError(400, f'Bad hints: {one_line(e)}.') from None
    for i, h in enumerate(parsed):
      if not (0 <= h.x <= photo.width - 1 and 0 <= h.y <= photo.height - 1):
        raise StudioError(
          400, f'Hint {i} at (x={h.x:g}, y={h.y:g}) is outside the {photo.width}x{photo.height} '
          'photo.'
        )  # fmt: skip
      if h.radius is not None and h.radius > max(photo.width, photo.height):
        raise StudioError(400, f'Hint {i}: radius {h.radius:g} is larger than the photo.')
    return parsed

  def vividness(self, value):
    if value is None:
      return 1.0
    lo, hi = self.limits.vividness
    value = _number('vividness', value, lo, hi)
    if not self.classification and value != 1:
      raise StudioError(
        400, 'This model has no vividness control (it is not a classification one).'
      )
    return value

  def small_ab(self, photo, hints):
    """(the network's ab (S, S, 2) at chroma gain 1 for these hints, not spread; the hints
    rasterized at the network's size, or None), cached per photo."""
    key = repr([dataclasses.astuple(h) for h in hints])
    cached = photo.cache
    if cached is not None and cached[0] == key:
      return cached[1:]
    size = self.config.image_size
    given = None
    if self.config.hints:
      if hints:
        hint_ab, mask = hints_lib.rasterize(hints, photo.height, photo.width, size)
      else:
        hint_ab = np.zeros((size, size, 2), np.float32)
        mask = np.zeros((size, size, 1), np.float32)
      given = (hint_ab[None], mask[None])
    try:
      with self._model_lock:
        ab = np.asarray(self._predict(photo.model_L[None], given)[0], np.float32)
    except Exception as e:  # pylint: disable=broad-except  (any runtime failure, said in one line)
      raise StudioError(500, f'The model failed: {one_line(e)}.') from None
    photo.cache = (key, ab, given if hints else None)
    return photo.cache[1:]

  def _ab(self, photo, hints, vividness):
    ab, given = self.small_ab(photo, hints)
    ab = jnp.asarray(ab)[None]
    if self.classification:
      ab = decoding.stretch_chroma(ab, self.config.chroma_gain * vividness)
    if given is not None:  # spread last, as colorize does after its decoding
      ab = propagation.spread_jit(photo.model_L[None, ..., None], ab, *given)
    return np.asarray(ab[0])

  def preview(self, photo, hints, vividness=1.0):
    """The colorized preview as JPEG bytes."""
    return _jpeg(fullsize.join(photo.preview, self._ab(photo, hints, vividness)))

  def download(self, photo, hints, vividness=1.0, fmt='png'):
    """(bytes, media type, file name) of the colorized photo at full resolution, its own L."""
    if not isinstance(fmt, str) or fmt not in FORMATS:
      raise StudioError(400, f"Field 'format' must be one of {sorted(FORMATS)}, got {fmt!r}.")
    rgb = fullsize.join(photo.image, self._ab(photo, hints, vividness))
    media_type, suffix = FORMATS[fmt]
    return _encode(rgb, fmt), media_type, f'{stem(photo.name)}-color.{suffix}'

  def suggest(self, photo, x, y, hints):
    """The model's most likely colors at photo pixel (x, y), given the other hints.

    Computed on the preview (the same network input up to resampling, the photo's point and
    hints scaled to it), so a 12-megapixel photo answers as fast as a small one.
    """
    if not self.classification:
      raise StudioError(400, 'This model cannot suggest colors (it is not a classification one).')
    x = _number('x', x, 0, photo.width - 1)
    y = _number('y', y, 0, photo.height - 1)
    ph, pw = photo.preview.shape[:2]
    sx, sy = pw / photo.width, ph / photo.height
    to_preview = lambda v, s, n: min(max((v + 0.5) * s - 0.5, 0.0), n - 1.0)
    scaled = [
      dataclasses.replace(
        h,
        x=to_preview(h.x, sx, pw),
        y=to_preview(h.y, sy, ph),
        radius=None if h.radius is None else h.radius * sx,
      )
      for h in hints
    ]
    try:
      with self._model_lock:
        colors = suggest_lib.suggest_colors(
          self.colorizer,
          photo.preview,
          to_preview(x, sx, pw),
          to_preview(y, sy, ph),
          k=self.limits.suggestions,
          hints=scaled or None,
        )
    except ValueError as e:
      raise StudioError(400, f'No suggestions: {one_line(e)}.') from None
    except Exception as e:  # pylint: disable=broad-except
      raise StudioError(500, f'The model failed: {one_line(e)}.') from None
    return [
      {'color': c['color'], 'ab': list(c['ab']), 'probability': c['probability']} for c in colors
    ]

  def check_hints(self, photo, document):
    """A loaded hints file (the CLI's schema) -> its hints, each with the color shown for it."""
    if not isinstance(document, dict) or set(document) != {'hints'}:
      raise StudioError(400, 'A hints file is an object {"hints": [...]} with no other keys.')
    hints = self.parse_hints(photo, document['hints'])
    out = hints_lib.dump_hints(hints)['hints']
    for item, h in zip(out, hints):
      if h.color is not None:
        item['display'] = h.color
      else:
        row, col = min(round(h.y), photo.height - 1), min(round(h.x), photo.width - 1)
        L = fullsize.lightness(photo.image[row : row + 1, col : col + 1])[0, 0]
        item['display'] = lab_hex(L, h.ab)
    return out

  # -- start-up and warm-up --------------------------------------------------------------------

  def warm_up(self):
    """Runs each compiled step once on a blank photo, so the first real request is not slow."""
    blank = np.full((64, 96), 128, np.uint8)
    model_L = fullsize.model_input(blank, self.config.image_size)
    photo = Photo('warm-up-photo', 'warm-up', blank, model_L, blank, b'')
    hints = [hints_lib.Hint(10, 10, color='#aa3322')] if self.config.hints else []
    self.preview(photo, hints)
    self.preview(photo, [])
    if self.classification and self.config.hints:
      self.suggest(photo, 20, 20, hints)
      self.suggest(photo, 20, 20, [])

  def warm_join(self, photo):
    """Compiles the full-size join for this photo's width now (a few seconds per new width on
    a 2-core CPU), so that its download takes only the join's own time."""
    height, width = photo.image.shape[:2]
    # The rows of fullsize.join's chunks: its compiled shape depends on the padded width only.
    rows = min(_round_up(height, 64), max(1, fullsize._PIXELS_PER_CHUNK // _round_up(width, 128)))  # pylint: disable=protected-access
    strip = photo.image[: min(height, rows)]
    size = self.config.image_size
    fullsize.join(strip, np.zeros((size, size, 2), np.float32))


def lab_hex(L, ab):
  """'#rrggbb' of a Lab color, its chroma reduced into sRGB (the color an ab hint shows)."""
  from colorjax import lab  # pylint: disable=g-import-not-at-top

  ab_fit = np.asarray(fullsize.fit_gamut(jnp.asarray([float(L)]), jnp.asarray([ab], jnp.float32)))
  rgb = lab.lab_to_rgb(np.array([float(L), *ab_fit[0]], np.float32))
  return '#' + ''.join(f'{int(v):02x}' for v in np.clip(np.round(np.asarray(rgb) * 255), 0, 255))


def too_many_bytes(name, size, limit):
  return f'{name} has {size / 1e6:.1f} MB, more than the limit of {limit / 1e6:.0f} MB.'


def gain_one(colorizer):
  """The colorizer decoding at chroma gain 1 (the studio stretches per request)."""
  if colorizer.config.loss != 'classification' or colorizer.config.chroma_gain == 1:
    return colorizer
  return decoding.with_decoding(colorizer, chroma_gain=1.0)


def make_engine(colorizer, backend='auto', precision='auto', limits=None, bundled_onnx=None):
  """An Engine with the fastest predictor here: an ONNX CPU runtime exported once into a private
  temporary folder (removed as soon as the runtime has compiled it), else JAX.

  Args:
    colorizer: a Colorizer with params.
    backend, precision: as launch.colorize's (colorize_files.make_predictor); 'auto' falls back
      to JAX when the [cpu] extra is missing or the export fails.
    limits: a Limits.
    bundled_onnx: the ONNX file an export carries (colorize_files.load_checkpoint), run instead
      of exporting when it fits.
  """
  from colorjax import colorize_files  # pylint: disable=g-import-not-at-top

  raw = gain_one(colorizer)
  with tempfile.TemporaryDirectory(prefix='colorjax-studio-') as tmp:
    predict, label = colorize_files.make_predictor(
      raw, backend, precision, 1, tmp, bundled_onnx, spread_hints=False
    )
  return Engine(colorizer, predict, label, limits)
