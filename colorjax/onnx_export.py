"""Exports a colorizer to ONNX: L (B, H, W, 1) in [0, 100] -> ab (B, H, W, 2) in Lab units."""

import collections.abc
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import models

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


def upsample2_bilinear(x_BxhxwxC):
  """jax.image.resize(..., 'bilinear') by exactly 2 (half-pixel centers, edges clamped), written
  with pad, stack and reshape so that the batch can stay symbolic in an ONNX export."""

  def along(x, axis):
    n = x.shape[axis]
    first, last = (
      jax.lax.slice_in_dim(x, 0, 1, axis=axis),
      jax.lax.slice_in_dim(x, n - 1, n, axis=axis),
    )
    prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
    even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
    shape = list(x.shape)
    shape[axis] = 2 * n
    return jnp.stack([even, odd], axis=axis + 1).reshape(shape)

  return along(along(x_BxhxwxC, 1), 2)


def ab_from_output(config, output, temperature=None):
  """models.decode, with a classification head's x2 bilinear upsampling done by
  upsample2_bilinear (jax.image.resize cannot be exported with a symbolic batch) before the
  chroma stretch, as decode does."""
  if config.loss != 'classification' or config.head_stride == 1:
    return models.decode(config, output, temperature)
  if config.head_stride != 2:
    raise ValueError(f'cannot export head_stride {config.head_stride}; only 1 and 2')
  at_head = dataclasses.replace(config, head_stride=1, chroma_gain=1.0)
  ab_BxHxWx2 = upsample2_bilinear(models.decode(at_head, output, temperature))
  return models.stretch_chroma(ab_BxHxWx2, config.chroma_gain)


def export_onnx(model_config, params, path, image_size=256, temperature=None):
  """Writes an ONNX model with a dynamic batch.

  Args:
    model_config: the models.ModelConfig of `params`; it is exported in float32 whatever its
      dtype (the CPU runtime picks the precision).
    params: the Flax params: the 'params' collection, or the variables dict {'params': ...}
      (as inference.Colorizer holds them).
    path: the .onnx file to write (its folder is created).
    image_size: the fixed height and width of the exported input.
    temperature: a classification model's annealed-mean temperature, fixed in the file (None:
      the config's).

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
    return ab_from_output(config, model.apply({'params': params}, L_BxHxWx1), temperature)

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
