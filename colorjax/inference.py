"""Colorizing with a trained network: load -> Colorizer, colorize(colorizer, L), colorize_image."""

import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from colorjax import checkpoint, decoding, fullsize, models, propagation
from colorjax import hints as hints_lib

MODEL_JSON = 'model.json'


@flax.struct.dataclass
class Colorizer:
  """A trained network: its Flax variables `params` ({'params': ...}, a pytree child) with its
  ModelConfig (static). colorize and the predictors take it; `load` returns it."""

  params: Any
  config: models.ModelConfig = flax.struct.field(pytree_node=False)


def colorize(colorizer, L, hints=None, spread_hints=True):
  """Predicts ab for L; pure and jit-able.

  Args:
    colorizer: a Colorizer (the network's params with its ModelConfig, from `load`); its
      config's decoding knobs apply (see colorjax.decoding).
    L: lightness in Lab units [0, 100], shape (H, W), (H, W, 1) or (B, H, W, 1); H and W must
      suit the network (multiples of config.size_multiple).
    hints: None (no hints), or (hint_ab, mask) at L's size: ab in Lab units (..., H, W, 2), zero
      where no hint is given, and mask (..., H, W, 1) in {0, 1}, 1 on hinted pixels. Only a
      hint-taking model (config.hints) accepts them.
    spread_hints: with hints, carry each hint's color to the pixels alike
      (colorjax.propagation.spread; hinted pixels take their hint). False: the network's own
      answer to the hints (static under jit).

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
  if hints is not None:
    hint_ab, mask = (jnp.asarray(h, jnp.float32) for h in hints)
    if squeeze:
      hint_ab, mask = hint_ab[None], mask.reshape((1,) + L_BxHxWx1.shape[1:])
    hints = (hint_ab, mask)
  multiple = colorizer.config.size_multiple
  if L_BxHxWx1.shape[1] % multiple or L_BxHxWx1.shape[2] % multiple:
    raise ValueError(
      f'the {colorizer.config.name!r} network cannot take a {L.shape} input; use a size '
      f'divisible by {multiple}'
    )
  output = models.create_model(colorizer.config).apply(colorizer.params, L_BxHxWx1, hints)
  ab_BxHxWx2 = decoding.decode(colorizer.config, output)
  if hints is not None and spread_hints:
    ab_BxHxWx2 = propagation.spread(L_BxHxWx1, ab_BxHxWx2, *hints)
  return ab_BxHxWx2[0] if squeeze else ab_BxHxWx2


_colorize_jit = jax.jit(colorize, static_argnames='spread_hints')


# ---------------------------------------------------------------------------------------------
# Checkpoints: a training workdir (latest step) or an exported params-only directory.


def _float32(tree):
  return jax.tree.map(
    lambda x: np.asarray(x, np.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


PRETRAINED = 'pretrained'


def pretrained_path():
  """The folder of the model shipped inside the package (colorjax/weights/pretrained)."""
  return pathlib.Path(__file__).resolve().parent / 'weights' / PRETRAINED


def resolve(path):
  """A checkpoint argument as a path: 'pretrained' names the shipped model."""
  if str(path) == PRETRAINED:
    shipped = pretrained_path()
    if not (shipped / MODEL_JSON).is_file():
      raise FileNotFoundError(f'this installation has no shipped model ({shipped} is missing)')
    return shipped
  return pathlib.Path(path)


def load(path, step=None):
  """Reads a training workdir or an exported params-only checkpoint into a Colorizer.

  Args:
    path: 'pretrained' (the model shipped in the package, read with no network access), or a
      directory holding model.json and either checkpoints/ (training: the newest checkpoint
      that restores, or the given step) or params/ (written by `export`).
    step: the training step to read (default: the latest); not used for exported params.

  Returns:
    A Colorizer with float32 params, ready for colorize / jax.jit(colorize).
  """
  path = resolve(path).resolve()
  if not (path / MODEL_JSON).is_file():
    raise FileNotFoundError(f'{path} has no {MODEL_JSON}: not a training workdir or an export')
  config = models.ModelConfig.from_json((path / MODEL_JSON).read_text(), path / MODEL_JSON)
  if (path / 'params').is_dir():
    params = ocp.StandardCheckpointer().restore(path / 'params')
  elif (path / checkpoint.CHECKPOINT_DIR).is_dir():
    params = checkpoint.restore_params(path, step)
  else:
    raise FileNotFoundError(f'{path} has neither {checkpoint.CHECKPOINT_DIR}/ nor params/')
  check_params(config, params, path)
  return Colorizer(params=_float32(params), config=config)


def check_params(config, params, source):
  """Raises ValueError (one line) when params are not those of config's network."""
  size = config.size_multiple * 2
  L = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
  want = jax.eval_shape(lambda x: models.create_model(config).init(jax.random.key(0), x), L)
  flat = lambda tree: {
    jax.tree_util.keystr(k): tuple(np.shape(v))
    for k, v in jax.tree_util.tree_leaves_with_path(tree)
  }
  want, got = flat(want), flat(params)
  if want != got:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shaped = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    detail = (
      f'missing {missing[:2]}' if missing else f'unexpected {extra[:2]}' if extra
      else f'{shaped[0]} is {got[shaped[0]]}, the config needs {want[shaped[0]]}'
    )  # fmt: skip
    raise ValueError(f'the model.json in {source} does not describe its params ({detail})')


