"""Colorizes photos: python -m launch.colorize --input=FILES --output_dir=OUT [--checkpoint=DIR].

The shipped model unless --checkpoint names another. Outputs keep each input's name (with the
new extension) and size; --compare also writes an Original | Grayscale | Model strip per photo
under OUT/compare/. Existing outputs are kept unless
--overwrite; an output that would replace an input photo is refused. --hints gives color points
to a hint-taking model. Exit code: 0 every image colorized (or kept), 1 some failed (named in the
log; the rest are written), 2 nothing colorized or bad arguments (one line says why).
"""

import sys

from absl import flags

import launch
from colorjax import colorize_files

_CHECKPOINT = flags.DEFINE_string(
  'checkpoint',
  'pretrained',
  "a training workdir, exported params, an exported .onnx file, or 'pretrained' (the default: "
  'the model shipped in the package, docs/model_card.md)',
)
_INPUT = flags.DEFINE_string('input', None, 'an image file, a folder of images, or a glob')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'where the colorized images go')
_COMPARE = flags.DEFINE_bool('compare', False, 'also write Original | Grayscale | Model strips')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'photos per network call', lower_bound=1)
_FORMAT = flags.DEFINE_enum('format', 'png', colorize_files.FORMATS, 'output file format')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'replace existing outputs')
_BACKEND = flags.DEFINE_enum(
  'backend',
  'auto',
  colorize_files.BACKENDS,
  "jax, or an ONNX CPU runtime (the [cpu] extra: pip install 'colorjax[cpu]'); auto: openvino "
  'on a CPU-only machine with the [cpu] extra, else jax',
)
_PRECISION = flags.DEFINE_enum(
  'precision',
  'auto',
  colorize_files.PRECISIONS,
  'fp32; bf16; int8 (ONNX backends, calibrated on a fixed set of photos); auto: for openvino int8 '
  '(seed network) or bf16 (U-Net), the fastest within 0.2 dB and 2% colorfulness of fp32; else '
  'fp32',
)
_HINTS = flags.DEFINE_string(
  'hints',
  None,
  'color hints for a hint-taking model: a JSON file for a single input photo, or "sidecar": '
  'NAME.hints.json beside each input, where one exists (schema: colorjax/hints.py)',
)
_STEP = flags.DEFINE_integer(
  'step', None, 'the training step of a workdir checkpoint (default: the newest that restores)'
)
_DECODING = launch.define_decoding_flags()


def main(argv):
  del argv  # checked by launch.run
  if _CHECKPOINT.value == 'pretrained':
    print('colorizing with the shipped model (docs/model_card.md); --checkpoint=DIR for another')
  result = colorize_files.colorize_files(
    _CHECKPOINT.value,
    _INPUT.value,
    _OUTPUT_DIR.value,
    batch_size=_BATCH_SIZE.value,
    compare=_COMPARE.value,
    fmt=_FORMAT.value,
    overwrite=_OVERWRITE.value,
    backend=_BACKEND.value,
    precision=_PRECISION.value,
    hints=_HINTS.value,
    step=_STEP.value,
    **launch.decoding_values(_DECODING),
  )
  written, kept, failed = len(result['written']), len(result['kept']), len(result['failed'])
  print(f'{written} written, {kept} kept (already there), {failed} failed -> {_OUTPUT_DIR.value}')
  if result['backend']:
    print(f'colorized with {result["backend"]}')
  for path, reason in result['failed'].items():
    print(f'FAILED {path}: {reason}', file=sys.stderr)
  if failed:
    return 1
  if not written:
    print(
      'launch.colorize: nothing was colorized: every output exists (--overwrite replaces them)',
      file=sys.stderr,
    )
    return 2
  return 0


def run(argv=None):
  launch.run(main, 'launch.colorize', required=['input', 'output_dir'], argv=argv)


if __name__ == '__main__':
  run()
