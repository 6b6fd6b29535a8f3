"""Colorizing with a trained network: load -> Colorizer, colorize(colorizer, L), colorize_image."""

import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from colorjax import checkpoint, decoding, fullsize, models

MODEL_JSON = 'model.json'


@flax.struct.dataclass
class Colorizer:
  """A trained network: its Flax variables `params` ({'params': ...}, a pytree child) with its
  ModelConfig (static). colorize and the predictors take it; `load` returns it."""

  params: Any
  config: models.ModelConfig = flax.struct.field(pytree_node=False)


def colorize(colorizer, L):
  """Predicts ab for L; pure and jit-able.

  Args:
    colorizer: a Colorizer (the network's params with its ModelConfig, from `load`); its
      config's decoding knobs apply (see colorjax.decoding).
    L: lightness in Lab units [0, 100], shape (H, W), (H, W, 1) or (B, H, W, 1); H and W must
      suit the network (multiples of 8).

  Returns:
    ab in Lab units, shape (H, W, 2) or (B, H, W, 2) following L.
  """
  if not isinstance(colorizer, Colorizer):
    raise TypeError(f'colorize takes a Colorizer (from colorjax.load), got {type(colorizer)}')
  L = jnp.asarray(L, jnp.float32)
  if L.ndim == 2:
    L_BxHxWx1, squeeze = L[None, :, :, None], True
  elif L.ndim == 3 and L.shape[-1] == 1:
    L_BxHxWx1, squeeze = L[None], True
  elif L.ndim == 4 and L.shape[-1] == 1:
    L_BxHxWx1, squeeze = L, False
  else:
    raise ValueError(f'L must have shape (H, W), (H, W, 1) or (B, H, W, 1), got {L.shape}')
  output = models.create_model(colorizer.config).apply(colorizer.params, L_BxHxWx1)
  ab_BxHxWx2 = decoding.decode(colorizer.config, output)
  if ab_BxHxWx2.shape[:3] != L_BxHxWx1.shape[:3]:
    raise ValueError(
      f'the {colorizer.config.name!r} network cannot take a {L.shape} input '
      f'(it returned {ab_BxHxWx2.shape}); use a size divisible by 8'
    )
  return ab_BxHxWx2[0] if squeeze else ab_BxHxWx2


_colorize_jit = jax.jit(colorize)


# ---------------------------------------------------------------------------------------------
# Checkpoints: a training workdir (latest step) or an exported params-only directory.


def _float32(tree):
  return jax.tree.map(
    lambda x: np.asarray(x, np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


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
  elif (path / checkpoint.CHECKPOINT_DIR).is_dir():
    params = checkpoint.restore_params(path, step)
  else:
    raise FileNotFoundError(f'{path} has neither {checkpoint.CHECKPOINT_DIR}/ nor params/')
  return Colorizer(params=_float32(params), config=config)


EXPORT_FORMATS = ('params', 'onnx')


def export(source, output, *, fmt='params', dtype='float32', step=None):
  """Writes a checkpoint for shipping; returns the bytes written.

  Args:
    source: a training workdir or exported params (see load).
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
  colorizer = load(source, step=step)
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


def batch_predictor(colorizer, batch_size=8):
  """A function L (N, S, S) float32 -> ab (N, S, S, 2) NumPy running the jitted network on
  batches of exactly batch_size (the last one padded), so any N compiles once."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')

  def predict(L_NxSxS):
    L_NxSxS = np.asarray(L_NxSxS, np.float32)
    out = []
    for start in range(0, len(L_NxSxS), batch_size):
      chunk = L_NxSxS[start : start + batch_size]
      padded = np.zeros((batch_size,) + L_NxSxS.shape[1:], np.float32)
      padded[: len(chunk)] = chunk
      out.append(np.asarray(_colorize_jit(colorizer, padded[..., None]))[: len(chunk)])
    if not out:
      return np.zeros(L_NxSxS.shape + (2,), np.float32)
    return np.concatenate(out)

  return predict


def colorize_images(colorizer, images, *, predict=None):
  """Colorizes several photos of any sizes with one network call; returns RGB uint8 arrays.

  Args:
    colorizer: a Colorizer; its config.image_size is the size the network sees.
    images: a list of paths, PIL images or uint8 arrays (gray or RGB), of any sizes.
    predict: optional L (B, S, S) -> ab (B, S, S, 2) function (another runtime); default: JAX.

  Returns:
    A list of RGB uint8 arrays, each the size of its input, with the input's L.
  """
  images = [fullsize.read_image(im) for im in images]
  if not images:
    return []
  predict = predict or batch_predictor(colorizer, len(images))
  size = colorizer.config.image_size
  ab = predict(np.stack([fullsize.model_input(im, size) for im in images]))
  return [fullsize.join(im, ab_i) for im, ab_i in zip(images, ab)]


def colorize_image(colorizer, image):
  """Colorizes one photo of any size (see colorize_images); returns RGB uint8 (H, W, 3).

  The network sees the photo squashed to config.image_size x config.image_size (antialiased);
  its ab is upsampled bilinearly to the photo's size and joined to the photo's own L, so every
  detail and the exact lightness stay. Chroma outside sRGB is reduced, keeping L and hue.
  """
  return colorize_images(colorizer, [image])[0]
