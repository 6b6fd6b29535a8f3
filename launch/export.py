"""Exports a checkpoint for shipping: python -m launch.export --checkpoint=DIR --output=PATH.

--format=params writes PATH/model.json + PATH/params/ (Orbax; --dtype=bfloat16 halves it), which
colorjax.load reads; --with_onnx also puts the network as ONNX inside (as the shipped model has
it), for the CPU runtimes without jax2onnx. --format=onnx writes an ONNX file that
launch.colorize --checkpoint=FILE runs with the CPU runtimes (the [cpu] extra; exporting needs
the [onnx] extra), at --image_size (default: the training size) and in fp32 or, with
--precision=int8, quantized once here on a fixed set of photos (or those of --calibration_dir),
so that every run colors a photo alike.
"""

from absl import flags

import launch
from colorjax import inference

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'training workdir or exported params')
_OUTPUT = flags.DEFINE_string('output', None, 'a new directory (params) or .onnx file (onnx)')
_FORMAT = flags.DEFINE_enum('format', 'params', inference.EXPORT_FORMATS, 'what to write')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'params dtype on disk')
_STEP = flags.DEFINE_integer(
  'step', None, 'training step to export (default: the newest that restores)'
)
_IMAGE_SIZE = flags.DEFINE_integer(
  'image_size', None, "onnx: the exported input size (default: the model's training size)"
)
_PRECISION = flags.DEFINE_enum(
  'precision', 'fp32', inference.ONNX_PRECISIONS, 'onnx: fp32, or int8 quantized at export'
)
_WITH_ONNX = flags.DEFINE_bool(
  'with_onnx',
  False,
  'params: also put the network as ONNX in the folder, so the [cpu] extra runs it without jax2onnx',
)
_CALIBRATION_DIR = flags.DEFINE_string(
  'calibration_dir', None, 'onnx int8: photos to calibrate on (default: a fixed bundled set)'
)


def main(argv):
  del argv  # checked by launch.run
  size = inference.export(
    _CHECKPOINT.value,
    _OUTPUT.value,
    fmt=_FORMAT.value,
    dtype=_DTYPE.value,
    step=_STEP.value,
    image_size=_IMAGE_SIZE.value,
    precision=_PRECISION.value,
    calibration_dir=_CALIBRATION_DIR.value,
    with_onnx=_WITH_ONNX.value,
  )
  print(f'wrote {_OUTPUT.value} ({size / 2**20:.1f} MiB)')


def run(argv=None):
  launch.run(main, 'launch.export', required=['checkpoint', 'output'], argv=argv)


if __name__ == '__main__':
  run()
