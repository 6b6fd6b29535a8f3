"""Tests for colorjax.evaluation and python -m launch.evaluate on skimage photos and records."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import record_fixtures
import skimage.color
import skimage.data
from inference_test import write_workdir
from PIL import Image

from colorjax import evaluation, inference, quantize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {
  'psnr',
  'ssim',
  'mse_ab',
  'colorfulness',
  'colorfulness_gt',
  'colorfulness_ratio',
  'auc',
  'chroma_ratio',
  'ab_bias',
  'per_image',
}


def _strict_json(path):
  """metrics.json parsed by a parser that refuses NaN, Infinity and -Infinity."""

  def refuse(constant):
    raise ValueError(f'{path} holds {constant}: not JSON')

  return json.loads(path.read_text(), parse_constant=refuse)


def _notes(result):
  return {k for k in result if k.endswith('_note')}


def _center_square(rgb, size):
  """The centered square (fractional edges, as data_prep's crop) resized bicubically by PIL."""
  h, w = rgb.shape[:2]
  side = min(h, w)
  box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
  return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC, box=box))


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('photos')
  for name in ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera'):
    Image.fromarray(getattr(skimage.data, name)()).save(folder / f'{name}.png')
  (folder / 'readme.txt').write_text('not a photo')
  return folder


def test_load_eval_images_center_crop(photos):
  images = evaluation.load_eval_images(photos, 32, max_images=3)
  assert [i for i, _, _ in images] == ['astronaut.png', 'camera.png', 'chelsea.png']
  _, L, ab = images[2]
  assert L.shape == (32, 32) and ab.shape == (32, 32, 2)
  # chelsea is 300x451: the centered 300x300 square, resized.
  expected = skimage.color.rgb2lab(_center_square(skimage.data.chelsea(), 32))
  np.testing.assert_allclose(L, expected[..., 0], atol=0.05)
  np.testing.assert_allclose(ab, expected[..., 1:], atol=0.1)


