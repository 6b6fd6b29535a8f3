"""Exports a colorizer to ONNX: L (B, H, W, 1) in [0, 100] -> ab (B, H, W, 2) in Lab units."""

import collections.abc
import dataclasses
import pathlib

import jax
import numpy as np

from colorjax import decoding, models

INPUT_NAME = 'L'
HINT_NAMES = ('hint_ab', 'hint_mask')  # the extra inputs of a hint-taking model
OUTPUT_NAME = 'ab'
# The CPU runtimes come with the [cpu] extra. Exporting (jax2onnx) takes the [onnx] extra and a
# second step: jax2onnx 0.17 pins orbax-checkpoint<0.11.37 in its metadata but never imports
# orbax, so it is installed without its dependencies next to the packages it does use.
CPU_INSTALL = "pip install 'colorjax[cpu]'"
EXPORT_INSTALL = "pip install 'colorjax[onnx]' && pip install --no-deps jax2onnx==0.17.1"


def _without_openvino_telemetry():
  """`import openvino` sends a usage event to Google Analytics from a forked process unless its
  telemetry package is absent (then OpenVINO uses its own no-op stub). colorjax runs offline
  photo work and asks no one's consent, so it hides that package from OpenVINO's import (a None
  entry in sys.modules makes the import fail), unless COLORJAX_OPENVINO_TELEMETRY=1 or it was
  already imported."""
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  if os.environ.get('COLORJAX_OPENVINO_TELEMETRY') != '1' and 'openvino' not in sys.modules:
    sys.modules.setdefault('openvino_telemetry', None)
    sys.modules.setdefault('openvino_telemetry.backend', None)


def require(module_name):
  """Imports an optional runtime package or raises ImportError naming the pip command."""
  import importlib  # pylint: disable=g-import-not-at-top

  if module_name == 'openvino':
    _without_openvino_telemetry()
  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    if module_name == 'jax2onnx' or module_name.startswith('jax2onnx.'):
      raise ImportError(
        f'{module_name} is needed to export a model to ONNX: {EXPORT_INSTALL}'
      ) from e
    raise ImportError(
      f'{module_name} is needed for the CPU runtimes; install the [cpu] extra: {CPU_INSTALL}'
    ) from e


def export_onnx(model_config, params, path, image_size=256):
  """Writes an ONNX model with a dynamic batch.

  Args:
    model_config: the models.ModelConfig of `params`; it is exported in float32 whatever its
      dtype (the CPU runtime picks the precision).
    params: the Flax params: the 'params' collection, or the variables dict {'params': ...}
      (as inference.Colorizer holds them).
    path: the .onnx file to write (its folder is created).
    image_size: the fixed height and width of the exported input (any multiple of the model's
      size_multiple: the networks are fully convolutional).

  Returns:
    The path written, as a pathlib.Path. Inputs: L (B, S, S, 1) in [0, 100] and, for a
    hint-taking model, hint_ab (B, S, S, 2) in Lab units and hint_mask (B, S, S, 1); output ab
    (B, S, S, 2) in Lab units. Metadata: the model config and the image size.
  """
  multiple = model_config.size_multiple
  if not isinstance(image_size, int) or image_size < multiple or image_size % multiple:
    raise ValueError(f'image_size must be a positive multiple of {multiple}, got {image_size!r}')
  jax2onnx = require('jax2onnx')
  onnx = require('onnx')
  # lax.conv becomes ONNX Conv, which the runtimes optimize; the matmul form would not.
  config = dataclasses.replace(model_config, dtype='float32', conv='xla')
  model = models.create_model(config)
  if isinstance(params, collections.abc.Mapping) and set(params) == {'params'}:
    params = params['params']
  params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
  shapes = [('B', image_size, image_size, 1)]
  names = [INPUT_NAME]

  if config.hints:
    shapes += [('B', image_size, image_size, 2), ('B', image_size, image_size, 1)]
    names += list(HINT_NAMES)

    def colorize_onnx(L_BxHxWx1, hint_ab, hint_mask):
      out = model.apply({'params': params}, L_BxHxWx1, (hint_ab, hint_mask))
      return decoding.ab_from_output(config, out)

  else:

    def colorize_onnx(L_BxHxWx1):
      return decoding.ab_from_output(config, model.apply({'params': params}, L_BxHxWx1))

  proto = jax2onnx.to_onnx(
    colorize_onnx,
    shapes,
    model_name=f'colorjax_{config.name}',
    input_names=names,
    output_names=[OUTPUT_NAME],
    return_mode='proto',
  )
  set_metadata(proto, model_config, image_size)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  onnx.save(proto, str(path))
  return path


def set_metadata(proto, model_config, image_size, precision='fp32'):
  """Writes the colorjax metadata (model config, image size, stored precision) into a model."""
  meta = {
    'colorjax_model_config': model_config.to_json(),
    'colorjax_image_size': str(image_size),
    'colorjax_precision': precision,
  }
  keep = [e for e in proto.metadata_props if e.key not in meta]
  del proto.metadata_props[:]
  proto.metadata_props.extend(keep)
  for key, value in meta.items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value


def read_metadata(path):
  """(ModelConfig, image size, precision) of a file export_onnx (or quantize) wrote; ValueError
  for an ONNX file without them."""
  onnx = require('onnx')
  proto = onnx.load(str(path), load_external_data=False)
  meta = {e.key: e.value for e in proto.metadata_props}
  if 'colorjax_model_config' not in meta:
    raise ValueError(f'{path} is not a colorjax ONNX export (no colorjax_model_config metadata)')
  config = models.ModelConfig.from_json(meta['colorjax_model_config'])
  return config, int(meta['colorjax_image_size']), meta.get('colorjax_precision', 'fp32')
