"""bench/quality.py and bench/gpu.sh end to end on tiny synthetic inputs (no timings asserted)."""

import os
import pathlib
import re
import subprocess
import sys

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
  # vivid.flags' decoding, which the tables use (read here without importing bench.quality,
  # whose absl flags would clash with launch.train's in this process).
  vivid_flags = (ROOT / 'launch' / 'configs' / 'vivid.flags').read_text()
  t = float(re.findall(r'^--temperature=(.+)$', vivid_flags, re.M)[-1])
  c = float(re.findall(r'^--prior_correction=(.+)$', vivid_flags, re.M)[-1])
  g = float(re.findall(r'^--chroma_gain=(.+)$', vivid_flags, re.M)[-1])
  assert t != 0.38 and c != 0 and g != 1
  cmd = [
    sys.executable,
    '-m',
    'bench.quality',
    f'--data_dir={data}',
    f'--workdir={tmp_path / "work"}',
    '--steps=2',
    '--image_size=64',
    '--batch_size=4',
    f'--temperatures={t:g},0.38',
    f'--prior_corrections=0,{c:g}',
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
  # The four targets, each judged, and the 2 x 2 decoding sweep.
  targets = re.findall(r'^\| vivid .* \| (yes|no) \|$', text, re.M)
  assert len(targets) == 4, text
  sweep = re.findall(r'^\| ([0-9.]+) \| (-?[0-9.]+) \| ([0-9.]+) \| .*\|$', text, re.M)
  t, c, g = f'{t:g}', f'{c:g}', f'{g:.3g}'
  grid = [(t_, c_) for t_, c_, g_ in sweep if g_ == '1']
  assert sorted(grid) == sorted([(t, '0'), (t, c), ('0.38', '0'), ('0.38', c)]), text
  # Grid pairs below the target colorfulness get gain rows; vivid.flags' decoding comes last.
  assert {(t_, c_) for t_, c_, g_ in sweep[4:-1]} <= set(grid)
  assert sweep[-1] == (t, c, g), text
  # The tables decode vivid as vivid.flags does, and the sweep marks that row.
  assert f'decoded with temperature {t}, prior_correction {c}, chroma_gain {float(g):g}.' in text
  assert re.search(rf'^\| {t} \| {c} \| {g} \| .* vivid\.flags.* \|$', text, re.M), text
  figure = doc.parent / 'quality_figure.png'
  assert Image.open(figure).size[0] > 64 * 3  # Original | Grayscale | seed | vivid


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
    r'^real pipeline \(best worker count\) / synthetic at batch (\d+): ([0-9.]+)$', result, re.M
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
