"""Losses against hand calculations and a NumPy reference, under jit, and their errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import losses, quantize

RNG = np.random.default_rng(0)
Q = 268


def test_mse_loss_by_hand_and_against_numpy():
  ab = np.full((2, 4, 4, 2), 64.0, np.float32)
  assert float(losses.mse_loss(jnp.zeros_like(ab), ab)) == pytest.approx(0.25)  # (64 / 128)^2
  pred = RNG.uniform(-1, 1, (2, 8, 6, 2)).astype(np.float32)
  ab = RNG.uniform(-100, 100, (2, 8, 6, 2)).astype(np.float32)
  np.testing.assert_allclose(
    jax.jit(losses.mse_loss)(pred, ab), np.mean((pred - ab / 128.0) ** 2), rtol=1e-5
  )
  with pytest.raises(ValueError, match='shapes differ'):
    losses.mse_loss(pred[:, :4], ab)


def test_downsample_ab_is_a_block_mean():
  ab = RNG.uniform(-100, 100, (2, 8, 12, 2)).astype(np.float32)
  ref = ab.reshape(2, 4, 2, 6, 2, 2).mean(axis=(2, 4))
  np.testing.assert_allclose(losses.downsample_ab(ab, 4, 6), ref, rtol=1e-5)
  with pytest.raises(ValueError, match='multiple'):
    losses.downsample_ab(ab, 3, 6)


def _loss_numpy(logits, ab, weights, min_chroma=2.0):
  """Dense reference: soft target over the 5 nearest bins, log-softmax, nearest bin's weight."""
  B, h, w, _ = logits.shape
  H, W = ab.shape[1:3]
  small = ab.reshape(B, h, H // h, w, W // w, 2).mean(axis=(2, 4)).astype(np.float64)
  d2 = ((small[..., None, :] - quantize.BIN_CENTERS.astype(np.float64)) ** 2).sum(-1)
  near = np.argsort(d2, -1)[..., :5]
  d2k = np.take_along_axis(d2, near, -1)
  g = np.exp(-(d2k - d2k[..., :1]) / 50.0)
  target = np.zeros(d2.shape)
  np.put_along_axis(target, near, g / g.sum(-1, keepdims=True), -1)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  ce = -(target * logp).sum(-1)
  keep = (np.sqrt((ab.astype(np.float64) ** 2).sum(-1)).mean((1, 2)) >= min_chroma)[:, None, None]
  keep = np.broadcast_to(keep, ce.shape)
  return (keep * weights[near[..., 0]] * ce).sum() / max(keep.sum(), 1)


def test_classification_loss_by_hand():
  # Uniform logits: every pixel's cross-entropy is log(Q), whatever its soft target.
  ab = RNG.uniform(-40, 40, (2, 4, 4, 2)).astype(np.float32)
  logits = np.zeros((2, 2, 2, Q), np.float32)
  loss, aux = losses.classification_loss(logits, ab, np.ones(Q))
  assert float(loss) == pytest.approx(np.log(Q), rel=1e-5)
  assert float(aux['ce']) == pytest.approx(np.log(Q), rel=1e-5) and float(aux['kept']) == 1.0
  # Weight 3 on one bin: pixels whose nearest bin it is count 3 times.
  ab = np.zeros((1, 2, 2, 2), np.float32)
  ab[0, 0, 0] = ab[0, 0, 1] = [25.0, 35.0]  # the center of a bin
  ab[0, 1, :] = [-15.0, 45.0]
  weights = np.ones(Q, np.float32)
  weights[quantize.nearest_bin(np.array([25.0, 35.0]))] = 3.0
  loss, _ = losses.classification_loss(np.zeros((1, 2, 2, Q)), ab, weights)
  assert float(loss) == pytest.approx(np.log(Q) * (3 + 3 + 1 + 1) / 4, rel=1e-5)
  # A gray example is left out; a batch of gray examples gives loss 0.
  gray = np.zeros((1, 2, 2, 2), np.float32)
  both = np.concatenate([ab, gray])
  loss2, aux2 = losses.classification_loss(np.zeros((2, 2, 2, Q)), both, weights)
  assert float(loss2) == pytest.approx(float(loss), rel=1e-6) and float(aux2['kept']) == 0.5
  np.testing.assert_allclose(aux2['example_kept'], [1.0, 0.0])
  np.testing.assert_allclose(aux2['example_loss'], [float(loss), 0.0], rtol=1e-6)
  loss0, aux0 = losses.classification_loss(np.zeros((1, 2, 2, Q)), gray, weights)
  assert float(loss0) == 0.0 and float(aux0['kept']) == 0.0


def test_classification_loss_matches_numpy_under_jit():
  ab = RNG.uniform(-60, 60, (3, 8, 8, 2)).astype(np.float32)
  ab[1] *= 0.01  # mean chroma < 2: left out
  logits = RNG.normal(0, 3, (3, 4, 4, Q)).astype(np.float32)
  weights = np.asarray(quantize.rebalance_weights(RNG.dirichlet(np.ones(Q))))
  loss, aux = jax.jit(losses.classification_loss)(logits, ab, weights)
  np.testing.assert_allclose(loss, _loss_numpy(logits, ab, weights), rtol=1e-4)
  np.testing.assert_allclose(aux['kept'], 2 / 3, rtol=1e-6)
  # top1: argmax of logits that put all mass on the target's nearest bin is always right.
  near = np.asarray(quantize.nearest_bin(losses.downsample_ab(ab, 4, 4)))
  _, aux = losses.classification_loss(10 * np.eye(Q, dtype=np.float32)[near], ab, weights)
  assert float(aux['top1']) == 1.0


def test_classification_loss_gradient_is_finite_and_bad_inputs_raise():
  ab = RNG.uniform(-60, 60, (2, 4, 4, 2)).astype(np.float32)
  loss_of = functools.partial(losses.classification_loss, ab_BxHxWx2=ab, weights_Q=np.ones(Q))
  grads = jax.grad(lambda x: loss_of(x)[0])(jnp.zeros((2, 2, 2, Q)))
  assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)).sum() > 0
  with pytest.raises(ValueError, match='logits'):
    losses.classification_loss(np.zeros((2, 2, 2, 10)), ab, np.ones(Q))
  with pytest.raises(ValueError, match='batch'):
    losses.classification_loss(np.zeros((1, 2, 2, Q)), ab, np.ones(Q))
  with pytest.raises(ValueError, match='weights'):
    losses.classification_loss(np.zeros((2, 2, 2, Q)), ab, np.ones(Q - 1))
  with pytest.raises(ValueError, match='multiple'):
    losses.classification_loss(np.zeros((2, 3, 3, Q)), ab, np.ones(Q))


def test_mse_per_example_is_the_batch_mse_per_row():
  ab = RNG.uniform(-60, 60, (3, 8, 8, 2)).astype(np.float32)
  pred = RNG.uniform(-1, 1, (3, 8, 8, 2)).astype(np.float32)
  per = np.asarray(losses.mse_per_example(pred, ab))
  np.testing.assert_allclose(per, ((pred - ab / 128.0) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
  assert float(losses.mse_loss(pred, ab)) == pytest.approx(per.mean(), rel=1e-6)
