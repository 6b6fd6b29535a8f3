"""bench/quality.py and bench/gpu.sh end to end on tiny synthetic inputs (no timings asserted)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from image_fixtures import jpeg, pattern
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _photos(folder, n, seed):
  folder.mkdir(parents=True)
  for i in range(n):
    (folder / f'{seed + i:04d}.jpg').write_bytes(jpeg(pattern(96, 112, seed + i)))


def test_quality_trains_evaluates_and_writes_the_report(tmp_path):
  data = tmp_path / 'shared'
  _photos(data / 'coco' / 'train2017', 6, 0)
  _photos(data / 'photos' / 'old', 2, 100)  # nested, as in the shared folder
  _photos(data / 'coco' / 'val2017', 3, 200)
  doc = tmp_path / 'docs' / 'quality.md'
  cmd = [
    sys.executable,
    '-m',
    'bench.quality',
    f'--data_dir={data}',
    f'--workdir={tmp_path / "work"}',
    '--steps=2',
    '--image_size=64',
    '--batch_size=4',
    '--temperatures=0.1,0.38',
    '--prior_corrections=-0.3,0.05',
    '--models=seed,vivid,vivid_hints',  # vivid_hints: the quickest hint model to build
    '--hint_points=0,1,5',
    f'--doc={doc}',
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = doc.read_text()
  # Both models trained for the steps asked, on the 8 train photos; both evaluated on val.
  for name in ('seed', 'vivid'):
    assert (tmp_path / 'work' / name / 'checkpoints' / '2').is_dir()
    assert re.search(rf'^\| {name} \| [0-9.]+ \|', text, re.M), text
  assert '(8 photos after' in text and 'on 3\ncoco/val2017 photos' in text
  assert 'CPU, ' in text  # what trained them
  # The four targets, each judged.
  targets = re.findall(r'^\| vivid .* \| (yes|no) \|$', text, re.M)
  assert len(targets) == 4, text
  # launch.calibrate's sweep on the val photos: the 2 x 2 grid at gain 1, then the gains that
  # bring the grid's pairs below the target colorfulness to it.
  record = json.loads((tmp_path / 'work' / 'vivid' / 'calibration.json').read_text())
  assert record['num_images'] == 3 and record['image_size'] == 64
  sweep = re.findall(r'^\| ([0-9.]+) \| (-?[0-9.]+) \| ([0-9.]+) \| .*\|$', text, re.M)
  assert len(sweep) == len(record['sweep']), text
  grid = [(t, c) for t, c, g in sweep if g == '1']
  assert sorted(grid) == sorted(
    [('0.1', '-0.3'), ('0.1', '0.05'), ('0.38', '-0.3'), ('0.38', '0.05')]
  )
  assert {(t, c) for t, c, g in sweep if g != '1'} <= set(grid)
  # The tables decode vivid as its model.json says: the chosen row when one keeps the tint <= 3.
  config = json.loads((tmp_path / 'work' / 'vivid' / 'model.json').read_text())
  line = (
    f'decoded with temperature {config["temperature"]:g}, prior correction\n'
    f'{config["prior_correction"]:g} and chroma gain {config["chroma_gain"]:.4g}: '
  )
  assert line in text, text
  chosen = re.findall(r'^\| .* \| chosen \|$', text, re.M)
  if record['chosen']:
    assert len(chosen) == 1 and 'launch.calibrate` chose' in text
    assert [config[k] for k in ('temperature', 'prior_correction', 'chroma_gain')] == [
      record['chosen'][k] for k in ('temperature', 'prior_correction', 'chroma_gain')
    ]
  else:
    assert not chosen and 'kept the tint <= 3' in text
  figure = doc.parent / 'quality_figure.png'
  assert Image.open(figure).size[0] > 64 * 3  # Original | Grayscale | seed | vivid | ...
  # The hint model's curve at each count, its targets judged, and its figures.
  assert re.search(r'^\| vivid_hints \| 5 \| [0-9.]+ \|', text, re.M), text
  assert re.search(r'^\| vivid_hints at 0 hints loses <= 0.2 dB PSNR to vivid \|', text, re.M), text
  assert re.findall(r'^\| gain at (1|5) hints >= .* \| (yes|no) \|$', text, re.M), text
  assert Image.open(doc.parent / 'quality_hints.png').size[0] == 4 * 64 * 2
  assert (doc.parent / 'quality_hint_curve.png').is_file()
  images = re.findall(r'!\[[^]]*\]\(([^)]+)\)', text)
  assert 'quality_hint_curve.png' in images, images
  assert all((doc.parent / name).is_file() for name in images), images  # no broken picture


def test_gpu_script_runs_on_a_cpu_with_allow_cpu(tmp_path):
  env = dict(
    os.environ,
    ALLOW_CPU='1',
    SIZE='64',
    BATCH='2,4',
    STEPS='2',
    EXAMPLES='8',
    WORKERS='0,1',
    WORK=str(tmp_path / 'work'),
    OUT=str(tmp_path / 'out'),
    WHEELS=str(tmp_path / 'no_wheels'),  # not the cp312 wheels a checkout may have staged
  )
  (tmp_path / 'out').mkdir()
  proc = subprocess.run(
    ['bash', 'bench/gpu.sh'], cwd=ROOT, env=env, capture_output=True, text=True, check=False
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  result = (tmp_path / 'out' / 'gpu_result.md').read_text()
  rows = re.findall(
    r'^\| (synthetic|Grain)[^|]*?(?:, (\d) workers)? \| (\d+) \| ([0-9.]+) \|', result, re.M
  )
  synthetic = {int(b): float(x) for kind, _, b, x in rows if kind == 'synthetic'}
  real = {(int(b), int(w)): float(x) for kind, w, b, x in rows if kind == 'Grain'}
  # Every batch is timed on synthetic data and on the real pipeline at every worker count.
  assert sorted(synthetic) == [2, 4] and sorted(real) == [(2, 0), (2, 1), (4, 0), (4, 1)], result
  assert all(x > 0 for x in [*synthetic.values(), *real.values()])
  ratio = re.search(
    r'^real pipeline \(launch.train, best worker count\) / synthetic at batch (\d+): ([0-9.]+)$',
    result,
    re.M,
  )
  assert ratio, result
  # The fastest synthetic batch is the one fed; the table prints images/s to 0.1 and the ratio
  # to 0.001: allow for that rounding.
  batch = int(ratio[1])
  assert synthetic[batch] == max(synthetic.values())
  fast, slow = synthetic[batch], max(real[batch, 0], real[batch, 1])
  rounding = slow / fast * (0.05 / slow + 0.05 / fast) + 5e-4
  assert abs(float(ratio[2]) - slow / fast) <= rounding
  # bench.gpu_record turns the result into docs/benchmarks.md's section, judged on its numbers.
  from bench import gpu_record  # pylint: disable=g-import-not-at-top

  assert result.startswith('machine: ') and 'cores' in result.splitlines()[0]
  device, best, pipeline = gpu_record.summarize(result)
  assert (best, pipeline) == (max(synthetic.values()), float(ratio[2]))
  section = gpu_record.body([result], note='smoke')
  verdict = f'| {device} | {best:.0f} | {best / 3000:.2f}x | {pipeline:.3f} | '
  verdict += 'yes |' if pipeline >= 0.95 else 'no |'
  assert verdict in section and result.strip() in section and section.endswith('smoke'), section


def test_shipped_quality_writes_both_trade_offs(tmp_path):
  """bench.shipped_quality on a small hint-taking classification model and 3 photos: the
  decoding sweep against gray, the hint curve with and without spreading, the figures."""
  from studio_fixtures import HINT_MODEL, write_random_model  # pylint: disable=g-import-not-at-top

  rs = np.random.RandomState(0)  # the rebalancing weights that training writes (prior correction)
  log_w = tuple(float(w) for w in rs.uniform(-1, 1, 268))
  write_random_model(tmp_path / 'model', image_size=32, bin_log_weights=log_w, **HINT_MODEL)
  _photos(tmp_path / 'val', 3, 300)
  doc = tmp_path / 'docs' / 'shipped.md'
  cmd = [
    sys.executable, '-m', 'bench.shipped_quality', f'--checkpoint={tmp_path / "model"}',
    f'--val_dir={tmp_path / "val"}', '--sweep_temperatures=0.38,1', '--sweep_corrections=-1,0',
    '--curve_points=0,1,5', f'--report={doc}', f'--bw_dir={tmp_path / "val"}',
  ]  # fmt: skip
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = doc.read_text()
  sweep = re.findall(r'^\| (0.38|1) \| (-1|0) \| 1 \| [0-9.]+ \| [0-9.]+ \| .* \| (yes|no) \|$',
                     text, re.M)  # fmt: skip
  assert len(sweep) == 4, text
  assert re.search(r'^\| .* \| (yes|no) \(model.json\) \|$', text, re.M), text
  curve = re.findall(
    r'^\| (0|1|5) \| [0-9.]+ \| [-+][0-9.]+ \| [0-9.]+ \| [-+][0-9.]+ \|', text, re.M
  )
  assert curve == ['0', '1', '5'], text
  assert '0300.jpg, 0301.jpg, 0302.jpg of the folder' in text, text
  for name in ('shipped_tradeoff.png', 'shipped_decodings.png', 'shipped_hint_curve.png',
               'shipped_hints.png', 'shipped_bw.png'):  # fmt: skip
    assert Image.open(doc.parent / name).size[0] > 32, name
