"""Exports a checkpoint for shipping: python -m launch.export --checkpoint=DIR --output=PATH.

--format=params writes PATH/model.json + PATH/params/ (Orbax; --dtype=bfloat16 halves it), which
colorjax.load reads; --format=onnx writes an ONNX file for the CPU runtimes of launch.colorize
(--backend=onnxruntime|openvino; needs the [cpu] extra).
"""

from absl import app, flags

import launch
from colorjax import inference

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'training workdir or exported params')
_OUTPUT = flags.DEFINE_string('output', None, 'a new directory (params) or .onnx file (onnx)')
_FORMAT = flags.DEFINE_enum('format', 'params', inference.EXPORT_FORMATS, 'what to write')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'params dtype on disk')
_STEP = flags.DEFINE_integer('step', None, 'training step to export (default: the latest)')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  launch.quiet_library_logs()
  size = inference.export(
    _CHECKPOINT.value, _OUTPUT.value, fmt=_FORMAT.value, dtype=_DTYPE.value, step=_STEP.value
  )
  print(f'wrote {_OUTPUT.value} ({size / 2**20:.1f} MiB)')


if __name__ == '__main__':
  flags.mark_flags_as_required(['checkpoint', 'output'])
  app.run(main)
