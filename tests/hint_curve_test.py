"""The PSNR-vs-hints curve and hints on real photos, through a small hint model trained here."""

import json

import numpy as np
import pytest
from hint_model_fixtures import photos, train_hint_model

import colorjax
from colorjax import evaluation, fullsize, hint_curve, hints, lab, records


@pytest.fixture(scope='module')
def hint_model(tmp_path_factory):
  return train_hint_model(tmp_path_factory.mktemp('hint_model'), loss='mse', steps=80)


@pytest.fixture(scope='module')
def eval_set():
  batch = photos(64)
  L, ab = records.dequantize(batch['L'], batch['ab'])
  return np.asarray(L[..., 0]), np.asarray(ab)


def test_eval_hints_are_fixed_and_nested(eval_set):
  _, ab = eval_set
  five, ten = hint_curve.eval_hints(ab, 5), hint_curve.eval_hints(ab, 10)
  np.testing.assert_array_equal(five[1], hint_curve.eval_hints(ab, 5)[1])
  assert np.all(ten[1] >= five[1])  # the 10 points hold the 5
  assert 0 < five[1].sum() <= 5 * 36 * len(ab)


def test_more_hints_give_more_psnr(hint_model, eval_set):
  L, ab = eval_set
  colorizer = colorjax.load(hint_model)
  points = hint_curve.curve(colorizer, L, ab, counts=(0, 5, 20))
  psnr = [points[n]['psnr'] for n in (0, 5, 20)]
  assert psnr[0] < psnr[1] < psnr[2], points
  with pytest.raises(ValueError, match='takes no hints'):
    plain = colorizer.replace(config=colorizer.config.__class__(image_size=64))
    hint_curve.curve(plain, L, ab, counts=(0, 1))


def test_launch_evaluate_writes_the_curve(hint_model, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  import skimage.data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  folder = tmp_path / 'photos'
  folder.mkdir()
  for name in ('astronaut', 'chelsea', 'coffee'):
    Image.fromarray(getattr(skimage.data, name)()[..., :3]).save(folder / f'{name}.png')
  out = tmp_path / 'eval'
  results = evaluation.evaluate(
    [str(hint_model)], folder, out, image_size=64, hint_points=[0, 1, 5]
  )
  curve = json.loads((out / 'metrics.json').read_text())['hint_curve'][str(hint_model)]
  assert sorted(curve, key=int) == ['0', '1', '5'] and results['hint_curve'][str(hint_model)]
  np.testing.assert_allclose(curve['0']['psnr'], results[str(hint_model)]['psnr'], atol=1e-2)
  assert (out / 'hint_curve.png').stat().st_size > 10_000
  assert 'PSNR against the number of hints' in (out / 'report.md').read_text()
  cmd = [sys.executable, '-m', 'launch.evaluate', f'--checkpoint={hint_model}', f'--input={folder}',
         f'--output_dir={tmp_path / "cli"}', '--image_size=64', '--hint_points=0,2']  # fmt: skip
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (
    '2'
    in json.loads((tmp_path / 'cli' / 'metrics.json').read_text())['hint_curve'][str(hint_model)]
  )


def test_hints_in_photo_coordinates_land_where_they_were_put(hint_model):
  """A hint given in the pixels of a 300 x 180 photo takes its color where it was put (mean ab
  error <= 5 in the hinted patch), changes the colors most there and far less in a distant part
  of the photo; the photo's own lightness is kept everywhere."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  colorizer = colorjax.load(hint_model)
  photo = np.asarray(Image.fromarray(colorjax_photo()).resize((300, 180)))
  target = np.array([-20.0, 10.0])  # a green that sRGB holds at the patch's dark pixels too (L 20)
  given = [hints.Hint(x=200, y=60, ab=tuple(target), radius=14)]
  plain = colorjax.colorize_image(colorizer, photo)
  hinted = colorjax.colorize_image(colorizer, photo, hints=given)
  assert hinted.shape == photo.shape
  ab = lambda rgb: lab.rgb8_to_lab(rgb)[..., 1:]
  change = np.linalg.norm(ab(hinted) - ab(plain), axis=-1)
  patch, far = (slice(52, 69), slice(190, 211)), (slice(130, 180), slice(0, 80))
  assert change[patch].mean() > 3 * change[far].mean(), (change[patch].mean(), change[far].mean())
  row, col = np.unravel_index(np.argmax(change), change.shape)
  assert abs(row - 60) < 25 and abs(col - 200) < 40  # the largest change is at the hint
  after = np.linalg.norm(ab(hinted)[patch].reshape(-1, 2).mean(0) - target)
  assert after <= 5, after
  np.testing.assert_allclose(fullsize.lightness(hinted), fullsize.lightness(photo), atol=1.0)


def colorjax_photo():
  import skimage.data  # pylint: disable=g-import-not-at-top

  return skimage.data.coffee()
