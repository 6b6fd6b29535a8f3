"""colorjax.decoding: the regression scaling, the annealed mean, the prior correction, the chroma
stretch, with_decoding and the export form of the x2 upsampling, against NumPy references."""

import dataclasses

import jax
import numpy as np
import pytest

from colorjax import constants, decoding, inference, models, quantize

Q = 268
PAIRS = [(name, loss) for name in models.MODEL_NAMES for loss in models.LOSSES]


@pytest.mark.parametrize('name,loss', PAIRS)
def test_decode_gives_ab_in_range_at_input_size(name, loss):
  # Extreme outputs (no network needed: shapes are covered above, a real pass by the fit below).
  config = models.ModelConfig(name=name, loss=loss)
  rng = np.random.default_rng(1)
  if loss == 'mse':
    out = np.tanh(rng.normal(0, 5, (2, 16, 24, 2))).astype(np.float32)  # saturated: |ab| to 128
  else:
    out = rng.normal(0, 50, (2, 8, 12, Q)).astype(np.float32)  # near one-hot distributions
  ab = np.asarray(decoding.decode(config, out))
  assert ab.shape == (2, 16, 24, 2) and np.isfinite(ab).all()
  assert np.abs(ab).max() <= constants.AB_MAX
  if loss == 'mse':
    ref = np.clip(out * constants.AB_SCALE, -constants.AB_MAX, constants.AB_MAX)
    np.testing.assert_allclose(ab, ref, rtol=1e-6)
    assert np.abs(ab).max() == constants.AB_MAX


def test_decode_classification_is_upsampled_annealed_mean():
  logits = np.random.default_rng(2).normal(0, 20, (2, 4, 6, Q)).astype(np.float32)
  config = models.ModelConfig(loss='classification', head_stride=1, temperature=0.5)
  np.testing.assert_allclose(
    decoding.decode(config, logits), quantize.annealed_mean(logits, 0.5), atol=1e-4
  )
  hot = dataclasses.replace(config, temperature=1.0)
  np.testing.assert_allclose(
    decoding.decode(hot, logits), quantize.annealed_mean(logits, 1.0), atol=1e-4
  )

  # Stride 2: bilinear x2 of the annealed mean (half-pixel centers, edges clamped), by hand:
  # out[2k] = 0.75 x[k] + 0.25 x[k - 1], out[2k + 1] = 0.75 x[k] + 0.25 x[k + 1].
  def up2(x, axis):
    prev = np.concatenate([np.take(x, [0], axis), np.delete(x, -1, axis)], axis)
    nxt = np.concatenate([np.delete(x, 0, axis), np.take(x, [-1], axis)], axis)
    return np.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis + 1).reshape(
      x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1 :]
    )

  small = np.asarray(quantize.annealed_mean(logits, 0.5), np.float64)
  config2 = dataclasses.replace(config, head_stride=2)
  np.testing.assert_allclose(decoding.decode(config2, logits), up2(up2(small, 1), 2), atol=1e-3)


def test_decode_prior_correction_is_logit_adjustment():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (2, 4, 6, Q)).astype(np.float32)
  log_w = tuple(float(x) for x in rng.normal(0, 1, Q))
  plain = models.ModelConfig(loss='classification', head_stride=1, temperature=0.4)
  config = dataclasses.replace(plain, prior_correction=0.3, bin_log_weights=log_w)
  # beta * log w added to every pixel's logits before the annealed mean (NumPy reference).
  shifted = (logits + 0.3 * np.asarray(log_w, np.float32)) / 0.4
  p = np.exp(shifted - shifted.max(-1, keepdims=True))
  ref = (p / p.sum(-1, keepdims=True)) @ np.asarray(quantize.BIN_CENTERS, np.float64)
  np.testing.assert_allclose(decoding.decode(config, logits), ref, atol=1e-3)
  # Weights alone change nothing; a correction toward one bin pulls every pixel toward it.
  np.testing.assert_allclose(
    decoding.decode(dataclasses.replace(config, prior_correction=0.0), logits),
    decoding.decode(plain, logits),
  )
  target = 17
  toward = tuple(5.0 if q == target else 0.0 for q in range(Q))
  pulled = decoding.decode(
    dataclasses.replace(config, bin_log_weights=toward, prior_correction=4.0), logits
  )
  center = np.asarray(quantize.BIN_CENTERS[target])
  base = decoding.decode(plain, logits)
  assert np.all(np.linalg.norm(pulled - center, axis=-1) < np.linalg.norm(base - center, axis=-1))
  with pytest.raises(ValueError, match='bin_log_weights'):
    decoding.decode(dataclasses.replace(plain, prior_correction=0.2), logits)
  # A negative correction pushes away from the bin; -1 is the floor (it undoes the rebalancing).
  pushed = decoding.decode(
    dataclasses.replace(config, bin_log_weights=toward, prior_correction=-1.0), logits
  )
  # (Removing mass p from the bin scales each pixel's distance to it by 1 / (1 - p).)
  far, near = np.linalg.norm(pushed - center, axis=-1), np.linalg.norm(base - center, axis=-1)
  assert np.all(far >= near - 1e-4) and far.mean() > near.mean() + 1e-3
  for bad in (-1.5, float('inf'), float('nan')):
    with pytest.raises(ValueError, match='prior_correction'):
      dataclasses.replace(plain, prior_correction=bad)


