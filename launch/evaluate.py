"""Scores checkpoints on photos or records against the all-gray baseline.

  python -m launch.evaluate --checkpoint=A [--checkpoint=B ...] --input=DIR --output_dir=OUT
      [--image_size=256] [--max_images=N] [--split=val] [--temperature=T] [--prior_correction=C]
      [--chroma_gain=G]

Writes OUT/metrics.json (per checkpoint as given, plus the all-gray baseline under 'gray'),
OUT/report.md (a Table-2-style summary) and OUT/figures/figure_NNN.png. Metric definitions:
colorjax/metrics.py (after METRICS.md).
"""

from absl import flags

import launch
from colorjax import evaluation

_CHECKPOINTS = flags.DEFINE_multi_string('checkpoint', None, 'training workdir or exported params')
_INPUT = flags.DEFINE_string('input', None, 'a folder of photos or of *.array_record records')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'where metrics.json, report.md go')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'photos are center-cropped/resized to this')
_MAX_IMAGES = flags.DEFINE_integer('max_images', None, 'evaluate the first N images only')
_SPLIT = flags.DEFINE_string('split', 'val', 'the records split (records input only)')
_HINT_POINTS = flags.DEFINE_list(
  'hint_points',
  None,
  'hint counts, e.g. 0,1,2,5,10,20,50,100: each hint-taking checkpoint is also scored with '
  "that many simulated hints per image (ideepcolor's protocol, a fixed seed): the PSNR-vs-hints "
  'curve in metrics.json, report.md and hint_curve.png',
)
_STEP = flags.DEFINE_integer(
  'step', None, 'the training step of a workdir checkpoint (default: the newest that restores)'
)
_DECODING = launch.define_decoding_flags()


def main(argv):
  del argv  # checked by launch.run
  results = evaluation.evaluate(
    _CHECKPOINTS.value,
    _INPUT.value,
    _OUTPUT_DIR.value,
    image_size=_IMAGE_SIZE.value,
    max_images=_MAX_IMAGES.value,
    split=_SPLIT.value,
    hint_points=[int(n) for n in _HINT_POINTS.value or []],
    step=_STEP.value,
    **launch.decoding_values(_DECODING),
  )
  print(evaluation.report_table(results))


def run(argv=None):
  launch.run(main, 'launch.evaluate', required=['checkpoint', 'input', 'output_dir'], argv=argv)


if __name__ == '__main__':
  run()
