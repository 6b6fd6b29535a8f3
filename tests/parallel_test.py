"""One device, 'sharded' (jit over a 4-device mesh) and 'pmap' give the same training run."""

import jax
import numpy as np
import pytest

from colorjax import augment, models, parallel, train_step

SIZE, BATCH, STEPS = 16, 4, 2


def _batches():
  rs = np.random.RandomState(0)
  return [
    {
      'L': rs.randint(0, 256, (BATCH, SIZE, SIZE, 1)).astype(np.uint8),
      'ab': rs.randint(-60, 60, (BATCH, SIZE, SIZE, 2)).astype(np.int8),
      'index': parallel.global_example_index(BATCH),
    }
    for _ in range(STEPS)
  ]


def _run(mode):
  config = models.ModelConfig(image_size=SIZE)
  model = models.create_model(config)
  # Adam's early steps are about lr * sign(gradient) for gradients far above eps, which turns
  # summation-order noise in near-zero gradients into whole steps; a large eps keeps the
  # update proportional to small gradients, so the comparison below can be tight.
  tx = train_step.make_optimizer(1e-3, eps=1e-3)
  step, _, _ = train_step.bind(model, tx, config, augment.AugmentConfig())
  runner = parallel.make_runner(mode, step, BATCH)
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, SIZE))(jax.random.key(0))
  state = runner.put_state(state)
  losses = []
  for i, batch in enumerate(_batches()):
    placed = runner.put_batch(batch)
    state, metrics = runner.step(state, placed, jax.random.fold_in(jax.random.key(1), i))
    losses.append(float(metrics['loss']))
  host = jax.tree.map(np.asarray, runner.get_state(state))
  return losses, host, runner


def test_sharded_and_pmap_match_one_device():
  assert jax.device_count() == 4, 'conftest sets 4 fake CPU devices'
  losses, state, _ = _run('single')
  for mode in ('sharded', 'pmap'):
    mode_losses, mode_state, runner = _run(mode)
    assert runner.num_devices == 4
    np.testing.assert_allclose(mode_losses, losses, rtol=1e-5, err_msg=mode)
    assert int(mode_state.step) == STEPS
    for a, b in zip(jax.tree.leaves(mode_state.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=mode)


def test_global_example_index_interleaves_processes():
  np.testing.assert_array_equal(parallel.global_example_index(3, 1, 2), [1, 3, 5])
  merged = np.sort(np.concatenate([parallel.global_example_index(2, p, 3) for p in range(3)]))
  np.testing.assert_array_equal(merged, np.arange(6))


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match='parallel must be one of'):
    parallel.make_runner('ddp', lambda *a, **k: None, BATCH)
  with pytest.raises(ValueError, match='does not split over 4 devices'):
    parallel.make_runner('sharded', lambda *a, **k: None, 6)
  with pytest.raises(ValueError, match='process_id'):
    parallel.initialize_distributed('127.0.0.1:1234', 2, 2)
  with pytest.raises(ValueError, match='cluster environment'):
    parallel.initialize_distributed('', 0, 0)
