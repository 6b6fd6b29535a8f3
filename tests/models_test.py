"""Networks: param counts, output shapes for every (model, loss), decoding, and a short fit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from colorjax import decoding, losses, models

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


# The effnet_unet's decoder is the U-Net's convolutions; its MSE head (a full-resolution stage
# more) adds 80 s of compilation on two cores and nothing the classification case misses.
CONV_PAIRS = [p for p in PAIRS if p != ('effnet_unet', 'mse')]


@pytest.mark.parametrize('name,loss', CONV_PAIRS)
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
  multiple = models.ModelConfig(name=name, image_size=64).size_multiple
  H, W = (-(-n // multiple) * multiple for n in size)  # 48x80 -> 64x96 for the effnet_unet
  for stride in models.HEAD_STRIDES:
    config = models.ModelConfig(name=name, loss=loss, head_stride=stride)
    model, variables = _abstract_init(config, (2, H, W, 1))
    out = jax.eval_shape(model.apply, variables, jnp.zeros((2, H, W, 1)))
    if loss == 'mse':
      assert out.shape == (2, H, W, 2)
    else:
      assert out.shape == (2, H // stride, W // stride, Q)
    assert out.dtype == jnp.float32
    assert jax.eval_shape(lambda o: decoding.decode(config, o), out).shape == (2, H, W, 2)


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


@pytest.mark.parametrize(
  'fields,message',
  [
    ({'image_size': 100}, 'image_size must be a positive multiple of 8'),
    ({'image_size': 8192}, 'up to 4096'),
    ({'image_size': '256'}, 'image_size must be a'),
    ({'dtype': 'float16'}, 'dtype must be one of'),
    ({'widht': 32}, r"unknown keys \['widht'\]"),
    ({'temperature': 'hot'}, 'temperature must be a'),
    ({'hints': 1}, 'hints must be a'),
    ({'bin_log_weights': [0.1, 0.2]}, 'bin_log_weights must hold 268'),
    ({'name': 'effnet_unet', 'image_size': 48}, 'multiple of 32'),
  ],
)
def test_model_json_is_validated_with_one_line_errors(fields, message):
  text = json.dumps({**json.loads(models.ModelConfig().to_json()), **fields})
  with pytest.raises(ValueError, match=message) as error:
    models.ModelConfig.from_json(text, 'runs/x/model.json')
  assert str(error.value).startswith('runs/x/model.json') and '\n' not in str(error.value)
  with pytest.raises(ValueError, match='not valid JSON'):
    models.ModelConfig.from_json('{"name": ', 'm.json')


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
  pred = np.asarray(decoding.decode(config, jax.jit(model.apply)(params, L)))
  assert np.abs(pred - ab).mean() < 0.8 * np.abs(ab).mean()