EXPORT_FORMATS = ('params', 'onnx')
ONNX_PRECISIONS = ('fp32', 'int8')


# An export folder may carry its network as ONNX beside params/ (export(with_onnx=True)): the
# [cpu] extra then runs it without jax2onnx. Exported at chroma gain 1 (colorize_files stretches
# by the config's gain afterwards, so the studio's vividness control needs no new export).
BUNDLED_ONNX = 'model.onnx'


def export(source, output, *, fmt='params', dtype='float32', step=None, image_size=None,
           precision='fp32', calibration_dir=None, with_onnx=False):  # fmt: skip
  """Writes a checkpoint for shipping; returns the bytes written.

  Args:
    source: a training workdir or exported params (see load).
    output: 'params': a new directory with model.json and params/ (an Orbax StandardCheckpointer
      save, float32 or bfloat16) that load reads; 'onnx': a .onnx file (colorjax.onnx_export)
      that launch.colorize --checkpoint=FILE runs.
    fmt: 'params' or 'onnx'.
    dtype: 'float32' or 'bfloat16' (params only: halves the size; load casts back to float32).
    step: the training step to export (default: the newest that restores).
    image_size: ONNX only: the exported input size (default: the training size; the networks
      are fully convolutional).
    precision: ONNX only: 'fp32', or 'int8' (quantized once here, calibrated on the photos of
      calibration_dir or on cpu_runtime's fixed set, and stored: every run then colors alike).
    calibration_dir: int8 only: a folder of photos to calibrate on.
    with_onnx: params only: also write the network as ONNX (fp32, the training size, decoding
      at chroma gain 1) into the folder as BUNDLED_ONNX, which the CPU runtimes run directly.
  """
  if fmt not in EXPORT_FORMATS:
    raise ValueError(f'format must be one of {EXPORT_FORMATS}, got {fmt!r}')
  if dtype not in ('float32', 'bfloat16'):
    raise ValueError(f'dtype must be float32 or bfloat16, got {dtype!r}')
  if precision not in ONNX_PRECISIONS:
    raise ValueError(f'precision must be one of {ONNX_PRECISIONS}, got {precision!r}')
  if fmt == 'onnx' and dtype != 'float32':
    raise ValueError('ONNX exports are float32 or int8 (--precision); --dtype is for params')
  if fmt == 'params' and (image_size or precision != 'fp32' or calibration_dir):
    raise ValueError('image_size, precision and calibration are for ONNX exports')
  if fmt == 'onnx' and with_onnx:
    raise ValueError('with_onnx bundles an ONNX file into a params export; --format=onnx is one')
  output = pathlib.Path(output).resolve()
  if output.exists():
    raise FileExistsError(f'{output} exists; choose a new path')
  colorizer = load(source, step=step)
  if fmt == 'onnx':
    return _export_onnx(colorizer, output, image_size, precision, calibration_dir)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.dtype(dtype)), colorizer.params)
  output.mkdir(parents=True)
  (output / MODEL_JSON).write_text(colorizer.config.to_json())
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(output / 'params', params)
  if with_onnx:
    from colorjax import decoding, onnx_export  # pylint: disable=g-import-not-at-top

    gain_one = colorizer
    if colorizer.config.loss == 'classification':
      gain_one = decoding.with_decoding(colorizer, chroma_gain=1.0)
    onnx_export.export_onnx(
      gain_one.config, gain_one.params['params'], output / BUNDLED_ONNX, colorizer.config.image_size
    )
  return sum(f.stat().st_size for f in output.rglob('*') if f.is_file())


def _export_onnx(colorizer, output, image_size, precision, calibration_dir):
  import tempfile  # pylint: disable=g-import-not-at-top

  from colorjax import cpu_runtime, onnx_export  # pylint: disable=g-import-not-at-top

  size = image_size or colorizer.config.image_size
  with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
    fp32 = onnx_export.export_onnx(
      colorizer.config, colorizer.params['params'], pathlib.Path(tmp) / 'fp32.onnx', size
    )
    if precision == 'int8':
      calibration = None
      if calibration_dir is not None:
        calibration = _calibration_photos(colorizer, calibration_dir, size)
      fp32 = cpu_runtime.quantize_int8(fp32, pathlib.Path(tmp) / 'int8.onnx', calibration)
    fp32.replace(output)
  return output.stat().st_size


