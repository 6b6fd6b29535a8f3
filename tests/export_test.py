"""Tests for exporting params (float32, bfloat16) and ONNX, and loading them back."""

import os
import subprocess
import sys

import numpy as np
import pytest
from inference_test import write_workdir

from colorjax import inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp('wd')
  write_workdir(path, seeds=(0, 1))
  return path


def _L():
  return np.random.RandomState(0).uniform(0, 100, (2, 64, 64, 1)).astype(np.float32)


def test_export_params_float32_roundtrip(workdir, tmp_path):
  size = inference.export(workdir, tmp_path / 'f32')
  assert (tmp_path / 'f32' / 'model.json').is_file()
  original, exported = inference.load(workdir), inference.load(tmp_path / 'f32')
  assert exported.config == original.config
  np.testing.assert_array_equal(
    np.asarray(inference.colorize(exported, _L())), np.asarray(inference.colorize(original, _L()))
  )
  # The float32 params alone (compressed a little), not the optimizer state.
  assert 6_215_074 * 3 < size < 6_215_074 * 4 * 1.1
  inference.export(workdir, tmp_path / 'step1', step=1)
  kernel = lambda c: np.asarray(c.params['params']['Conv_0']['kernel'])
  older = inference.load(tmp_path / 'step1')
  np.testing.assert_array_equal(kernel(older), kernel(inference.load(workdir, step=1)))
  assert not np.array_equal(kernel(older), kernel(original))


def test_launch_export_bfloat16(workdir, tmp_path):
  out = tmp_path / 'bf16'
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.export',
      f'--checkpoint={workdir}',
      f'--output={out}',
      '--dtype=bfloat16',
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr
  size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())
  assert size < 6_215_074 * 2 * 1.1  # two bytes per param
  exported, original = inference.load(out), inference.load(workdir)
  kernel = exported.params['params']['Conv_0']['kernel']
  assert kernel.dtype == np.float32  # load casts back
  ab_bf16 = np.asarray(inference.colorize(exported, _L()))
  ab_f32 = np.asarray(inference.colorize(original, _L()))
  # bfloat16 keeps 8 mantissa bits: a relative weight error of ~0.4% moves ab by a few units.
  err = np.abs(ab_bf16 - ab_f32)
  assert err.mean() < 1.0 and err.max() < 10.0, (err.mean(), err.max())
  assert not np.array_equal(ab_bf16, ab_f32)


def test_export_onnx_matches_jax(workdir, tmp_path):
  pytest.importorskip('jax2onnx')
  ort = pytest.importorskip('onnxruntime')
  path = tmp_path / 'model.onnx'
  inference.export(workdir, path, fmt='onnx')
  session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  ab = session.run(None, {session.get_inputs()[0].name: _L()})[0]
  expected = np.asarray(inference.colorize(inference.load(workdir), _L()))
  np.testing.assert_allclose(ab, expected, atol=0.05)


def test_export_bad_arguments(workdir, tmp_path):
  with pytest.raises(ValueError, match='format'):
    inference.export(workdir, tmp_path / 'x', fmt='tflite')
  with pytest.raises(ValueError, match='dtype'):
    inference.export(workdir, tmp_path / 'x', dtype='float16')
  with pytest.raises(ValueError, match='ONNX exports are float32'):
    inference.export(workdir, tmp_path / 'x.onnx', fmt='onnx', dtype='bfloat16')
  (tmp_path / 'taken').mkdir()
  with pytest.raises(FileExistsError):
    inference.export(workdir, tmp_path / 'taken')


def test_a_bundled_onnx_runs_without_a_new_export(tmp_path, monkeypatch):
  """--with_onnx puts the network (at chroma gain 1) beside params; colorize runs that file on
  the CPU runtimes, stretched to the config's gain, and never exports again (the [cpu] extra
  alone has no jax2onnx)."""
  pytest.importorskip('jax2onnx')
  pytest.importorskip('onnxruntime')
  from colorjax import colorize_files, onnx_export

  wd = tmp_path / 'wd'
  write_workdir(wd, image_size=32, name='unet', loss='classification', width=16, chroma_gain=1.5)
  out = tmp_path / 'shipped'
  inference.export(wd, out, dtype='bfloat16', with_onnx=True)
  assert onnx_export.read_metadata(out / inference.BUNDLED_ONNX)[0].chroma_gain == 1.0
  colorizer, bundled = colorize_files.load_checkpoint(out)
  assert bundled == out / inference.BUNDLED_ONNX

  def no_export(*args, **kwargs):
    raise AssertionError('exported again instead of running the bundled file')

  monkeypatch.setattr(onnx_export, 'export_onnx', no_export)
  predict, label = colorize_files.make_predictor(
    colorizer, 'onnxruntime', 'fp32', 2, tmp_path, bundled
  )
  assert label == 'onnxruntime fp32'
  L = np.random.RandomState(0).uniform(0, 100, (2, 32, 32)).astype(np.float32)
  expected = np.asarray(inference.colorize(colorizer, L[..., None]))
  np.testing.assert_allclose(predict(L), expected, atol=0.05)
  # Another temperature is another network output: the bundled file no longer fits.
  from colorjax import decoding

  hotter = decoding.with_decoding(colorizer, temperature=0.123)
  assert colorize_files.bundled_onnx_fits(colorizer, bundled)
  assert not colorize_files.bundled_onnx_fits(hotter, bundled)
