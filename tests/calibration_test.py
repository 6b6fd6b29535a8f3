"""Tests for colorjax.calibration and python -m launch.calibrate on skimage photos."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from inference_test import write_workdir
from PIL import Image

from colorjax import calibration, decoding, evaluation, inference, quantize, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(t, c, psnr, cf, tint, gain=1.0):
  return {
    'temperature': t,
    'prior_correction': c,
    'chroma_gain': gain,
    'psnr': psnr,
    'auc': 80.0,
    'colorfulness_ratio': cf,
    'tint': tint,
  }


def test_choose_prefers_accuracy_among_colorful_untinted_decodings():
  rows = [
    _row(0.1, 0.0, 22.0, 0.80, 1.0),  # accurate but not colorful enough
    _row(0.1, 0.1, 21.0, 0.90, 2.0),  # colorful enough
    _row(0.2, 0.1, 21.4, 0.86, 2.5),  # colorful enough and more accurate: chosen
    _row(0.2, 0.2, 23.0, 1.10, 5.0),  # the best PSNR, but tinted
  ]
  assert calibration.choose(rows) is rows[2]
  # None reaches the target colorfulness: the most colorful untinted one.
  assert calibration.choose(rows, target_colorfulness=0.95) is rows[1]
  # A stricter tint limit leaves only the first.
  assert calibration.choose(rows, max_tint=1.5) is rows[0]
  with pytest.raises(ValueError, match='tint <= 0.5'):
    calibration.choose(rows, max_tint=0.5)


@pytest.mark.parametrize(
  'colorfulness',
  [
    lambda g: 0.3 * g,  # proportional: the first guess lands
    lambda g: 0.2 + 0.25 * g,  # linear with an offset: a secant step
    lambda g: 0.5 * np.sqrt(g),  # concave: secant steps from below
    lambda g: 0.95 * np.tanh(g / 1.5),  # saturating
  ],
)
def test_gain_search_reaches_the_target_from_above(colorfulness):
  def row(t, c, g):
    return _row(t, c, 20.0, float(colorfulness(g)), 1.0, gain=g)

  base = row(0.2, 0.0, 1.0)
  found = calibration._gain_rows(base, row, 0.85)
  assert 1 <= len(found) <= calibration.GAIN_STEPS
  assert all((r['temperature'], r['prior_correction']) == (0.2, 0.0) for r in found)
  cf = found[-1]['colorfulness_ratio']
  assert 0.85 <= cf <= 0.85 + calibration.GAIN_TOLERANCE, [r['chroma_gain'] for r in found]


def test_gain_search_stops_at_the_cap_or_when_colorfulness_stops_growing():
  def capped(t, c, g):
    return _row(t, c, 20.0, 0.1 * g, 1.0, gain=g)  # 0.85 needs gain 8.5 > MAX_GAIN

  found = calibration._gain_rows(capped(0.2, 0.0, 1.0), capped, 0.85)
  assert found[-1]['chroma_gain'] == calibration.MAX_GAIN
  assert all(1 < r['chroma_gain'] <= calibration.MAX_GAIN for r in found)

  def flat(t, c, g):
    return _row(t, c, 20.0, 0.4, 1.0, gain=g)  # a constant image: the stretch changes nothing

  assert len(calibration._gain_rows(flat(0.2, 0.0, 1.0), flat, 0.85)) == 1


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('photos')
  for name in ('astronaut', 'chelsea', 'coffee', 'rocket'):
    Image.fromarray(getattr(skimage.data, name)()).save(folder / f'{name}.png')
  return folder


def _classification_workdir(path):
  # Weights that grow with chroma, as rebalancing gives: a larger correction, more colorful output.
  log_w = tuple((np.hypot(*np.asarray(quantize.BIN_CENTERS).T) / 30).tolist())
  write_workdir(
    path, image_size=32, loss='classification', head_stride=1, bin_log_weights=log_w,
    temperature=0.38, prior_correction=0.0,
  )  # fmt: skip
  return path


def test_sweep_scores_each_decoding_as_colorize_and_score_do(tmp_path, photos):
  colorizer = inference.load(_classification_workdir(tmp_path / 'cls'))
  images = evaluation.load_eval_images(photos, 32)
  grid = calibration.sweep(colorizer, images, temperatures=(0.1, 1.0), corrections=(-0.5, 0.3))
  assert [(r['temperature'], r['prior_correction']) for r in grid] == [
    (0.1, -0.5), (0.1, 0.3), (1.0, -0.5), (1.0, 0.3)
  ]  # fmt: skip
  # With a target colorfulness between T 0.1's two rows, two decodings between them are added.
  target = (grid[0]['colorfulness_ratio'] + grid[1]['colorfulness_ratio']) / 2
  assert grid[0]['colorfulness_ratio'] < target < grid[1]['colorfulness_ratio']
  rows = calibration.sweep(colorizer, images, (0.1, 1.0), (-0.5, 0.3), target_colorfulness=target)
  assert rows[:4] == grid and all(r['chroma_gain'] == 1 for r in grid)
  refined = [r for r in rows[4:] if r['temperature'] == 0.1 and r['chroma_gain'] == 1]
  assert len(refined) == 4 and all(-0.5 < r['prior_correction'] < 0.3 for r in refined)
  # Bisection keeps the target bracketed: the closest corrections above and below it are the
  # grid's step / 2**4 apart.
  above = [r['prior_correction'] for r in refined if r['colorfulness_ratio'] >= target]
  below = [r['prior_correction'] for r in refined if r['colorfulness_ratio'] < target]
  assert min(above, default=0.3) - max(below, default=-0.5) == pytest.approx(0.8 / 16)

  # Each grid pair below the target gets chroma gain rows (at most GAIN_STEPS, gains above 1).
  gained = [r for r in rows[4:] if r['chroma_gain'] != 1]
  below = {
    (r['temperature'], r['prior_correction']) for r in grid if r['colorfulness_ratio'] < target
  }
  assert {(r['temperature'], r['prior_correction']) for r in gained} == below
  assert all(1 < r['chroma_gain'] <= calibration.MAX_GAIN for r in gained)
  assert len(gained) <= calibration.GAIN_STEPS * len(below)
  # max_tint leaves out the pairs more tinted than that: the gain does not change the tint.
  low_tint = calibration.sweep(
    colorizer, images, (0.1, 1.0), (-0.5, 0.3), target_colorfulness=target, max_tint=10
  )
  assert {r['temperature'] for r in low_tint if r['chroma_gain'] != 1} == {1.0}

  ids, L, ab = (list(x) for x in zip(*images))
  L, ab = np.stack(L), np.stack(ab)
  for r in rows:
    decoded = decoding.with_decoding(
      colorizer,
      temperature=r['temperature'],
      prior_correction=r['prior_correction'],
      chroma_gain=r['chroma_gain'],
    )
    pred = np.asarray(inference.colorize(decoded, L[..., None]))
    m, _ = evaluation.score(ids, L, ab, pred)
    np.testing.assert_allclose(
      [r['psnr'], r['auc'], r['colorfulness_ratio'], r['tint']],
      [m['psnr'], m['auc'], m['colorfulness_ratio'], float(np.hypot(*m['ab_bias']))],
      rtol=1e-4,
    )
  # The settings differ: a cold, corrected decoding is more colorful than a warm, damped one.
  assert rows[1]['colorfulness_ratio'] > rows[2]['colorfulness_ratio']


def test_sweep_refuses_regression_models(tmp_path, photos):
  write_workdir(tmp_path / 'mse', image_size=32)
  with pytest.raises(ValueError, match="'mse' model has no decoding"):
    calibration.sweep(inference.load(tmp_path / 'mse'), evaluation.load_eval_images(photos, 32))


def _calibrate(*args):
  return subprocess.run(
    [sys.executable, '-m', 'launch.calibrate', *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )


def test_launch_calibrate_writes_the_chosen_decoding(tmp_path, photos):
  workdir = _classification_workdir(tmp_path / 'cls')
  before = (workdir / 'model.json').read_text()
  # --dry_run prints the sweep and writes nothing.
  proc = _calibrate(f'--checkpoint={workdir}', f'--input={photos}', '--max_tint=1000', '--dry_run')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'chosen: temperature' in proc.stdout and '| chosen |' in proc.stdout
  assert (workdir / 'model.json').read_text() == before
  assert not (workdir / 'calibration.json').exists()

  proc = _calibrate(f'--checkpoint={workdir}', f'--input={photos}', '--max_tint=1000')
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((workdir / 'calibration.json').read_text())
  grid = len(calibration.TEMPERATURES) * len(calibration.CORRECTIONS)
  assert [(r['temperature'], r['prior_correction']) for r in record['sweep'][:grid]] == [
    (t, c) for t in calibration.TEMPERATURES for c in calibration.CORRECTIONS
  ]
  bisected = [r for r in record['sweep'][grid:] if r['chroma_gain'] == 1]
  assert len(bisected) in range(0, 4 * len(calibration.TEMPERATURES) + 1, 4)
  assert record['num_images'] == 4 and record['image_size'] == 32
  assert record['chosen'] == calibration.choose(record['sweep'], max_tint=1000)
  config = inference.load(workdir).config  # what colorize now decodes with
  assert config.temperature == record['chosen']['temperature']
  assert config.prior_correction == record['chosen']['prior_correction']
  assert config.chroma_gain == record['chosen']['chroma_gain']
  assert (workdir / 'model.json.uncalibrated').read_text() == before

  write_workdir(tmp_path / 'mse', image_size=32)
  proc = _calibrate(f'--checkpoint={tmp_path / "mse"}', f'--input={photos}')
  assert proc.returncode != 0 and 'has no decoding to calibrate' in proc.stderr


def test_trainer_calibration_writes_or_keeps_the_decoding(tmp_path, photos, capsys):
  """launch.train --calibrate's step: the choice goes into model.json; when no decoding keeps the
  tint small enough, model.json keeps the training decoding."""
  workdir = _classification_workdir(tmp_path / 'cls')
  before = (workdir / 'model.json').read_text()
  assert trainer.calibrate_decoding(workdir, photos, 0, max_tint=-1.0) is None
  assert 'calibration kept the training decoding' in capsys.readouterr().out
  assert (workdir / 'model.json').read_text() == before
  failed = json.loads((workdir / 'calibration.json').read_text())  # the sweep is still kept
  assert failed['chosen'] is None and len(failed['sweep']) >= len(calibration.TEMPERATURES)
  assert not (workdir / 'model.json.uncalibrated').exists()
  best = trainer.calibrate_decoding(workdir, photos, 2, max_tint=1e9)
  record = json.loads((workdir / 'calibration.json').read_text())
  assert record['chosen'] == best and record['num_images'] == 2
  config = inference.load(workdir).config
  assert (config.temperature, config.prior_correction) == (
    best['temperature'],
    best['prior_correction'],
  )
