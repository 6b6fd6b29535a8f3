"""Figures in the report's layout: one row per image, columns Original | Grayscale | Model ..."""

import numpy as np
from PIL import Image, ImageDraw

from colorjax import lab

_TITLE_HEIGHT = 18


def lab_to_uint8(L, ab):
  """L (..., H, W[, 1]) and ab (..., H, W, 2) in Lab units -> RGB uint8 (..., H, W, 3)."""
  L = np.asarray(L, np.float32)
  if L.shape[-1] != 1:
    L = L[..., None]
  rgb = lab.lab_to_rgb(np.concatenate([L, np.asarray(ab, np.float32)], axis=-1))
  return np.rint(rgb * 255.0).astype(np.uint8)


def gray_uint8(L):
  """The grayscale input as RGB uint8: the same L with zero chroma."""
  L = np.asarray(L, np.float32)
  if L.shape[-1] != 1:
    L = L[..., None]
  return lab_to_uint8(L, np.zeros(L.shape[:-1] + (2,), np.float32))


def _fit(image, height):
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.shape[0] == height:
    return image
  width = max(1, round(image.shape[1] * height / image.shape[0]))
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def comparison_grid(rows, titles=None, tile_height=None, pad=4):
  """Lays out rows of uint8 RGB images (each row one photo) under column titles.

  Args:
    rows: a list of rows, each a list of (H, W, 3) or (H, W) uint8 images.
    titles: optional column titles, e.g. ['Original', 'Grayscale', 'Model'].
    tile_height: height every tile is resized to (default: the first image's height).
    pad: white pixels between tiles.

  Returns:
    One (H, W, 3) uint8 image.
  """
  if not rows or not rows[0]:
    raise ValueError('comparison_grid needs at least one row with one image')
  tile_height = tile_height or np.asarray(rows[0][0]).shape[0]
  rows = [[_fit(im, tile_height) for im in row] for row in rows]
  ncols = max(len(r) for r in rows)
  col_w = [max(r[c].shape[1] for r in rows if c < len(r)) for c in range(ncols)]
  top = _TITLE_HEIGHT if titles else 0
  height = top + len(rows) * (tile_height + pad) + pad
  width = sum(col_w) + pad * (ncols + 1)
  canvas = np.full((height, width, 3), 255, np.uint8)
  for r, row in enumerate(rows):
    y = top + pad + r * (tile_height + pad)
    x = pad
    for c, im in enumerate(row):
      canvas[y : y + tile_height, x : x + im.shape[1]] = im
      x += col_w[c] + pad
  if titles:
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    x = pad
    for c, title in enumerate(titles[:ncols]):
      draw.text((x + 2, 3), str(title), fill=(0, 0, 0))
      x += col_w[c] + pad
    canvas = np.asarray(pil)
  return canvas


def save_png(path, image):
  """Writes a uint8 image to a PNG file."""
  Image.fromarray(np.asarray(image, np.uint8)).save(path, format='PNG')
