"""Lab color math against scikit-image, round trips, wild inputs, jit and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

import colorjax
from colorjax import lab


def _rgb_grid(step=5):
  g = np.arange(0, 256, step, dtype=np.float64) / 255.0
  return np.stack(np.meshgrid(g, g, g, indexing='ij'), -1).reshape(-1, 3)


def test_rgb_to_lab_matches_skimage():
  rgb = _rgb_grid()
  ours = colorjax.rgb_to_lab(rgb)
  assert ours.dtype == np.float32 and ours.shape == rgb.shape
  np.testing.assert_allclose(ours, skcolor.rgb2lab(rgb), atol=1e-3)


def test_lab_to_rgb_matches_skimage_and_round_trips():
  rgb = _rgb_grid()
  ref_lab = skcolor.rgb2lab(rgb)
  np.testing.assert_allclose(colorjax.lab_to_rgb(ref_lab), skcolor.lab2rgb(ref_lab), atol=1e-3)
  np.testing.assert_allclose(colorjax.lab_to_rgb(colorjax.rgb_to_lab(rgb)), rgb, atol=1e-3)


def test_jax_matches_numpy_under_jit():
  rgb = _rgb_grid(15).reshape(-1, 1, 3).astype(np.float32)
  np.testing.assert_allclose(
    jax.jit(colorjax.rgb_to_lab)(jnp.asarray(rgb)), colorjax.rgb_to_lab(rgb), atol=1e-3
  )
  lab_np = colorjax.rgb_to_lab(rgb)
  np.testing.assert_allclose(
    jax.jit(colorjax.lab_to_rgb)(jnp.asarray(lab_np)), colorjax.lab_to_rgb(lab_np), atol=1e-4
  )


def test_wild_lab_gives_finite_clipped_rgb_and_gradients():
  rng = np.random.default_rng(0)
  wild = np.concatenate(
    [
      rng.uniform(-1000, 1000, (5000, 3)),
      np.array([[0, 0, 0], [100, 0, 0], [50, 127, 127], [50, -128, -128], [-5, 200, -300]]),
    ]
  )
  out = colorjax.lab_to_rgb(wild)
  assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
  grads = jax.grad(lambda x: colorjax.lab_to_rgb(x).sum())(jnp.asarray(wild, jnp.float32))
  assert np.isfinite(np.asarray(grads)).all()
  g2 = jax.grad(lambda x: colorjax.rgb_to_lab(x).sum())(jnp.asarray(_rgb_grid(51), jnp.float32))
  assert np.isfinite(np.asarray(g2)).all()


def test_rgb8_fast_path_equals_float_path():
  rgb8 = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  np.testing.assert_allclose(lab.rgb8_to_lab(rgb8), colorjax.rgb_to_lab(rgb8 / 255.0), atol=1e-4)
  np.testing.assert_allclose(lab.rgb8_to_lab(rgb8), skcolor.rgb2lab(rgb8), atol=1e-3)


def test_bad_shape_raises():
  with pytest.raises(ValueError, match=r'\(\.\.\., 3\)'):
    colorjax.rgb_to_lab(np.zeros((4, 4)))
