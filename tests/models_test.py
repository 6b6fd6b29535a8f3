"""Networks: param counts, output shapes for every (model, loss), decoding, and a short fit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from colorjax import constants, losses, models, quantize

Q = 268
PAIRS = [(name, loss) for name in models.MODEL_NAMES for loss in models.LOSSES]


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables))


def _abstract_init(config, shape):
  model = models.create_model(config)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  return model, variables


def test_param_counts_and_no_batch_stats():
  _, seed = _abstract_init(models.ModelConfig(), (1, 64, 64, 1))
  assert _count(seed) == 6_215_074
  for loss in models.LOSSES:
    _, unet = _abstract_init(models.ModelConfig(name='unet', loss=loss), (1, 64, 64, 1))
    assert set(unet) == {'params'}  # GroupNorm: params are the whole state
    assert 1_000_000 < _count(unet) < 6_215_074
  # The classification seed swaps the 3x3 conv to 2 channels for a 1x1 conv to Q logits.
  _, seed_cls = _abstract_init(models.ModelConfig(loss='classification'), (1, 64, 64, 1))
  assert _count(seed_cls) == 6_215_074 - (3 * 3 * 32 * 2 + 2) + (32 * Q + Q)


@pytest.mark.parametrize('name,loss', PAIRS)
def test_conv_implementations_share_params_and_function(name, loss):
  L = jax.random.uniform(jax.random.key(3), (2, 32, 32, 1), maxval=100.0)
  out, params, grads = {}, {}, {}
  for conv in ('xla', 'matmul'):
    model = models.create_model(models.ModelConfig(name=name, loss=loss, width=8, conv=conv))
    params[conv] = model.init(jax.random.key(0), L)
    out[conv] = model.apply(params['xla'], L)
    grads[conv] = jax.jit(jax.grad(lambda p, m=model: jnp.mean(m.apply(p, L) ** 2)))(params['xla'])
  jax.tree.map(np.testing.assert_array_equal, params['xla'], params['matmul'])
  np.testing.assert_allclose(out['matmul'], out['xla'], atol=2e-4, rtol=1e-4)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=2e-3),
    grads['matmul'],
    grads['xla'],
  )
  assert models.resolve_conv('auto') == 'matmul'  # these tests run on the CPU
  with pytest.raises(ValueError, match='conv must be one of'):
    models.ModelConfig(conv='winograd')


@pytest.mark.parametrize('name,loss', PAIRS)
@pytest.mark.parametrize('size', [(64, 64), (48, 80)])
def test_output_shapes(name, loss, size):
  H, W = size
  for stride in models.HEAD_STRIDES:
    config = models.ModelConfig(name=name, loss=loss, head_stride=stride)
    model, variables = _abstract_init(config, (2, H, W, 1))
    out = jax.eval_shape(model.apply, variables, jnp.zeros((2, H, W, 1)))
    if loss == 'mse':
      assert out.shape == (2, H, W, 2)
    else:
      assert out.shape == (2, H // stride, W // stride, Q)
    assert out.dtype == jnp.float32
    assert jax.eval_shape(lambda o: models.decode(config, o), out).shape == (2, H, W, 2)


@pytest.mark.parametrize('name,loss', PAIRS)
def test_decode_gives_ab_in_range_at_input_size(name, loss):
  # Extreme outputs (no network needed: shapes are covered above, a real pass by the fit below).
  config = models.ModelConfig(name=name, loss=loss)
  rng = np.random.default_rng(1)
  if loss == 'mse':
    out = np.tanh(rng.normal(0, 5, (2, 16, 24, 2))).astype(np.float32)  # saturated: |ab| to 128
  else:
    out = rng.normal(0, 50, (2, 8, 12, Q)).astype(np.float32)  # near one-hot distributions
  ab = np.asarray(models.decode(config, out))
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
    models.decode(config, logits), quantize.annealed_mean(logits, 0.5), atol=1e-4
  )
  np.testing.assert_allclose(
    models.decode(config, logits, temperature=1.0), quantize.annealed_mean(logits, 1.0), atol=1e-4
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
  np.testing.assert_allclose(models.decode(config2, logits), up2(up2(small, 1), 2), atol=1e-3)
  with pytest.raises(ValueError, match='temperature'):
    models.decode(models.ModelConfig(), np.zeros((1, 8, 8, 2)), temperature=0.5)


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
  np.testing.assert_allclose(models.decode(config, logits), ref, atol=1e-3)
  # Weights alone change nothing; a correction toward one bin pulls every pixel toward it.
  np.testing.assert_allclose(
    models.decode(dataclasses.replace(config, prior_correction=0.0), logits),
    models.decode(plain, logits),
  )
  target = 17
  toward = tuple(5.0 if q == target else 0.0 for q in range(Q))
  pulled = models.decode(
    dataclasses.replace(config, bin_log_weights=toward, prior_correction=4.0), logits
  )
  center = np.asarray(quantize.BIN_CENTERS[target])
  base = models.decode(plain, logits)
  assert np.all(np.linalg.norm(pulled - center, axis=-1) < np.linalg.norm(base - center, axis=-1))
  with pytest.raises(ValueError, match='bin_log_weights'):
    models.decode(dataclasses.replace(plain, prior_correction=0.2), logits)
  # A negative correction pushes away from the bin; -1 is the floor (it undoes the rebalancing).
  pushed = models.decode(
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
  base = np.asarray(models.decode(plain, logits), np.float64)
  stretched = np.asarray(models.decode(dataclasses.replace(plain, chroma_gain=1.3), logits))
  # NumPy reference, per image: mean + 1.3 * (ab - mean), after the upsampling.
  mean = base.reshape(3, -1, 2).mean(axis=1)[:, None, None, :]
  ref = np.clip(mean + 1.3 * (base - mean), -constants.AB_MAX, constants.AB_MAX)
  np.testing.assert_allclose(stretched, ref, atol=1e-3)
  # Each image keeps its mean (nothing clips here), so the tint does not change.
  assert np.abs(ref).max() < constants.AB_MAX
  np.testing.assert_allclose(stretched.mean(axis=(1, 2)), mean[:, 0, 0], atol=1e-3)
  # The images are independent: stretching a batch is stretching each image.
  one = models.decode(dataclasses.replace(plain, chroma_gain=1.3), logits[1:2])
  np.testing.assert_allclose(one[0], stretched[1], atol=1e-4)
  # Far outside the gamut it clips; a gain below 1 desaturates toward the mean.
  wild = np.asarray(models.stretch_chroma(base, 50.0))
  assert np.abs(wild).max() == constants.AB_MAX
  damped = np.asarray(models.stretch_chroma(base, 0.5))
  assert np.abs(damped - mean).max() < np.abs(base - mean).max()
  assert models.stretch_chroma(base, 1.0) is base
  for bad in (0.0, -1.0, float('inf'), float('nan')):
    with pytest.raises(ValueError, match='chroma_gain must be positive'):
      dataclasses.replace(plain, chroma_gain=bad)
  with pytest.raises(ValueError, match="chroma_gain is a 'classification' decoding"):
    models.ModelConfig(chroma_gain=1.5)


def test_config_json_round_trip_and_validation():
  config = models.ModelConfig(
    name='unet', loss='classification', temperature=0.3, head_stride=1, width=24
  )
  assert models.ModelConfig.from_json(config.to_json()) == config
  weighted = dataclasses.replace(config, prior_correction=0.2, bin_log_weights=[0.5] * Q)
  again = models.ModelConfig.from_json(weighted.to_json())
  assert again == weighted and isinstance(again.bin_log_weights, tuple)
  hash(again)  # a static argument of jit
  # A model.json written before the new fields existed still loads, with their defaults.
  old = json.dumps({'name': 'seed', 'loss': 'mse', 'image_size': 256, 'dtype': 'float32'})
  assert models.ModelConfig.from_json(old) == models.ModelConfig()
  with pytest.raises(ValueError, match='head_stride'):
    models.ModelConfig(head_stride=4)
  with pytest.raises(ValueError, match='width'):
    models.ModelConfig(width=20)
  with pytest.raises(ValueError, match='temperature'):
    models.ModelConfig(temperature=0.0)
  with pytest.raises(ValueError, match='loss'):
    models.ModelConfig(loss='l1')


def _tiny_colored_batch():
  """Two 16x16 images whose colors follow L: regions of three (L, a, b) colors."""
  colors = np.array([[70.0, 40.0, 50.0], [40.0, -30.0, 20.0], [55.0, 10.0, -45.0]], np.float32)
  ids = np.zeros((2, 16, 16), int)
  ids[0, :8] = 1
  ids[0, 8:, 8:] = 2
  ids[1, :, :8] = 2
  ids[1, 4:12, 8:] = 1
  lab = colors[ids]
  return lab[..., :1], lab[..., 1:]


@pytest.mark.slow
def test_classification_loss_decreases_with_adam():
  config = models.ModelConfig(name='unet', loss='classification', width=8)
  model = models.create_model(config)
  L, ab = _tiny_colored_batch()
  params = jax.jit(model.init)(jax.random.key(0), L)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  weights = jnp.ones(Q)

  @jax.jit
  def step(params, opt_state):
    def loss_of(p):
      return losses.classification_loss(model.apply(p, L), ab, weights)[0]

    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  history = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    history.append(float(loss))
  assert np.isfinite(history).all()
  assert history[-1] < 0.6 * history[0], history
  # Decoded colors move toward the targets: closer than the gray prediction (ab = 0).
  pred = np.asarray(models.decode(config, jax.jit(model.apply)(params, L)))
  assert np.abs(pred - ab).mean() < 0.8 * np.abs(ab).mean()
