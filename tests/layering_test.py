"""The library's layering: colorjax imports nothing of data_prep/launch/bench, and its light
modules load neither Flax, Optax nor Orbax (Grain and data_prep workers import them)."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_library_imports_no_entry_point_package():
  offenders = []
  for path in sorted((ROOT / 'colorjax').rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module]
      offenders += [
        f'{path.name}: {n}' for n in names if n.split('.')[0] in ('data_prep', 'launch', 'bench')
      ]
  assert not offenders, offenders


@pytest.mark.parametrize('module', ['input_pipeline', 'constants', 'records', 'lab', 'augment'])
def test_light_modules_load_no_flax_optax_or_orbax(module):
  # What grain, jax and numpy import themselves (grain loads parts of orbax) is not ours.
  code = (
    'import sys, grain, jax, numpy\n'
    'before = set(sys.modules)\n'
    f'import colorjax.{module}\n'
    'new = set(sys.modules) - before\n'
    "print(sorted(m for m in new if m.split('.')[0] in ('flax', 'optax', 'orbax')))\n"
  )
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == '[]'


def test_top_level_names_load_on_first_use():
  code = (
    'import sys, colorjax\n'
    "assert 'flax' not in sys.modules, 'import colorjax loaded flax'\n"
    'colorjax.load, colorjax.colorize, colorjax.Colorizer, colorjax.with_decoding\n'
    "assert 'colorjax.inference' in sys.modules\n"
    'print(sorted(set(colorjax.__all__) - set(dir(colorjax))))\n'
  )
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == '[]'
