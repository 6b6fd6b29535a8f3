"""Suggested colors at a point of a photo: the most likely colors of a classification model there
(ideepcolor's palette), as sRGB hex with their probabilities."""

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import decoding, fullsize, inference, lab, models, quantize


def _hex(rgb_u8):
  return '#' + ''.join(f'{int(c):02x}' for c in rgb_u8)


def suggest_colors(colorizer, image, x, y, k=8, hints=None):
  """The k most likely colors at photo pixel (x, y).

  Args:
    colorizer: a Colorizer of a 'classification' model (its distribution over ab bins, with the
      config's prior correction, at temperature 1).
    image: a path, PIL image or array of any size (see colorize_image).
    x, y: column and row in the photo's pixels.
    k: how many colors.
    hints: optional colorjax.hints.Hint points already given (a hint-taking model): the
      suggestions then follow them, as the colorization does.

  Returns:
    [{'color': '#rrggbb', 'ab': (a, b), 'probability': p}, ...], most likely first: each bin's
    ab at the photo's own lightness there, its chroma reduced where needed to fit sRGB (the ab
    given is the fitted one, the color's).
  """
  if colorizer.config.loss != 'classification':
    raise ValueError(
      f"suggested colors need a 'classification' model; this one is {colorizer.config.loss!r}"
    )
  if not 1 <= k <= quantize.NUM_BINS:
    raise ValueError(f'k must be in [1, {quantize.NUM_BINS}], got {k}')
  photo = fullsize.read_image(image)
  height, width = photo.shape[:2]
  if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
    raise ValueError(f'({x:g}, {y:g}) lies outside the {width}x{height} photo')
  size = colorizer.config.image_size
  L = fullsize.model_input(photo, size)[None, ..., None]
  given = inference.photo_hints(colorizer, photo, hints)
  if given is not None:
    given = tuple(h[None] for h in given)
  logits = _logits(colorizer, L, given)[0]
  h, w = logits.shape[:2]
  row = min(int((y + 0.5) * h / height), h - 1)
  col = min(int((x + 0.5) * w / width), w - 1)
  p = np.asarray(jax.nn.softmax(jnp.asarray(logits[row, col], jnp.float32)), np.float64)
  best = np.argsort(-p)[:k]
  ab = np.asarray(quantize.BIN_CENTERS, np.float32)[best]
  L_here = np.full(
    len(best), fullsize.lightness(photo[int(y) : int(y) + 1, int(x) : int(x) + 1])[0, 0]
  )
  ab_fit = np.asarray(fullsize.fit_gamut(jnp.asarray(L_here), jnp.asarray(ab)))
  rgb = lab.lab_to_rgb(np.concatenate([L_here[:, None], ab_fit], -1).astype(np.float32))
  rgb_u8 = np.clip(np.round(np.asarray(rgb) * 255), 0, 255).astype(np.uint8)
  return [
    {'color': _hex(c), 'ab': (float(a), float(b)), 'probability': float(p[i])}
    for c, (a, b), i in zip(rgb_u8, ab_fit, best)
  ]


@jax.jit
def _apply(colorizer, L, hints):
  output = models.create_model(colorizer.config).apply(colorizer.params, L, hints)
  return decoding.prior_corrected(colorizer.config, output)


def _logits(colorizer, L, hints):
  return np.asarray(_apply(colorizer, L, hints))