def test_launch_evaluate_on_photos(photos, tmp_path):
  write_workdir(tmp_path / 'model_a', seeds=(0,))
  write_workdir(tmp_path / 'model_b', seeds=(3,))
  out = tmp_path / 'eval'
  cmd = [
    sys.executable,
    '-m',
    'launch.evaluate',
    f'--checkpoint={tmp_path / "model_a"}',
    f'--checkpoint={tmp_path / "model_b"}',
    f'--input={photos}',
    f'--output_dir={out}',
    '--image_size=64',
  ]
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr
  results = _strict_json(out / 'metrics.json')
  assert list(results) == [str(tmp_path / 'model_a'), str(tmp_path / 'model_b'), 'gray']
  for r in results.values():
    assert set(r) - _notes(r) == KEYS and len(r['per_image']) == 5 and len(r['ab_bias']) == 2
  # camera is gray: the gray baseline predicts it exactly, so its PSNR is null (not Infinity)
  # and the mean is over the other 4 images, as the note says.
  assert results['gray']['psnr_note'].startswith('mean over the 4 of 5 images not predicted')
  gray_by_id = {m['id']: m for m in results['gray']['per_image']}
  assert gray_by_id['camera.png']['psnr'] is None
  assert gray_by_id['camera.png']['psnr_note'] == evaluation.EXACT_NOTE
  np.testing.assert_allclose(
    results['gray']['psnr'],
    np.mean([m['psnr'] for i, m in gray_by_id.items() if i != 'camera.png']),
    rtol=1e-12,
  )
  gray = results['gray']
  assert gray['colorfulness'] < 0.1 and gray['chroma_ratio'] == 0  # 8-bit rounding only
  # The gray baseline's MSE is the mean squared gt ab / 128, from scikit-image's Lab.
  mse = []
  for name in ('astronaut', 'camera', 'chelsea', 'coffee', 'rocket'):
    rgb = getattr(skimage.data, name)()
    if rgb.ndim == 2:
      continue
    ab = skimage.color.rgb2lab(_center_square(rgb, 64))
    mse.append(np.mean((ab[..., 1:] / 128) ** 2))
  by_id = {m['id']: m for m in gray['per_image']}
  assert by_id['camera.png']['mse_ab'] < 1e-6  # a gray photo is its own gray baseline
  np.testing.assert_allclose(
    [by_id[n]['mse_ab'] for n in ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.png')],
    mse,
    rtol=0.05,
  )
  report = (out / 'report.md').read_text()
  assert (
    'Tint length' in report and '| gray |' in report and f'| {tmp_path / "model_b"} |' in report
  )
  figures = sorted((out / 'figures').glob('*.png'))
  assert len(figures) == 2  # 5 images, 4 per figure
  first = np.asarray(Image.open(figures[0]))
  assert first.shape[0] > 4 * 64 and first.shape[1] > 4 * 64  # 4 rows, 4 columns of 64 px tiles


def test_evaluate_records_and_bad_inputs(tmp_path):
  write_workdir(tmp_path / 'wd')
  images = record_fixtures.synthetic_images(3, size=16)
  record_fixtures.write_shards(tmp_path / 'records', 'val', images, num_shards=2)
  loaded = evaluation.load_eval_images(tmp_path / 'records', split='val')
  assert sorted(i for i, _, _ in loaded) == ['img-00000', 'img-00001', 'img-00002']
  by_id = {i: (L, ab) for i, L, ab in loaded}
  np.testing.assert_allclose(by_id['img-00001'][0], images[1][0], atol=0.2)
  np.testing.assert_allclose(by_id['img-00001'][1], images[1][1], atol=0.5)
  results = evaluation.evaluate(
    [str(tmp_path / 'wd')], tmp_path / 'records', tmp_path / 'out', max_images=2
  )
  assert len(results['gray']['per_image']) == 2
  with pytest.raises(ValueError, match='at least one'):
    evaluation.evaluate([], tmp_path / 'records', tmp_path / 'out')
  with pytest.raises(ValueError, match='distinct'):
    evaluation.evaluate(['gray'], tmp_path / 'records', tmp_path / 'out')
  with pytest.raises(FileNotFoundError, match='no train'):
    evaluation.load_eval_images(tmp_path / 'records', split='train')


def test_evaluate_decodes_classification_checkpoints_as_asked(tmp_path):
  log_w = tuple(np.random.default_rng(0).normal(0, 1, quantize.NUM_BINS))
  write_workdir(tmp_path / 'mse', image_size=32)
  write_workdir(
    tmp_path / 'cls', image_size=32, loss='classification', head_stride=1, bin_log_weights=log_w
  )
  images = record_fixtures.synthetic_images(2, size=32)
  record_fixtures.write_shards(tmp_path / 'records', 'val', images, num_shards=1)
  checkpoints = [str(tmp_path / 'mse'), str(tmp_path / 'cls')]
  plain = evaluation.evaluate(checkpoints, tmp_path / 'records', tmp_path / 'plain')
  asked = evaluation.evaluate(
    checkpoints,
    tmp_path / 'records',
    tmp_path / 'asked',
    temperature=0.7,
    prior_correction=0.5,
    chroma_gain=1.5,
  )
  # The regression model has no decoding: unchanged. The classification model is decoded as
  # colorize decodes it with that temperature after adding 0.5 * log w to its logits, stretched
  # by 1.5.
  assert asked[checkpoints[0]]['per_image'] == plain[checkpoints[0]]['per_image']
  colorizer = inference.load(tmp_path / 'cls')
  corrected = colorizer.replace(
    config=dataclasses.replace(
      colorizer.config, temperature=0.7, prior_correction=0.5, chroma_gain=1.5
    )
  )
  ids, L, ab_gt = zip(*evaluation.load_eval_images(tmp_path / 'records'))
  L = np.stack(L)
  ab = np.asarray(inference.colorize(corrected, L[..., None]))
  expected, _ = evaluation.score(ids, L, np.stack(ab_gt), ab)
  np.testing.assert_allclose(asked[checkpoints[1]]['psnr'], expected['psnr'], rtol=1e-4)
  assert asked[checkpoints[1]]['psnr'] != plain[checkpoints[1]]['psnr']
  report = (tmp_path / 'asked' / 'report.md').read_text()
  assert 'decoded with temperature 0.7, prior_correction 0.5, chroma_gain 1.5.' in report
  with pytest.raises(ValueError, match='temperature must be positive'):
    evaluation.evaluate(checkpoints, tmp_path / 'records', tmp_path / 'bad', temperature=0.0)


def test_gray_ground_truth_writes_strict_json_with_reasons(tmp_path, capsys):
  # Before: metrics.json held NaN (ratios to a colorless ground truth) and Infinity (the gray
  # baseline's PSNR on gray photos), which strict JSON parsers refuse.
  photos = tmp_path / 'gray_photos'
  photos.mkdir()
  Image.fromarray(skimage.data.camera()).save(photos / 'camera.png')  # mode L
  moon = skimage.data.moon()
  Image.fromarray(np.repeat(moon[..., None], 3, -1)).save(photos / 'moon_rgb.png')  # gray RGB
  write_workdir(tmp_path / 'wd', image_size=32)
  results = evaluation.evaluate([str(tmp_path / 'wd')], photos, tmp_path / 'out', image_size=32)
  written = _strict_json(tmp_path / 'out' / 'metrics.json')
  assert written == results
  json.dumps(written, allow_nan=False)
  for r in written.values():
    assert r['colorfulness_gt'] == 0  # gray after 8-bit rounding: exactly no color
    assert r['colorfulness_ratio'] is None and r['chroma_ratio'] is None
    assert r['colorfulness_ratio_note'] == evaluation.NO_COLOR_NOTE == r['chroma_ratio_note']
  model, gray = written[str(tmp_path / 'wd')], written['gray']
  assert np.isfinite(model['psnr']) and 'psnr_note' not in model  # a random model is not exact
  assert gray['psnr'] is None and gray['psnr_note'] == evaluation.ALL_EXACT_NOTE
  assert [m['psnr'] for m in gray['per_image']] == [None, None]
  # The finite metrics stay numbers: the gt's ab is float noise (|ab| < 1), so every pixel is
  # within thresholds 1..150 of the gray prediction and none within 0: AuC = 150 / 151.
  assert gray['mse_ab'] < 1e-8
  np.testing.assert_allclose(gray['auc'], 100 * 150 / 151, rtol=1e-12)
  err = capsys.readouterr().err.splitlines()
  lines = [line for line in err if line.startswith('evaluation: metrics.json has null for')]
  assert len(lines) == 1
  assert 'colorfulness_ratio of wd, gray' in lines[0] and evaluation.NO_COLOR_NOTE in lines[0]
  assert 'psnr of gray' in lines[0]
  report = (tmp_path / 'out' / 'report.md').read_text()
  assert '| gray | 0.0000 | n/a |' in report
