"""ONNX export and the CPU runtimes: outputs match the JAX model, dynamic batch, clear errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.transform

from colorjax import decoding, lab, models, quantize

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
    path, backend=backend, precision=precision, calibration_L=photos_L
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
  with pytest.raises(ValueError, match='calibration_L'):
    cpu_runtime_lib.cpu_runtime(path, precision='int8')
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
