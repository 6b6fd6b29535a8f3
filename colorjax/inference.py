"""Colorizing with a trained network: load, colorize(params, L), colorize_image(params, photo)."""

import dataclasses
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from colorjax import constants, fullsize, models

MODEL_JSON = 'model.json'


@flax.struct.dataclass
class Colorizer:
  """A network's params (pytree child) with its ModelConfig (static), as colorize takes them."""

  params: Any
  config: models.ModelConfig = flax.struct.field(pytree_node=False)


def colorize(params, L, *, temperature=None):
  """Predicts ab for L; pure and jit-able.

  Args:
    params: a Colorizer (from `load`).
    L: lightness in Lab units [0, 100], shape (H, W), (H, W, 1) or (B, H, W, 1); H and W must
      suit the network (multiples of 8 for the seed model).
    temperature: annealed-mean temperature of a classification model (None: its default);
      regression models take none.

  Returns:
    ab in Lab units, shape (H, W, 2) or (B, H, W, 2) following L.
  """
  if not isinstance(params, Colorizer):
    raise TypeError(f'colorize takes the Colorizer that colorjax.load returns, got {type(params)}')
  L = jnp.asarray(L, jnp.float32)
  if L.ndim == 2:
    L_BxHxWx1, squeeze = L[None, :, :, None], True
  elif L.ndim == 3 and L.shape[-1] == 1:
    L_BxHxWx1, squeeze = L[None], True
  elif L.ndim == 4 and L.shape[-1] == 1:
    L_BxHxWx1, squeeze = L, False
  else:
    raise ValueError(f'L must have shape (H, W), (H, W, 1) or (B, H, W, 1), got {L.shape}')
  output = models.create_model(params.config).apply(params.params, L_BxHxWx1)
  decode = getattr(models, 'decode', None)
  if decode is not None:
    ab_BxHxWx2 = decode(params.config, output, temperature=temperature)
  elif temperature is not None:
    raise ValueError(f'a {params.config.loss!r} model takes no temperature')
  else:
    ab_BxHxWx2 = jnp.clip(output * constants.AB_SCALE, -constants.AB_MAX, constants.AB_MAX)
  if ab_BxHxWx2.shape[:3] != L_BxHxWx1.shape[:3]:
    raise ValueError(
      f'the {params.config.name!r} network cannot take a {L.shape} input '
      f'(it returned {ab_BxHxWx2.shape}); use a size divisible by 8'
    )
  return ab_BxHxWx2[0] if squeeze else ab_BxHxWx2


_colorize_jit = jax.jit(colorize, static_argnames='temperature')


# ---------------------------------------------------------------------------------------------
# Checkpoints: a training workdir (latest step) or an exported params-only directory.


