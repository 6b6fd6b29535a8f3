"""Picks a classification checkpoint's decoding on validation images and saves it in model.json.

  python -m launch.calibrate --checkpoint=W --input=DIR [--image_size=N] [--max_images=N]
      [--split=val] [--target_colorfulness=0.85] [--max_tint=3] [--dry_run]
      [--temperatures=0.1,0.2,...] [--prior_corrections=-0.5,...]

Sweeps the annealed-mean temperature, the prior correction and the chroma gain
(colorjax/calibration.py), prints the table, and writes the chosen decoding into W/model.json,
which colorize, launch.colorize, launch.evaluate and exports read (the previous file is kept as
model.json.uncalibrated). The sweep and the choice go to W/calibration.json. Rerun it after
training further: a resumed launch.train rewrites model.json from its flags. --input: a folder of
photos or of records (its --split), held out from training.
"""

from absl import flags

import launch
from colorjax import calibration

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'training workdir or exported params')
_INPUT = flags.DEFINE_string('input', None, 'a folder of validation photos or of records')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None, "default: the model's training size")
_MAX_IMAGES = flags.DEFINE_integer('max_images', None, 'calibrate on the first N images only')
_SPLIT = flags.DEFINE_string('split', 'val', 'the records split (records input only)')
_TARGET = flags.DEFINE_float(
  'target_colorfulness',
  calibration.TARGET_COLORFULNESS,
  'the colorfulness ratio (prediction / ground truth) to reach at the best PSNR',
)
_MAX_TINT = flags.DEFINE_float(
  'max_tint', calibration.MAX_TINT, 'the largest mean ab error (tint length) allowed'
)
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'print the sweep and the choice; write nothing')
_TEMPERATURES = flags.DEFINE_list(
  'temperatures', [f'{t:g}' for t in calibration.TEMPERATURES], 'annealed-mean temperatures'
)
_CORRECTIONS = flags.DEFINE_list(
  'prior_corrections',
  [f'{c:g}' for c in calibration.CORRECTIONS],
  'prior corrections, crossed with the temperatures (each pair short of the target '
  'colorfulness also gets the chroma gain that reaches it)',
)


def main(argv):
  del argv  # checked by launch.run
  calibration.calibrate(
    _CHECKPOINT.value,
    _INPUT.value,
    image_size=_IMAGE_SIZE.value,
    max_images=_MAX_IMAGES.value,
    split=_SPLIT.value,
    target_colorfulness=_TARGET.value,
    max_tint=_MAX_TINT.value,
    dry_run=_DRY_RUN.value,
    temperatures=[float(t) for t in _TEMPERATURES.value],
    corrections=[float(c) for c in _CORRECTIONS.value],
  )


def run(argv=None):
  launch.run(main, 'launch.calibrate', required=['checkpoint', 'input'], argv=argv)


if __name__ == '__main__':
  run()
