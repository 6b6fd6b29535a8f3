"""Tests for colorjax.inference: load, colorize and colorize_image on photos of any size."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import skimage.color
import skimage.data
from PIL import Image

from colorjax import constants, fullsize, inference, models

XYZ_FROM_RGB = np.array(
  [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)  # sRGB primaries, D65


def random_params(config, seed):
  """LeCun-normal params of the config's network, drawn with NumPy (no slow eager model.init)."""
  shapes = jax.eval_shape(
    models.create_model(config).init,
    jax.random.PRNGKey(0),
    jnp.zeros((1, config.image_size, config.image_size, 1)),
  )
  rng = np.random.RandomState(seed)
  fan_in = lambda shape: np.prod(shape[:-1]) if len(shape) > 1 else np.inf
  return jax.tree.map(
    lambda s: (rng.normal(0, 1, s.shape) / np.sqrt(fan_in(s.shape))).astype(np.float32), shapes
  )


def write_workdir(path, image_size=64, seeds=(0,), **config_fields):
  """A training workdir as contract.md describes: model.json + a checkpoint per seed (step 1..);
  config_fields go to its ModelConfig."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  config = models.ModelConfig(image_size=image_size, **config_fields)
  (path / 'model.json').write_text(config.to_json())
  all_params = []
  with ocp.CheckpointManager(path / 'checkpoints') as mngr:
    for step, seed in enumerate(seeds, start=1):
      params = random_params(config, seed)
      state = {'step': jnp.int32(step), 'params': params, 'opt_state': optax.sgd(1e-3).init(params)}
      mngr.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({'position': step})
        ),
      )
      all_params.append(params)
  return config, all_params


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp('workdir')
  config, params = write_workdir(path, seeds=(0, 1))
  return path, config, params


@pytest.fixture(scope='module')
def colorizer(workdir):
  return inference.load(workdir[0])


def _L(shape, seed=0):
  return np.random.RandomState(seed).uniform(0, 100, shape).astype(np.float32)


def test_load_reads_latest_or_given_step(workdir):
  path, config, params = workdir
  latest = inference.load(path)
  first = inference.load(path, step=1)
  assert latest.config == config
  kernel = lambda p: np.asarray(p['params']['Conv_0']['kernel'])
  np.testing.assert_array_equal(kernel(latest.params), kernel(params[1]))
  np.testing.assert_array_equal(kernel(first.params), kernel(params[0]))
  assert kernel(latest.params).dtype == np.float32


def test_load_bad_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match='model.json'):
    inference.load(tmp_path)
  (tmp_path / 'model.json').write_text(models.ModelConfig().to_json())
  with pytest.raises(FileNotFoundError, match='neither'):
    inference.load(tmp_path)


def test_a_model_json_of_another_network_is_one_line(tmp_path):
  """A workdir whose model.json was replaced by another network's: load names the mismatch in
  one line instead of failing inside Flax with a tree dump."""
  write_workdir(tmp_path)
  (tmp_path / 'model.json').write_text(
    models.ModelConfig(image_size=64, loss='classification').to_json()
  )
  with pytest.raises(ValueError, match='does not describe its params') as raised:
    inference.load(tmp_path)
  assert '\n' not in str(raised.value)
  assert 'the config needs' in str(raised.value)


def test_colorize_matches_network_and_is_pure(workdir, colorizer):
  _, config, params = workdir
  L = _L((2, 64, 64, 1))
  ab = np.asarray(inference.colorize(colorizer, L))
  output = np.asarray(models.create_model(config).apply(params[1], L))
  expected = np.clip(output * constants.AB_SCALE, -constants.AB_MAX, constants.AB_MAX)
  assert ab.shape == (2, 64, 64, 2)
  np.testing.assert_allclose(ab, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(ab, np.asarray(inference.colorize(colorizer, L)))
  np.testing.assert_allclose(np.asarray(jax.jit(inference.colorize)(colorizer, L)), ab, atol=1e-3)
  vmapped = jax.vmap(inference.colorize, in_axes=(None, 0))(colorizer, L)
  np.testing.assert_allclose(np.asarray(vmapped), ab, atol=1e-3)


def test_colorize_layouts(colorizer):
  L = _L((64, 64))
  ab = np.asarray(inference.colorize(colorizer, L))
  assert ab.shape == (64, 64, 2)
  np.testing.assert_allclose(np.asarray(inference.colorize(colorizer, L[..., None])), ab, atol=1e-4)
  batch = np.asarray(inference.colorize(colorizer, L[None, ..., None]))
  np.testing.assert_allclose(batch[0], ab, atol=1e-4)


@pytest.mark.parametrize('shape', [(64, 64, 3), (2, 64, 64), (1, 2, 64, 64, 1), (64,)])
def test_colorize_bad_shapes(colorizer, shape):
  with pytest.raises(ValueError, match='L must have shape'):
    inference.colorize(colorizer, np.zeros(shape, np.float32))


def test_colorize_bad_inputs(workdir, colorizer):
  with pytest.raises(ValueError, match='divisible by 8'):
    inference.colorize(colorizer, _L((60, 64)))
  with pytest.raises(TypeError, match='Colorizer'):
    inference.colorize(workdir[2][0], _L((64, 64)))


def test_upsample_rows_matches_jax_image_resize():
  ab = np.random.RandomState(0).normal(0, 30, (8, 6, 2)).astype(np.float32)
  expected = np.asarray(jax.image.resize(ab, (37, 23, 2), 'bilinear', antialias=False))
  got = np.concatenate(
    [fullsize.upsample_rows(ab, 37, 23, r, min(r + 10, 37)) for r in range(0, 37, 10)]
  )
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_fit_gamut_keeps_L_and_hue():
  rng = np.random.RandomState(0)
  L = rng.uniform(0, 100, 2000).astype(np.float32)
  ab = rng.uniform(-120, 120, (2000, 2)).astype(np.float32)
  fitted = np.asarray(fullsize.fit_gamut(jnp.asarray(L), jnp.asarray(ab)))
  # Same hue: the fitted ab is a scale in [0, 1] of the clamped ab.
  clamped = np.clip(ab, -constants.AB_MAX, constants.AB_MAX)
  scale = (fitted * clamped).sum(-1) / (clamped * clamped).sum(-1)
  np.testing.assert_allclose(fitted, clamped * scale[:, None], atol=1e-3)
  assert scale.min() >= 0 and scale.max() <= 1 + 1e-6
  # Inside sRGB: skimage's unclipped conversion stays in [0, 1] and gives back the same L.
  lab_px = np.concatenate([L[:, None], fitted], -1).astype(np.float64)
  xyz = skimage.color.lab2xyz(lab_px[None])[0]
  lin = xyz @ np.linalg.inv(XYZ_FROM_RGB).T
  assert lin.min() > -1e-4 and lin.max() < 1 + 1e-4
  assert (scale < 1).mean() > 0.3  # most random colors were outside and got fitted
  # In-gamut pixels are untouched.
  inside = np.array([[50.0, 10.0, -10.0], [70.0, -20.0, 30.0]], np.float32)
  np.testing.assert_allclose(
    np.asarray(fullsize.fit_gamut(jnp.asarray(inside[:, 0]), jnp.asarray(inside[:, 1:]))),
    inside[:, 1:],
    atol=1e-5,
  )


def _check_keeps_lightness(image, out):
  rgb_in = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
  L_in = skimage.color.rgb2lab(rgb_in)[..., 0]
  L_out = skimage.color.rgb2lab(out)[..., 0]
  err = np.abs(L_out - L_in)
  # 8-bit rounding of R, G and B moves L by at most ~0.6 (at the darkest codes).
  assert err.max() < 0.7, err.max()
  assert err.mean() < 0.2, err.mean()


def test_colorize_image_gray_odd_size(colorizer):
  image = np.asarray(Image.fromarray(skimage.data.camera()).resize((1001, 17), Image.BILINEAR))
  out = inference.colorize_image(colorizer, image)
  assert out.shape == (17, 1001, 3) and out.dtype == np.uint8
  _check_keeps_lightness(image, out)
  assert np.abs(out[..., 0].astype(int) - out[..., 2]).mean() > 1  # it did add color


def test_colorize_image_large_rgb(colorizer, tmp_path):
  image = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((3000, 2000), Image.BICUBIC))
  path = tmp_path / 'big.jpg'
  Image.fromarray(image).save(path, quality=95)
  decoded = np.asarray(Image.open(path))
  out = inference.colorize_image(colorizer, path)
  assert out.shape == (2000, 3000, 3)
  _check_keeps_lightness(decoded, out)


def test_colorize_images_batch_matches_single(colorizer):
  images = [skimage.data.chelsea(), skimage.data.coffee()[:200, :150], skimage.data.camera()]
  outs = inference.colorize_images(colorizer, images)
  assert [o.shape for o in outs] == [(300, 451, 3), (200, 150, 3), (512, 512, 3)]
  single = inference.colorize_image(colorizer, Image.fromarray(images[1]))
  np.testing.assert_allclose(outs[1].astype(int), single.astype(int), atol=1)


def test_read_image_inputs_and_errors():
  rgba = np.zeros((5, 7, 4), np.uint8)
  assert fullsize.read_image(rgba).shape == (5, 7, 3)
  assert fullsize.read_image(Image.new('L', (7, 5))).shape == (5, 7)
  assert fullsize.read_image(np.zeros((5, 7, 1), np.uint8)).shape == (5, 7)
  with pytest.raises(ValueError, match='uint8'):
    fullsize.read_image(np.zeros((5, 7, 3), np.int32))  # uint16 and floats in [0, 1] are read
  with pytest.raises(ValueError, match='grayscale or RGB'):
    fullsize.read_image(np.zeros((5, 7, 2), np.uint8))


def test_join_photo_or_L_and_both_gamut_paths():
  image = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((300, 130), Image.BICUBIC))
  rng = np.random.RandomState(0)
  mild = rng.uniform(-20, 20, (16, 16, 2)).astype(np.float32)
  vivid = rng.uniform(-120, 120, (16, 16, 2)).astype(np.float32)  # mostly outside sRGB
  for ab in (mild, vivid):
    out = fullsize.join(image, ab)
    assert out.shape == (130, 300, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - fullsize.join(fullsize.lightness(image), ab))
    # Up to rounding; a fitted pixel can land one bisection step apart (L differs by < 0.01).
    assert diff.max() <= 1 or (np.mean(diff > 1) < 1e-4 and ab is vivid), diff.max()
    _check_keeps_lightness(image, out)
  # Reference for in-gamut pixels: skimage's Lab -> sRGB of the upsampled ab.
  ab_full = np.asarray(jax.image.resize(mild, (130, 300, 2), 'bilinear', antialias=False))
  lab_px = np.concatenate([fullsize.lightness(image)[..., None], ab_full], -1)
  expected = np.round(skimage.color.lab2rgb(lab_px.astype(np.float64)) * 255)
  linear = skimage.color.lab2xyz(lab_px.astype(np.float64)) @ np.linalg.inv(XYZ_FROM_RGB).T
  inside = np.all((linear > 1e-3) & (linear < 1 - 1e-3), axis=-1)
  assert inside.mean() > 0.7
  assert np.abs(fullsize.join(image, mild).astype(int) - expected)[inside].max() <= 1
  with pytest.raises(ValueError, match='uint8 photo'):
    fullsize.join(np.zeros((4, 5, 2), np.uint8), mild)
