"""colorjax.suggest_colors: a classification model's most likely colors at a photo's pixel."""

import jax
import numpy as np
import pytest
import skimage.data

import colorjax
from colorjax import decoding, fullsize, inference, lab, models, quantize

SIZE = 64


@pytest.fixture(scope='module')
def colorizer():
  config = models.ModelConfig(
    name='unet', loss='classification', image_size=SIZE, width=8, hints=True, head_stride=2
  )
  params = models.create_model(config).init(jax.random.key(1), np.zeros((1, SIZE, SIZE, 1)))
  # Sharper distributions than at init: scale the head so a few bins stand out.
  return inference.Colorizer(jax.tree.map(lambda x: x * 3.0, params), config)


def test_suggestions_are_the_top_bins_at_that_pixel(colorizer):
  photo = skimage.data.chelsea()  # 451 x 300
  x, y = 300, 120
  got = colorjax.suggest_colors(colorizer, photo, x, y, k=5)
  # The same from the network's logits by hand: the head pixel holding (x, y) at stride 2.
  L = fullsize.model_input(photo, SIZE)[None, ..., None]
  logits = models.create_model(colorizer.config).apply(colorizer.params, L)
  row, col = int((y + 0.5) * (SIZE // 2) / 300), int((x + 0.5) * (SIZE // 2) / 451)
  logit = np.asarray(decoding.prior_corrected(colorizer.config, logits))[0, row, col]
  p = np.exp(logit - logit.max())
  p /= p.sum()
  top = np.argsort(-p)[:5]
  np.testing.assert_allclose([s['probability'] for s in got], p[top], rtol=1e-4)
  assert [s['probability'] for s in got] == sorted((s['probability'] for s in got), reverse=True)
  # Each color is its bin at the photo's lightness there (in sRGB: chroma fitted if needed).
  L_here = fullsize.lightness(photo[y : y + 1, x : x + 1])[0, 0]
  for s, q in zip(got, top):
    rgb = np.array([int(s['color'][i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
    Lab = lab.rgb8_to_lab(rgb[None])[0]
    assert abs(Lab[0] - L_here) < 1.5
    center = np.asarray(quantize.BIN_CENTERS)[q]
    scale = np.dot(s['ab'], center) / np.dot(center, center)
    assert 0 < scale <= 1 + 1e-4  # the bin's hue, its chroma at most the bin's
    np.testing.assert_allclose(Lab[1:], s['ab'], atol=2.0)


def test_suggestions_follow_the_hints_given(colorizer):
  photo = skimage.data.coffee()
  hint = colorjax.hints.Hint(x=200, y=200, ab=(60.0, 50.0), radius=30)
  plain = colorjax.suggest_colors(colorizer, photo, 200, 200, k=3)
  hinted = colorjax.suggest_colors(colorizer, photo, 200, 200, k=3, hints=[hint])
  assert plain != hinted


def test_bad_requests_say_why(colorizer):
  photo = skimage.data.coffee()
  mse = inference.Colorizer(
    models.create_model(models.ModelConfig(image_size=SIZE)).init(
      jax.random.key(0), np.zeros((1, SIZE, SIZE, 1))
    ),
    models.ModelConfig(image_size=SIZE),
  )
  with pytest.raises(ValueError, match="need a 'classification' model"):
    colorjax.suggest_colors(mse, photo, 1, 1)
  with pytest.raises(ValueError, match='outside the 600x400 photo'):
    colorjax.suggest_colors(colorizer, photo, 600, 10)
  with pytest.raises(ValueError, match='k must be'):
    colorjax.suggest_colors(colorizer, photo, 1, 1, k=0)
