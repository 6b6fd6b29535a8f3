"""The shipped model: loads offline from the package, colorizes a real photo, reproduces its
reference numbers (bench/pretrained_reference.py), runs its bundled ONNX file, and the installed
`colorjax` command with each subcommand's help."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

import colorjax
from colorjax import inference, lab, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import pretrained_reference  # noqa: E402  (the repository's bench/, not installed)


@pytest.fixture(scope='module')
def shipped():
  return colorjax.load('pretrained')


def test_the_shipped_model_loads_offline_and_reproduces_its_reference(shipped, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError('the shipped model must load without the network')

  monkeypatch.setattr(socket.socket, 'connect', no_network)
  colorizer = colorjax.load('pretrained')
  assert colorizer.config.name == 'effnet_unet' and colorizer.config.hints
  reference = json.loads((inference.pretrained_path() / 'reference.json').read_text())
  got = pretrained_reference.reference_metrics(colorizer, reference['photos'])
  assert abs(got['psnr'] - reference['psnr']) <= 0.05, (got, reference)
  assert abs(got['auc'] - reference['auc']) <= 0.2, (got, reference)


def test_the_shipped_model_colorizes_a_real_photo(shipped):
  """chelsea (a tabby cat), shown gray, at its own size: the lightness stays, colors appear."""
  rgb = skimage.data.chelsea()
  gray = np.asarray(Image.fromarray(rgb).convert('L'))  # an 8-bit gray scan of it
  out = colorjax.colorize_image(shipped, gray)
  assert out.shape == rgb.shape
  L_gray = lab.rgb8_to_lab(np.stack([gray] * 3, -1))[..., 0]  # the gray pixels' own lightness
  assert np.abs(lab.rgb8_to_lab(out)[..., 0] - L_gray).mean() < 1.0
  assert metrics.colorfulness(out) > 10  # not gray


def test_the_bundled_onnx_matches_the_params(shipped, tmp_path):
  pytest.importorskip('onnxruntime')
  from colorjax import colorize_files  # pylint: disable=g-import-not-at-top

  colorizer, bundled = colorize_files.load_checkpoint('pretrained')
  assert bundled is not None and colorize_files.bundled_onnx_fits(colorizer, bundled)
  predict, label = colorize_files.make_predictor(
    colorizer, 'onnxruntime', 'fp32', 2, tmp_path, bundled
  )
  size = colorizer.config.image_size
  L = np.random.RandomState(0).uniform(0, 100, (2, size, size)).astype(np.float32)
  expected = np.asarray(inference.colorize(colorizer, L[..., None]))
  np.testing.assert_allclose(predict(L), expected, atol=0.5)


def _colorjax_command():
  found = shutil.which('colorjax')
  if found is None:
    pytest.fail('no `colorjax` on PATH: install the package (pip install -e .)')
  return found


def test_the_installed_command_and_each_subcommand_help():
  from launch import cli  # pylint: disable=g-import-not-at-top

  command = _colorjax_command()
  top = subprocess.run([command, '--help'], capture_output=True, text=True, timeout=60)
  assert top.returncode == 0 and 'subcommands:' in top.stdout
  for name in cli.SUBCOMMANDS:
    assert name in top.stdout
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  for name in cli.SUBCOMMANDS:
    proc = subprocess.run(
      [command, name, '--help'], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, (name, proc.stderr[-2000:])
    assert f'colorjax {name}' in proc.stdout or '--' in proc.stdout, (name, proc.stdout[:500])
  bad = subprocess.run([command, 'paint'], capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and "unknown subcommand 'paint'" in bad.stderr
