"""train_step / eval_step: a golden one-step loss against a NumPy forward, learning, bad input."""

import jax
import numpy as np
import optax
import pytest
from image_fixtures import photo_codes

from colorjax import augment, constants, hints, losses, models, quantize, records, train_step

SIZE, BATCH = 32, 4


def _np_conv(x, kernel, bias, stride):
  """'SAME' 3x3 convolution (XLA's padding rule) in float64 NumPy, NHWC / HWIO."""
  kh, kw, _, feats = kernel.shape
  b, h, w, _ = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  pads = []
  for size, out, k in ((h, out_h, kh), (w, out_w, kw)):
    total = max((out - 1) * stride + k - size, 0)
    pads.append((total // 2, total - total // 2))
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  y = np.zeros((b, out_h, out_w, feats))
  for i in range(kh):
    for j in range(kw):
      patch = xp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
      y += patch @ kernel[i, j]
  return y + bias


def _np_seed_net(params, L):
  """The report's network written out in NumPy (layer order of models.SeedNet)."""
  p = params['params']
  strides = [2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1]
  up = lambda x: x.repeat(2, axis=1).repeat(2, axis=2)
  x = np.asarray(L, np.float64) * constants.L_INPUT_SCALE
  for i, stride in enumerate(strides):
    conv = p[f'Conv_{i}']
    if i in (9, 10):
      x = up(x)
    x = _np_conv(
      x, np.asarray(conv['kernel'], np.float64), np.asarray(conv['bias'], np.float64), stride
    )
    x = np.tanh(x) if i == 11 else np.maximum(x, 0)
  return up(x)


@pytest.fixture(scope='module')
def setup():
  config = models.ModelConfig(image_size=SIZE)
  model = models.create_model(config)
  tx = train_step.make_optimizer(1e-3, eps=1e-7)
  step, evaluate, _ = train_step.bind(model, tx, config, augment.AugmentConfig.none())
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, SIZE))(jax.random.key(0))
  return jax.jit(step), jax.jit(evaluate), state


def test_one_step_golden_loss_and_adam_update(setup):
  step, evaluate, state = setup
  batch = photo_codes(SIZE)
  params0 = jax.tree.map(np.asarray, state.params)
  new_state, metrics = step(state, batch, jax.random.key(1))
  L, ab = records.dequantize(batch['L'], batch['ab'])
  out = _np_seed_net(params0, L)
  expected = np.mean((out - ab / constants.AB_SCALE) ** 2)
  np.testing.assert_allclose(float(metrics['loss']), expected, rtol=2e-4)
  # eval_step sees the same (unaugmented) batch: the same loss, summed over 4 examples.
  ev = evaluate(state.params, batch)
  np.testing.assert_allclose(float(ev['loss_sum']) / float(ev['count']), expected, rtol=2e-4)
  assert float(ev['count']) == BATCH
  # Adam's first step moves every parameter with a clear gradient by lr * sign(-gradient).
  assert int(new_state.step) == 1
  delta = jax.tree.map(lambda a, b: np.asarray(a) - b, new_state.params, params0)
  flat = np.concatenate([d.ravel() for d in jax.tree.leaves(delta)])
  assert np.abs(flat).max() <= 1e-3 * (1 + 1e-4)
  assert np.median(np.abs(flat)) > 0.8e-3  # |g| / (|g| + eps) is near 1 for most weights
  assert np.isfinite(float(metrics['grad_norm'])) and float(metrics['grad_norm']) > 0


def test_padding_mask_in_eval_step(setup):
  _, evaluate, state = setup
  batch = photo_codes(SIZE)
  full = evaluate(state.params, batch)
  masked = evaluate(state.params, dict(batch, mask=np.array([True, True, False, False])))
  first_two = evaluate(state.params, {k: v[:2] for k, v in batch.items()})
  assert float(masked['count']) == 2
  np.testing.assert_allclose(float(masked['loss_sum']), float(first_two['loss_sum']), rtol=1e-5)
  assert float(full['loss_sum']) > float(masked['loss_sum'])


def test_loss_falls_on_photos(setup):
  step, _, state = setup
  batch = photo_codes(SIZE)
  losses = []
  for i in range(60):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


def test_augmentation_depends_on_example_index_only():
  rng = jax.random.key(3)
  batch = photo_codes(16)
  L, ab = augment.prepare_batch(batch)
  aug = jax.jit(lambda *a: train_step.augment_examples(*a, augment.AugmentConfig()))
  L_all, ab_all = aug(rng, batch['index'], L, ab)
  L_two, ab_two = aug(rng, batch['index'][2:], L[2:], ab[2:])
  np.testing.assert_array_equal(np.asarray(L_all)[2:], np.asarray(L_two))
  np.testing.assert_array_equal(np.asarray(ab_all)[2:], np.asarray(ab_two))
  assert not np.allclose(np.asarray(L_all), np.asarray(L))  # it did transform


