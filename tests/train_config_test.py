"""launch.train flags: every checked-in flagfile parses into a TrainConfig; typos fail loudly."""

import glob
import os

import pytest
from absl import flags

import launch
from colorjax import train_config
from launch import train as launch_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, 'launch', 'configs', '*.flags')))


def _parse(*args):
  fv = flags.FlagValues()
  launch_train.define_flags(fv)
  fv(launch.expand_flagfiles(['train', *args]))
  return fv


def test_the_three_configs_are_checked_in():
  names = {os.path.basename(f) for f in FLAGFILES}
  assert {'seed_coco.flags', 'demo.flags', 'tiny.flags'} <= names


@pytest.mark.parametrize('path', FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_and_lists_only_what_differs(path):
  fv = _parse(f'--flagfile={path}')
  assert isinstance(launch_train.config_from_flags(fv), train_config.TrainConfig)
  lines = open(path).read().splitlines()
  # Each value differs from TrainConfig's default and from the flagfile it extends (one place
  # for each default); a comment line introduces each group of flags.
  parent = [line for line in lines if line.startswith('--flagfile=')]
  base = _parse(parent[0].replace('=', f'={os.path.dirname(path)}/', 1)) if parent else _parse()
  for i, line in enumerate(lines):
    if line.startswith('--') and not line.startswith('--flagfile='):
      name = line[2:].split('=', 1)[0]
      assert fv[name].present, name
      if name != 'workdir':
        assert fv[name].value != base[name].value, f'{line} repeats the value it already has'
      assert lines[i - 1].startswith(('#', '--')), line


def test_vivid_extends_the_reports_setup_from_any_working_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  vivid = launch_train.config_from_flags(_parse(f'--flagfile={ROOT}/launch/configs/vivid.flags'))
  assert (vivid.model, vivid.loss, vivid.data_dir, vivid.worker_count) == (
    'unet',
    'classification',
    'data/coco',
    4,
  )
  assert (vivid.batch_size, vivid.total_steps, vivid.image_size) == (50, 20000, 256)


def test_seed_coco_is_the_reports_setup():
  config = launch_train.config_from_flags(
    _parse(f'--flagfile={os.path.join(ROOT, "launch", "configs", "seed_coco.flags")}')
  )
  assert (config.image_size, config.batch_size, config.total_steps) == (256, 50, 20000)
  assert (config.model, config.loss, config.rotation_deg, config.zoom, config.flip) == (
    'seed',
    'mse',
    20.0,
    0.2,
    True,
  )


def test_later_flags_override_the_flagfile():
  tiny = os.path.join(ROOT, 'launch', 'configs', 'tiny.flags')
  config = launch_train.config_from_flags(_parse(f'--flagfile={tiny}', '--batch_size=8'))
  assert config.batch_size == 8


def test_misspelled_flag_fails():
  tiny = os.path.join(ROOT, 'launch', 'configs', 'tiny.flags')
  with pytest.raises(flags.UnrecognizedFlagError, match='lerning_rate'):
    _parse(f'--flagfile={tiny}', '--lerning_rate=0.1')


def test_bad_values_fail():
  with pytest.raises(flags.IllegalFlagValueError):
    _parse('--batch_size=many')
  with pytest.raises(ValueError, match='parallel must be one of'):
    launch_train.config_from_flags(_parse('--parallel=ddp'))
  with pytest.raises(ValueError, match='batch_size must be > 0'):
    launch_train.config_from_flags(_parse('--batch_size=0'))
  with pytest.raises(ValueError, match='unknown model'):
    launch_train.config_from_flags(_parse('--model=resnet'))
  with pytest.raises(ValueError, match='fill must be one of'):
    launch_train.config_from_flags(_parse('--fill=wrap'))