def _calibration_photos(colorizer, folder, size, max_images=64):
  """A folder's photos (the first max_images readable ones, sorted) as int8 calibration inputs."""
  from colorjax import cpu_runtime  # pylint: disable=g-import-not-at-top

  photos = []
  for path in sorted(p for p in pathlib.Path(folder).iterdir() if p.is_file()):
    try:
      image = fullsize.read_image(path)
    except ValueError:
      continue
    photos.append(np.stack([image] * 3, -1) if image.ndim == 2 else image)
    if len(photos) == max_images:
      break
  if not photos:
    raise ValueError(f'no readable photos in {folder} to calibrate on')
  return cpu_runtime.calibration_inputs(size, colorizer.config.hints, photos)


def batch_predictor(colorizer, batch_size=8, spread_hints=True):
  """A function (L (N, S, S), hints=None) -> ab (N, S, S, 2) NumPy running the jitted network on
  batches of exactly batch_size (the last one padded), so any N compiles once; hints as
  colorize takes them, (hint ab (N, S, S, 2), mask (N, S, S, 1)), spread as it says."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')

  def pad(x, n):
    out = np.zeros((batch_size,) + x.shape[1:], np.float32)
    out[:n] = x
    return out

  def predict(L_NxSxS, hints=None):
    L_NxSxS = np.asarray(L_NxSxS, np.float32)
    out = []
    for start in range(0, len(L_NxSxS), batch_size):
      chunk = L_NxSxS[start : start + batch_size]
      n = len(chunk)
      given = None
      if hints is not None:
        given = tuple(pad(np.asarray(h[start : start + batch_size]), n) for h in hints)
      ab = _colorize_jit(colorizer, pad(chunk, n)[..., None], given, spread_hints)
      out.append(np.asarray(ab)[:n])
    if not out:
      return np.zeros(L_NxSxS.shape + (2,), np.float32)
    return np.concatenate(out)

  return predict


def photo_hints(colorizer, image_u8, photo_hint_list):
  """Hints in a photo's pixel coordinates (colorjax.hints.Hint) -> (hint ab, mask) at the
  network's size; None for no hints."""
  if not photo_hint_list:
    return None
  if not colorizer.config.hints:
    raise ValueError('this model was trained without hints; it takes none')
  size = colorizer.config.image_size
  return hints_lib.rasterize(photo_hint_list, image_u8.shape[0], image_u8.shape[1], size)


def colorize_images(colorizer, images, *, hints=None, predict=None):
  """Colorizes several photos of any sizes with one network call; returns RGB uint8 arrays.

  Args:
    colorizer: a Colorizer; its config.image_size is the size the network sees.
    images: a list of paths, PIL images or arrays (gray or RGB, 8 or 16 bits), of any sizes.
    hints: None, or one list of colorjax.hints.Hint (photo pixel coordinates) per image (None or
      [] for none); a hint-taking model only.
    predict: optional (L (B, S, S), hints) -> ab (B, S, S, 2) function (another runtime);
      default: JAX.

  Returns:
    A list of RGB uint8 arrays, each the size of its input, with the input's L.
  """
  images = [fullsize.read_image(im) for im in images]
  if not images:
    return []
  per_image = hints or [None] * len(images)
  if len(per_image) != len(images):
    raise ValueError(f'{len(per_image)} hint lists for {len(images)} images')
  rasters = [photo_hints(colorizer, im, h) for im, h in zip(images, per_image)]
  given = None
  if any(r is not None for r in rasters):
    size = colorizer.config.image_size
    empty = (np.zeros((size, size, 2), np.float32), np.zeros((size, size, 1), np.float32))
    rasters = [empty if r is None else r for r in rasters]
    given = (np.stack([r[0] for r in rasters]), np.stack([r[1] for r in rasters]))
  predict = predict or batch_predictor(colorizer, len(images))
  size = colorizer.config.image_size
  ab = predict(np.stack([fullsize.model_input(im, size) for im in images]), given)
  return [fullsize.join(im, ab_i) for im, ab_i in zip(images, ab)]


def colorize_image(colorizer, image, hints=None):
  """Colorizes one photo of any size (see colorize_images); returns RGB uint8 (H, W, 3).

  The network sees the photo squashed to config.image_size x config.image_size (antialiased);
  its ab is upsampled bilinearly to the photo's size and joined to the photo's own L, so every
  detail and the exact lightness stay. Chroma outside sRGB is reduced, keeping L and hue.
  hints: colorjax.hints.Hint points in the photo's pixel coordinates (a hint-taking model).
  """
  return colorize_images(colorizer, [image], hints=None if hints is None else [hints])[0]
