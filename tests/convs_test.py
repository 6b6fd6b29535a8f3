"""colorjax.convs: each fast convolution form against lax.conv / nn.Conv, value and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import convs, models


@pytest.mark.parametrize('stride,upsample', [(1, False), (2, False), (1, True)])
@pytest.mark.parametrize('size', [(8, 8), (7, 9)])
# Input, output channels: kernel_grad's matmuls (>= KERNEL_GRAD_MIN_FEATURES outputs) or XLA's
# kernel gradient (fewer); >= PHASE_MIN_CHANNELS inputs take the polyphase stride-2 form on even
# sizes, >= WINOGRAD_KERNEL_GRAD_MIN_CHANNELS the Winograd kernel gradient at stride 1 on even
# sizes. Winograd's convolution needs more pixels: test_winograd_conv_is_lax_conv.
@pytest.mark.parametrize('channels', [(5, 12), (5, 3), (32, 8)])
def test_fast_conv3x3_is_nn_conv(stride, upsample, size, channels):
  C, features = channels
  assert convs.KERNEL_GRAD_MIN_FEATURES == 8 and convs.PHASE_MIN_CHANNELS == 32
  assert convs.WINOGRAD_MIN_CHANNELS == 256 and convs.WINOGRAD_KERNEL_GRAD_MIN_CHANNELS == 16
  x = jax.random.normal(jax.random.key(1), (2, *size, C))
  conv = nn.Conv(features, (3, 3), strides=stride, padding='SAME')
  ref = conv.apply if not upsample else lambda p, x: conv.apply(p, models.upsample2(x))
  mine = models.FastConv3x3(features, stride, upsample=upsample)
  params = conv.init(jax.random.key(2), x)
  assert jax.tree.map(jnp.shape, mine.init(jax.random.key(2), x)) == jax.tree.map(jnp.shape, params)
  jax.tree.map(np.testing.assert_array_equal, mine.init(jax.random.key(2), x), params)
  np.testing.assert_allclose(mine.apply(params, x), ref(params, x), atol=1e-5, rtol=1e-5)
  # Gradients with respect to the input and the params agree as well.
  grad = lambda f: jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1))(params, x)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
    grad(mine.apply),
    grad(ref),
  )


@pytest.mark.parametrize(
  'stride,upsample,channels', [(1, False, (256, 256)), (2, False, (32, 8)), (1, True, (5, 12))]
)
def test_fast_conv3x3_keeps_bfloat16(stride, upsample, channels):
  C, features = channels
  side = 32 if C >= convs.WINOGRAD_MIN_CHANNELS else 8  # Winograd's form needs 32x32
  x = jax.random.normal(jax.random.key(1), (1, side, side, C)).astype(jnp.bfloat16)
  conv = nn.Conv(features, (3, 3), strides=stride, padding='SAME', dtype=jnp.bfloat16)
  ref = conv.apply if not upsample else lambda p, x: conv.apply(p, models.upsample2(x))
  mine = models.FastConv3x3(features, stride, dtype=jnp.bfloat16, upsample=upsample)
  params = conv.init(jax.random.key(2), x)
  loss = lambda f: lambda p, x: jnp.sum(f(p, x).astype(jnp.float32) ** 2)
  y, y_ref = mine.apply(params, x), ref(params, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(np.float32), y_ref.astype(np.float32), atol=0.1, rtol=0.05)
  got, want = (jax.grad(loss(f), argnums=(0, 1))(params, x) for f in (mine.apply, ref))
  assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, want)


@pytest.mark.parametrize('size', [(32, 32), (32, 34)])
def test_winograd_conv_is_lax_conv(size):
  x = jax.random.normal(jax.random.key(8), (1, *size, 256))
  kernel = jax.random.normal(jax.random.key(9), (3, 3, 256, 256)) * 0.05
  value = lambda x: convs.forms(x.shape, kernel.shape, 1).value
  assert value(x) == 'winograd' and value(x[:, :16, :16]) == 'xla'  # pixels
  f = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
  mine = lambda x, k: convs.fast_conv3x3(x, k, 1)
  ref = lambda x, k: convs._lax_conv(x, k, 1)
  np.testing.assert_allclose(convs._winograd_conv(x, kernel), ref(x, kernel), atol=1e-4)
  got, want = (jax.grad(f(c), argnums=(0, 1))(x, kernel) for c in (mine, ref))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-3)


def test_upsample_kernel_sums_the_taps_each_phase_reads():
  kernel = jax.random.normal(jax.random.key(7), (3, 3, 2, 3))
  k = np.asarray(convs.upsample_kernel(kernel)).reshape(2, 2, 2, 2, 2, 3)  # t, u, C, a, b, N
  K = np.asarray(kernel)
  # Phase (0, 0): input rows h - 1 (kernel row 0) and h (rows 1 + 2); columns alike.
  np.testing.assert_allclose(k[0, 0, :, 0, 0], K[0, 0], rtol=1e-6)
  np.testing.assert_allclose(k[1, 1, :, 0, 0], K[1:, 1:].sum((0, 1)), rtol=1e-6)
  # Phase (1, 0): rows h (kernel rows 0 + 1) and h + 1 (row 2); columns as phase 0.
  np.testing.assert_allclose(k[0, 1, :, 1, 0], K[:2, 1:].sum((0, 1)), rtol=1e-6)
  np.testing.assert_allclose(k[1, 0, :, 1, 0], K[2, 0], rtol=1e-6)
  # Every phase's taps add up to the whole kernel.
  np.testing.assert_allclose(
    k.sum((0, 1)), np.broadcast_to(K.sum((0, 1))[:, None, None], (2, 2, 2, 3)), rtol=1e-5
  )


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [(8, 8), (7, 9)])
@pytest.mark.parametrize('channels', [(5, 3), (128, 4)])  # 9 matmuls a band; one im2col matmul
@pytest.mark.parametrize('band', [1, 18, 2048, 0])  # rows a band: 1; 2-4, remainders; all; none
def test_kernel_grad_is_the_conv_kernel_gradient(stride, size, channels, band):
  C, N = channels
  x = jax.random.normal(jax.random.key(4), (2, *size, C))
  kernel = jax.random.normal(jax.random.key(5), (3, 3, C, N))
  y, vjp = jax.vjp(lambda k: convs._lax_conv(x, k, stride), kernel)
  g = jax.random.normal(jax.random.key(6), y.shape)
  (expected,) = vjp(g)  # XLA's convolution gradient
  got = convs.kernel_grad(x, g, stride, band=band)
  assert got.shape == kernel.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('size', [(8, 8), (6, 10), (2, 2)])
@pytest.mark.parametrize('channels', [(16, 8), (24, 40)])
def test_winograd_kernel_grad_is_the_conv_kernel_gradient(size, channels):
  C, N = channels
  x = jax.random.normal(jax.random.key(10), (2, *size, C))
  kernel = jax.random.normal(jax.random.key(11), (3, 3, C, N))
  y, vjp = jax.vjp(lambda k: convs._lax_conv(x, k, 1), kernel)
  g = jax.random.normal(jax.random.key(12), y.shape)
  (expected,) = vjp(g)  # XLA's convolution gradient
  kernel_form = lambda x: convs.forms(x.shape, (3, 3, x.shape[-1], N), 1).kernel_grad
  assert kernel_form(x) == 'winograd'
  got = convs.winograd_kernel_grad(x, g)
  assert got.shape == kernel.shape and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
  # Odd sizes and fewer channels take kernel_grad.
  assert kernel_form(x[:, 1:]) == 'bands'
  assert kernel_form(x[..., : convs.WINOGRAD_KERNEL_GRAD_MIN_CHANNELS - 1]) == 'bands'


def test_forms_of_the_seed_network_layers():
  """One function picks each layer's forms; at 256 px, batch 8 (bench.train's case) the seed
  network's layers take these (the gates' reasons are in convs.py)."""
  found = models.conv_forms(models.ModelConfig(image_size=256, conv='matmul'), batch_size=8)
  table = [(path, shape[1:], str(how)) for path, shape, how in found]
  f = lambda v, k: f'value {v}, input gradient {v}, kernel gradient {k}'
  up = 'upsample2 + 3x3 as one 2x2 convolution'
  assert table == [
    ('Conv_0', (256, 256, 1), f('xla', 'bands')),
    ('Conv_1', (128, 128, 64), f('xla', 'winograd')),
    ('Conv_2', (128, 128, 128), f('phases', 'bands')),
    ('Conv_3', (64, 64, 128), f('xla', 'winograd')),
    ('Conv_4', (64, 64, 256), f('phases', 'bands')),
    ('Conv_5', (32, 32, 256), f('winograd', 'winograd')),
    ('Conv_6', (32, 32, 512), f('winograd', 'winograd')),
    ('Conv_7', (32, 32, 512), f('winograd', 'winograd')),
    ('Conv_8', (32, 32, 256), f('xla', 'winograd')),
    ('Conv_9', (32, 32, 128), up),
    ('Conv_10', (64, 64, 64), up),
    ('Conv_11', (128, 128, 32), f('xla', 'xla')),
  ]
  # Odd sizes leave the polyphase and Winograd forms; band 0 names the unbanded kernel gradient.
  assert str(convs.forms((1, 33, 33, 256), (3, 3, 256, 256), 1)) == f('xla', 'bands')
  assert convs.forms((1, 32, 32, 64), (3, 3, 64, 64), 2, band=0).kernel_grad == 'taps'
  assert models.conv_forms(models.ModelConfig(image_size=64, conv='xla')) == []


def test_unbanded_kernel_gradient_is_the_banded_one():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 12, 10, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)
  grads = [
    jax.grad(lambda k, b=b: jnp.sum(jnp.sin(convs.fast_conv3x3(x, k, 2, b))))(k) for b in (0, 16)
  ]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)
