"""Exports a colorizer to ONNX: L (B, H, W, 1) in [0, 100] -> ab (B, H, W, 2) in Lab units."""

import collections.abc
import dataclasses
import pathlib

import jax
import numpy as np

from colorjax import decoding, models

INPUT_NAME = 'L'
OUTPUT_NAME = 'ab'
# jax2onnx 0.17 pins orbax-checkpoint<0.11.37 in its metadata but never imports orbax, so it is
# installed without its dependencies next to the packages it does use.
CPU_INSTALL = "pip install 'colorjax[cpu]' && pip install --no-deps jax2onnx==0.17.1"


def require(module_name):
  """Imports an optional runtime package or raises ImportError naming the pip command."""
  import importlib  # pylint: disable=g-import-not-at-top

  try:
    return importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(
      f'{module_name} is needed for ONNX export and CPU inference; install the [cpu] extra: '
      f'{CPU_INSTALL}'
    ) from e


def export_onnx(model_config, params, path, image_size=256):
  """Writes an ONNX model with a dynamic batch.

  Args:
    model_config: the models.ModelConfig of `params`; it is exported in float32 whatever its
      dtype (the CPU runtime picks the precision).
    params: the Flax params: the 'params' collection, or the variables dict {'params': ...}
      (as inference.Colorizer holds them).
    path: the .onnx file to write (its folder is created).
    image_size: the fixed height and width of the exported input.

  Returns:
    The path written, as a pathlib.Path.
  """
  if not isinstance(image_size, int) or image_size < 8 or image_size % 8:
    raise ValueError(f'image_size must be a positive multiple of 8, got {image_size!r}')
  jax2onnx = require('jax2onnx')
  onnx = require('onnx')
  # lax.conv becomes ONNX Conv, which the runtimes optimize; the matmul form would not.
  config = dataclasses.replace(model_config, dtype='float32', conv='xla')
  model = models.create_model(config)
  if isinstance(params, collections.abc.Mapping) and set(params) == {'params'}:
    params = params['params']
  params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)

  def colorize_BxHxWx1(L_BxHxWx1):
    return decoding.ab_from_output(config, model.apply({'params': params}, L_BxHxWx1))

  proto = jax2onnx.to_onnx(
    colorize_BxHxWx1,
    [('B', image_size, image_size, 1)],
    model_name=f'colorjax_{config.name}',
    input_names=[INPUT_NAME],
    output_names=[OUTPUT_NAME],
    return_mode='proto',
  )
  meta = {'colorjax_model_config': model_config.to_json(), 'colorjax_image_size': str(image_size)}
  for key, value in meta.items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  onnx.save(proto, str(path))
  return path