def test_decode_chroma_gain_stretches_each_image_around_its_mean():
  rng = np.random.default_rng(4)
  logits = rng.normal(0, 1, (3, 4, 6, Q)).astype(np.float32)
  plain = models.ModelConfig(loss='classification', head_stride=2, temperature=0.3)
  base = np.asarray(decoding.decode(plain, logits), np.float64)
  stretched = np.asarray(decoding.decode(dataclasses.replace(plain, chroma_gain=1.3), logits))
  # NumPy reference, per image: mean + 1.3 * (ab - mean), after the upsampling.
  mean = base.reshape(3, -1, 2).mean(axis=1)[:, None, None, :]
  ref = np.clip(mean + 1.3 * (base - mean), -constants.AB_MAX, constants.AB_MAX)
  np.testing.assert_allclose(stretched, ref, atol=1e-3)
  # Each image keeps its mean (nothing clips here), so the tint does not change.
  assert np.abs(ref).max() < constants.AB_MAX
  np.testing.assert_allclose(stretched.mean(axis=(1, 2)), mean[:, 0, 0], atol=1e-3)
  # The images are independent: stretching a batch is stretching each image.
  one = decoding.decode(dataclasses.replace(plain, chroma_gain=1.3), logits[1:2])
  np.testing.assert_allclose(one[0], stretched[1], atol=1e-4)
  # Far outside the gamut it clips; a gain below 1 desaturates toward the mean.
  wild = np.asarray(decoding.stretch_chroma(base, 50.0))
  assert np.abs(wild).max() == constants.AB_MAX
  damped = np.asarray(decoding.stretch_chroma(base, 0.5))
  assert np.abs(damped - mean).max() < np.abs(base - mean).max()
  assert decoding.stretch_chroma(base, 1.0) is base
  for bad in (0.0, -1.0, float('inf'), float('nan')):
    with pytest.raises(ValueError, match='chroma_gain must be positive'):
      dataclasses.replace(plain, chroma_gain=bad)
  with pytest.raises(ValueError, match="chroma_gain is a 'classification' decoding"):
    models.ModelConfig(chroma_gain=1.5)


def test_upsample2_bilinear_matches_jax_image_resize():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  expected = jax.image.resize(x, (2, 10, 14, 3), method='bilinear')
  np.testing.assert_allclose(decoding.upsample2_bilinear(x), expected, rtol=0, atol=1e-5)
  # Hand check on one row: centers at 0.25 / 0.75 between neighbours, edges clamped.
  row = decoding.upsample2_bilinear(np.array([0.0, 4.0]).reshape(1, 1, 2, 1))[0, 0, :, 0]
  np.testing.assert_allclose(row, [0.0, 1.0, 3.0, 4.0])


def _colorizer(**fields):
  config = models.ModelConfig(image_size=32, **fields)
  L = np.zeros((1, 32, 32, 1), np.float32)
  return inference.Colorizer(models.create_model(config).init(jax.random.key(0), L), config)


def test_with_decoding_replaces_a_classification_decoding_only():
  colorizer = _colorizer()
  assert decoding.with_decoding(colorizer) is colorizer
  with pytest.raises(ValueError, match="'mse' model takes no temperature"):
    decoding.with_decoding(colorizer, temperature=0.5)
  with pytest.raises(ValueError, match="'mse' model takes no prior_correction"):
    decoding.with_decoding(colorizer, prior_correction=0.5)
  with pytest.raises(ValueError, match="'mse' model takes no chroma_gain"):
    decoding.with_decoding(colorizer, chroma_gain=1.5)
  cls = _colorizer(loss='classification')
  new = decoding.with_decoding(cls, temperature=0.2)
  assert (new.config.temperature, new.config.prior_correction) == (0.2, cls.config.prior_correction)
  assert new.params is cls.params and cls.config.temperature == quantize.TEMPERATURE
  gained = decoding.with_decoding(new, chroma_gain=2)
  assert (gained.config.temperature, gained.config.chroma_gain) == (0.2, 2.0)
  with pytest.raises(ValueError, match='chroma_gain must be positive'):
    decoding.with_decoding(cls, chroma_gain=0)
  with pytest.raises(ValueError, match='temperature must be positive'):
    decoding.with_decoding(cls, temperature=-1)
  # The colorizer's decoding is what colorize applies.
  L = np.linspace(0, 100, 32 * 32, dtype=np.float32).reshape(1, 32, 32, 1)
  logits = models.create_model(cls.config).apply(cls.params, L)
  np.testing.assert_allclose(
    inference.colorize(new, L), decoding.decode(new.config, logits), atol=1e-5
  )
