"""Trains a colorization network: python -m launch.train --flagfile=launch/configs/NAME.flags.

Every colorjax.train_config.TrainConfig field is a flag of the same name (help: `--helpfull`),
plus --workdir; flags given after --flagfile override it; an unknown flag is an error.
"""

import dataclasses

from absl import flags

import launch
from colorjax import train_config, trainer
from data_prep import builder

_DEFINE = {
  bool: flags.DEFINE_bool,
  int: flags.DEFINE_integer,
  float: flags.DEFINE_float,
  str: flags.DEFINE_string,
}


def define_flags(flag_values=flags.FLAGS):
  """--workdir and one absl flag per TrainConfig field, with its default and help."""
  flags.DEFINE_string(
    'workdir',
    None,
    'output folder: checkpoints, logs, samples (resumes there)',
    flag_values=flag_values,
  )
  for field in dataclasses.fields(train_config.TrainConfig):
    _DEFINE[field.type](field.name, field.default, field.metadata['help'], flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
  """The TrainConfig the parsed flags describe."""
  names = [f.name for f in dataclasses.fields(train_config.TrainConfig)]
  return train_config.TrainConfig(**{n: flag_values[n].value for n in names})


define_flags()


# The exit code of a run stopped by SIGTERM after saving (128 + 15, as a shell reports it), so a
# scheduler sees a preemption rather than a finished run.
PREEMPTED = 143


def main(argv):
  del argv  # checked by launch.run
  config = config_from_flags()
  if config.sample_data and config.process_id == 0:
    builder.ensure_sample_records(config.data_dir, config.image_size)
  result = trainer.train_and_evaluate(config, flags.FLAGS.workdir)
  return PREEMPTED if result.preempted else 0


def run(argv=None):
  launch.run(main, 'launch.train', required=['workdir'], argv=argv)


if __name__ == '__main__':
  run()
