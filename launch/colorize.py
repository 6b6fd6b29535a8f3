"""Colorizes photos: python -m launch.colorize --checkpoint=DIR --input=FILES --output_dir=OUT.

Outputs keep each input's name (with the new extension) and size; --compare also writes an
Original | Grayscale | Model strip per photo under OUT/compare/. Existing outputs are kept unless
--overwrite. Exit code: 0 every image colorized (or kept), 1 some failed (named in the log; the
rest are written), 2 nothing to do or bad arguments.
"""

import sys

from absl import app, flags, logging

import launch
from colorjax import colorize_files

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'training workdir or exported params')
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
  'jax, or an ONNX CPU runtime (pip install colorjax[cpu]); auto: openvino on a CPU-only '
  'machine with the [cpu] extra, else jax',
)
_PRECISION = flags.DEFINE_enum(
  'precision',
  'auto',
  colorize_files.PRECISIONS,
  'fp32; bf16; int8 (ONNX backends, calibrated on the first batch); auto: for openvino int8 '
  '(seed network) or bf16 (U-Net), the fastest within 0.2 dB and 2% colorfulness of fp32; else '
  'fp32',
)
_DECODING = launch.define_decoding_flags()


def parse_flags(argv):
  """absl's parsing, but a bad or missing flag exits with 2 (bad arguments), as documented."""
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    print(f'{e}\nTry --helpfull.', file=sys.stderr)
    sys.exit(2)
  missing = [f for f in ('checkpoint', 'input', 'output_dir') if flags.FLAGS[f].value is None]
  if len(argv) > 1 or missing:
    print(f'unexpected arguments {argv[1:]} or missing flags {missing}', file=sys.stderr)
    sys.exit(2)
  return argv


def main(argv):
  del argv  # checked by parse_flags
  launch.quiet_library_logs()
  try:
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
      **launch.decoding_values(_DECODING),
    )
  except (ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    return 2
  written, kept, failed = len(result['written']), len(result['kept']), len(result['failed'])
  print(f'{written} written, {kept} kept (already there), {failed} failed -> {_OUTPUT_DIR.value}')
  if result['backend']:
    print(f'colorized with {result["backend"]}')
  for path, reason in result['failed'].items():
    print(f'FAILED {path}: {reason}', file=sys.stderr)
  if failed:
    return 1
  return 0 if written or kept else 2


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