def _float32(tree):
  return jax.tree.map(
    lambda x: np.asarray(x, np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def with_decoding(colorizer, *, temperature=None, prior_correction=None, chroma_gain=None):
  """The colorizer with its classification decoding replaced (None keeps the config's value).

  Decoding is a test-time choice: the network and params are unchanged. Raises ValueError for a
  model without a decoding to set (an 'mse' model) when any value is given, and ModelConfig's
  ValueError for a temperature <= 0, a correction below -1 or a chroma gain <= 0.
  """
  given = (
    ('temperature', temperature),
    ('prior_correction', prior_correction),
    ('chroma_gain', chroma_gain),
  )
  changes = {k: float(v) for k, v in given if v is not None}
  if not changes:
    return colorizer
  if colorizer.config.loss != 'classification':
    raise ValueError(f'a {colorizer.config.loss!r} model takes no {" or ".join(changes)}')
  return colorizer.replace(config=dataclasses.replace(colorizer.config, **changes))


def load(path, step=None):
  """Reads a training workdir or an exported params-only checkpoint into a Colorizer.

  Args:
    path: a directory holding model.json and either checkpoints/ (training: the latest or the
      given step is read) or params/ (written by `export`).
    step: the training step to read (default: the latest); not used for exported params.

  Returns:
    A Colorizer with float32 params, ready for colorize / jax.jit(colorize).
  """
  path = pathlib.Path(path).resolve()
  if not (path / MODEL_JSON).is_file():
    raise FileNotFoundError(f'{path} has no {MODEL_JSON}: not a training workdir or an export')
  config = models.ModelConfig.from_json((path / MODEL_JSON).read_text())
  if (path / 'params').is_dir():
    params = ocp.StandardCheckpointer().restore(path / 'params')
  elif (path / 'checkpoints').is_dir():
    with ocp.CheckpointManager(path / 'checkpoints') as mngr:
      step = mngr.latest_step() if step is None else step
      if step is None:
        raise FileNotFoundError(f'{path / "checkpoints"} holds no checkpoint yet')
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    params = restored['state']['params']
  else:
    raise FileNotFoundError(f'{path} has neither checkpoints/ nor params/')
  return Colorizer(params=_float32(params), config=config)


EXPORT_FORMATS = ('params', 'onnx')


def export(checkpoint, output, *, fmt='params', dtype='float32', step=None):
  """Writes a checkpoint for shipping; returns the bytes written.

  Args:
    checkpoint: a training workdir or exported params (see load).
    output: 'params': a new directory with model.json and params/ (an Orbax StandardCheckpointer
      save, float32 or bfloat16) that load reads; 'onnx': a .onnx file (colorjax.onnx_export,
      input L (B, S, S, 1) at the model's image_size, output ab in Lab units).
    fmt: 'params' or 'onnx'.
    dtype: 'float32' or 'bfloat16' (params only: halves the size; load casts back to float32).
    step: the training step to export (default: the latest).
  """
  if fmt not in EXPORT_FORMATS:
    raise ValueError(f'format must be one of {EXPORT_FORMATS}, got {fmt!r}')
  if dtype not in ('float32', 'bfloat16'):
    raise ValueError(f'dtype must be float32 or bfloat16, got {dtype!r}')
  if fmt == 'onnx' and dtype != 'float32':
    raise ValueError('ONNX exports are float32 (the CPU runtime picks the precision)')
  output = pathlib.Path(output).resolve()
  if output.exists():
    raise FileExistsError(f'{output} exists; choose a new path')
  colorizer = load(checkpoint, step=step)
  if fmt == 'onnx':
    from colorjax import onnx_export  # pylint: disable=g-import-not-at-top  (optional extra)

    path = onnx_export.export_onnx(
      colorizer.config, colorizer.params['params'], output, image_size=colorizer.config.image_size
    )
    return path.stat().st_size
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.dtype(dtype)), colorizer.params)
  output.mkdir(parents=True)
  (output / MODEL_JSON).write_text(colorizer.config.to_json())
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(output / 'params', params)
  return sum(f.stat().st_size for f in output.rglob('*') if f.is_file())


def jax_predictor(params, temperature=None):
  """A function L (B, S, S) float32 -> ab (B, S, S, 2) NumPy running the jitted network."""
  return lambda L_BxSxS: np.asarray(
    _colorize_jit(params, L_BxSxS[..., None], temperature=temperature)
  )


def colorize_images(params, images, *, predict=None, temperature=None):
  """Colorizes several photos of any sizes with one network call; returns RGB uint8 arrays.

  Args:
    params: a Colorizer; its config.image_size is the size the network sees.
    images: a list of paths, PIL images or uint8 arrays (gray or RGB), of any sizes.
    predict: optional L (B, S, S) -> ab (B, S, S, 2) function (another runtime); default: JAX.
    temperature: passed to colorize.

  Returns:
    A list of RGB uint8 arrays, each the size of its input, with the input's L.
  """
  predict = predict or jax_predictor(params, temperature)
  images = [fullsize.read_image(im) for im in images]
  if not images:
    return []
  size = params.config.image_size
  ab = predict(np.stack([fullsize.model_input(im, size) for im in images]))
  return [fullsize.join(im, ab_i) for im, ab_i in zip(images, ab)]


def colorize_image(params, image, *, temperature=None):
  """Colorizes one photo of any size (see colorize_images); returns RGB uint8 (H, W, 3).

  The network sees the photo squashed to config.image_size x config.image_size (antialiased);
  its ab is upsampled bilinearly to the photo's size and joined to the photo's own L, so every
  detail and the exact lightness stay. Chroma outside sRGB is reduced, keeping L and hue.
  """
  return colorize_images(params, [image], temperature=temperature)[0]
