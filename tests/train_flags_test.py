"""launch.train flags: every checked-in flagfile parses into a TrainConfig; typos fail loudly."""

import glob
import os

import pytest
from absl import flags

from colorjax import train_config
from launch import train as launch_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, 'launch', 'configs', '*.flags')))


def _parse(*args):
  fv = flags.FlagValues()
  launch_train.define_flags(fv)
  fv(['train', *args])
  return fv


def test_the_three_configs_are_checked_in():
  names = {os.path.basename(f) for f in FLAGFILES}
  assert {'seed_coco.flags', 'demo.flags', 'tiny.flags'} <= names


@pytest.mark.parametrize('path', FLAGFILES, ids=os.path.basename)
def test_flagfile_parses_and_sets_every_field(path):
  fv = _parse(f'--flagfile={path}')
  config = launch_train.config_from_flags(fv)
  assert isinstance(config, train_config.TrainConfig)
  text = open(path).read()
  for line in text.splitlines():
    if line.startswith('--'):
      name = line[2:].split('=', 1)[0]
      assert fv[name].present, name
  # A comment line documents each flag.
  lines = text.splitlines()
  for i, line in enumerate(lines):
    if line.startswith('--') and i > 0:
      assert lines[i - 1].startswith(('#', '--')), line


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