def test_schedule_and_optimizer_settings():
  sched = train_step.learning_rate_schedule(1.0, 10, warmup_steps=2, decay='linear')
  np.testing.assert_allclose(
    [float(sched(s)) for s in (0, 1, 2, 6, 10)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
  )
  cos = train_step.learning_rate_schedule(2.0, 4, decay='cosine')
  np.testing.assert_allclose(float(cos(2)), 1.0, atol=1e-6)
  clipped = train_step.make_optimizer(1.0, grad_clip=0.5)
  grads = {'w': np.array([3.0, 4.0], np.float32)}
  updates, _ = clipped.update(grads, clipped.init(grads))
  ref = optax.adam(1.0)
  ref_updates, _ = ref.update({'w': grads['w'] * 0.1}, ref.init(grads))
  np.testing.assert_allclose(updates['w'], ref_updates['w'], rtol=1e-4)
  with pytest.raises(ValueError, match='decay'):
    train_step.learning_rate_schedule(1.0, 10, decay='step')
  with pytest.raises(ValueError, match='learning_rate'):
    train_step.make_optimizer(0.0)
  with pytest.raises(ValueError, match='grad_clip'):
    train_step.make_optimizer(1.0, grad_clip=-1.0)


def test_bad_batch_is_rejected(setup):
  step, _, state = setup
  batch = photo_codes(SIZE)
  bad = dict(batch, L=np.repeat(batch['L'], 3, axis=-1))
  with pytest.raises(ValueError, match=r'\(B, H, W, 1\)'):
    step(state, bad, jax.random.key(0))
  with pytest.raises(ValueError, match='unknown loss'):
    train_step.loss_fn('l1', np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)))


def test_classification_loss_step_matches_losses_module():
  config = models.ModelConfig(image_size=SIZE, loss='classification')
  model = models.create_model(config)
  tx = train_step.make_optimizer(1e-3)
  weights = np.linspace(0.5, 2.0, quantize.NUM_BINS).astype(np.float32)
  step, evaluate, _ = train_step.bind(model, tx, config, augment.AugmentConfig.none(), weights)
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, SIZE))(jax.random.key(0))
  batch = photo_codes(SIZE)
  L, ab = records.dequantize(batch['L'], batch['ab'])
  expected, _ = losses.classification_loss(model.apply(state.params, L), ab, weights)
  ev = jax.jit(evaluate)(state.params, batch)
  np.testing.assert_allclose(float(ev['loss_sum']) / float(ev['count']), expected, rtol=1e-5)
  _, metrics = jax.jit(step)(state, batch, jax.random.key(1))
  np.testing.assert_allclose(float(metrics['loss']), float(expected), rtol=1e-5)
  with pytest.raises(ValueError, match='weights_Q'):
    train_step.loss_fn('classification', np.zeros((1, 2, 2, 3)), np.zeros((1, 4, 4, 2)))


@pytest.mark.parametrize('name', ['seed', 'unet'])
def test_hint_step_samples_hints_on_the_augmented_ab_and_learns(name):
  config = models.ModelConfig(name=name, image_size=SIZE, hints=True)
  model = models.create_model(config)
  tx = train_step.make_optimizer(1e-3)
  hint_config = hints.HintConfig(continue_prob=0.95, max_points=16)
  step, evaluate, _ = train_step.bind(
    model, tx, config, augment.AugmentConfig(), hint_config=hint_config
  )
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, SIZE))(jax.random.key(0))
  batch = photo_codes(SIZE)
  rng = jax.random.key(7)
  # The step's hints: drawn per example on the augmented ab (so a batch split anywhere draws the
  # same), their values the augmented ab's patch means.
  L, ab = augment.prepare_batch(batch)
  L, ab = train_step.augment_examples(rng, batch['index'], L, ab, augment.AugmentConfig())
  hint_ab, mask = train_step.sample_example_hints(rng, batch['index'], ab, hint_config)
  assert float(mask.sum()) > 0 and set(np.unique(np.asarray(mask))) <= {0.0, 1.0}
  two = train_step.sample_example_hints(rng, batch['index'][2:], ab[2:], hint_config)
  np.testing.assert_array_equal(np.asarray(mask)[2:], np.asarray(two[1]))
  # The loss the step reports is the network's with exactly these hints.
  out = model.apply(state.params, L, (hint_ab, mask))
  expected = np.mean(losses.mse_per_example(out, ab))
  jitted = jax.jit(step)
  state, metrics = jitted(state, batch, rng)
  np.testing.assert_allclose(float(metrics['loss']), expected, rtol=1e-4)
  first = float(metrics['loss'])
  for i in range(40):
    state, metrics = jitted(state, batch, jax.random.key(i))
  assert float(metrics['loss']) < 0.7 * first


@pytest.mark.parametrize('name', models.MODEL_NAMES)
def test_an_all_zero_mask_is_the_no_hint_path(name):
  size = 32
  config = models.ModelConfig(name=name, image_size=size, hints=True)
  model = models.create_model(config)
  L = np.linspace(0, 100, 2 * size * size, dtype=np.float32).reshape(2, size, size, 1)
  params = model.init(jax.random.key(0), L)
  zeros = (np.zeros((2, size, size, 2), np.float32), np.zeros((2, size, size, 1), np.float32))
  np.testing.assert_array_equal(model.apply(params, L), model.apply(params, L, zeros))
  # A hint changes the output; a model trained without hints refuses them.
  hint_ab, mask = zeros[0].copy(), zeros[1].copy()
  hint_ab[:, 10:14, 10:14] = (60.0, -20.0)
  mask[:, 10:14, 10:14] = 1.0
  hinted = model.apply(params, L, (hint_ab, mask))
  if name != 'effnet_unet':  # its hint paths start at zero (the pretrained network unchanged)
    assert not np.allclose(hinted, model.apply(params, L))
  plain = models.create_model(models.ModelConfig(name=name, image_size=size))
  with pytest.raises(ValueError, match='without hints'):
    plain.apply(plain.init(jax.random.key(0), L), L, zeros)
  with pytest.raises(ValueError, match='hints must be'):
    model.apply(params, L, (hint_ab[..., :1], mask))
