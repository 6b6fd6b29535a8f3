"""Colorizes image files in batches (the library half of launch/colorize.py)."""

import dataclasses
import glob
import importlib.util
import logging
import pathlib
import tempfile

import numpy as np
import tqdm
from PIL import Image

from colorjax import decoding, fullsize, inference, visualize

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')
FORMATS = ('png', 'jpg')
BACKENDS = ('auto', 'jax', 'onnxruntime', 'openvino')
PRECISIONS = ('auto', 'fp32', 'bf16', 'int8')
# What 'auto' picks on a CPU-only JAX: OpenVINO at the fastest precision within 0.2 dB PSNR and 2%
# colorfulness of float32 for the architecture (docs/benchmarks.md, cpu_runtime; the U-Net's int8
# loses more colorfulness than that).
CPU_DEFAULT_BACKEND = 'openvino'
CPU_DEFAULT_PRECISION = {'seed': 'int8', 'unet': 'bf16'}
_CPU_MODULES = ('jax2onnx', 'onnx', 'onnxruntime', 'openvino')  # the [cpu] extra
COMPARE_DIR = 'compare'
_COMPARE_HEIGHT = 384  # tile height of the --compare strips


def find_inputs(spec):
  """A file, a folder (its image files, sorted) or a glob pattern -> a sorted list of files."""
  path = pathlib.Path(spec)
  if path.is_file():
    return [path]
  if path.is_dir():
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  return sorted(pathlib.Path(p) for p in glob.glob(str(spec)) if pathlib.Path(p).is_file())


def cpu_runtime_available():
  """Whether JAX runs on the CPU only and the [cpu] extra (ONNX export and runtimes) is there."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.default_backend() != 'cpu':
    return False
  return all(importlib.util.find_spec(name) is not None for name in _CPU_MODULES)


def resolve_backend(backend, precision, model_name='seed'):
  """Turns 'auto' into a concrete (backend, precision).

  backend 'auto': CPU_DEFAULT_BACKEND when cpu_runtime_available(), else 'jax'. precision
  'auto': for OpenVINO, CPU_DEFAULT_PRECISION of the model's architecture (within the quality
  limits, fastest), fp32 for the others.
  """
  if backend not in BACKENDS:
    raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
  if backend == 'auto':
    backend = CPU_DEFAULT_BACKEND if cpu_runtime_available() else 'jax'
  if precision == 'auto':
    precision = CPU_DEFAULT_PRECISION[model_name] if backend == CPU_DEFAULT_BACKEND else 'fp32'
  return backend, precision


def _jax_predictor(colorizer, precision, batch_size):
  """L (B, S, S) -> ab (B, S, S, 2) with JAX, padded to batch_size (one compile)."""
  if precision == 'int8':
    raise ValueError("precision='int8' needs an ONNX backend (onnxruntime or openvino)")
  if precision == 'bf16':
    colorizer = colorizer.replace(config=dataclasses.replace(colorizer.config, dtype='bfloat16'))
  return inference.batch_predictor(colorizer, batch_size)


def _onnx_predictor(colorizer, backend, precision, calibration_L, onnx_path):
  """L (B, S, S) -> ab (B, S, S, 2) with an ONNX CPU runtime (exported once per run)."""
  from colorjax import cpu_runtime, onnx_export  # pylint: disable=g-import-not-at-top

  onnx_path = onnx_export.export_onnx(
    colorizer.config,
    colorizer.params['params'],
    onnx_path,
    image_size=colorizer.config.image_size,
  )
  calibration = None if precision != 'int8' else calibration_L[..., None]
  run = cpu_runtime.cpu_runtime(onnx_path, backend, precision, calibration_L=calibration)
  return lambda L_BxSxS: run(np.asarray(L_BxSxS, np.float32)[..., None])


def make_predictor(colorizer, backend, precision, batch_size, calibration_L, tmp_dir):
  """(predict function, 'backend precision') resolved; 'auto' falls back to JAX if export fails."""
  auto = backend == 'auto'
  backend, precision = resolve_backend(backend, precision, colorizer.config.name)
  if backend != 'jax':
    try:
      predict = _onnx_predictor(
        colorizer, backend, precision, calibration_L, pathlib.Path(tmp_dir) / 'model.onnx'
      )
      logging.info('colorizing with %s %s', backend, precision)
      return predict, f'{backend} {precision}'
    except Exception as e:  # pylint: disable=broad-except  (any export or runtime failure)
      if not auto:
        raise
      logging.warning('ONNX export or %s failed (%s: %s); using JAX', backend, type(e).__name__, e)
      backend, precision = 'jax', 'fp32'
  logging.info('colorizing with jax %s', precision)
  return _jax_predictor(colorizer, precision, batch_size), f'jax {precision}'


def _compare_strip(image, colorized):
  """Original | Grayscale | Model at one tile height (a gray photo's original is itself)."""
  height = min(_COMPARE_HEIGHT, image.shape[0])
  width = max(1, round(image.shape[1] * height / image.shape[0]))
  small = lambda im: np.asarray(Image.fromarray(im).resize((width, height), Image.LANCZOS))
  original = small(image)
  gray = visualize.gray_uint8(fullsize.lightness(original))
  return visualize.comparison_grid(
    [[original, gray, small(colorized)]], ['Original', 'Grayscale', 'Model']
  )


def _save(path, image, fmt):
  tmp = path.with_name(path.name + '.tmp')
  Image.fromarray(image).save(tmp, format='PNG' if fmt == 'png' else 'JPEG', quality=95)
  tmp.replace(path)  # no half-written output if interrupted


def colorize_files(
  checkpoint,
  inputs,
  output_dir,
  *,
  batch_size=8,
  compare=False,
  fmt='png',
  overwrite=False,
  backend='auto',
  precision='auto',
  temperature=None,
  prior_correction=None,
  chroma_gain=None,
):
  """Colorizes every image of `inputs` into output_dir, keeping names (new extension) and sizes.

  Args:
    checkpoint: a training workdir or exported params (see inference.load).
    inputs: a file, folder or glob pattern (see find_inputs).
    output_dir: where OUT/NAME.fmt (and with compare, OUT/compare/NAME.fmt) are written.
    batch_size: photos per network call.
    compare: also write an Original | Grayscale | Model strip per photo.
    fmt: 'png' or 'jpg'.
    overwrite: replace existing outputs (default: keep them and skip their inputs).
    backend: 'jax', an ONNX CPU runtime ('onnxruntime', 'openvino'; needs the [cpu] extra), or
      'auto' (see resolve_backend: OpenVINO on a CPU-only machine with the extra, else JAX; JAX
      also if the ONNX export fails, with a warning).
    precision: 'fp32', 'bf16', 'int8' (ONNX backends only; calibrated on the network inputs of
      the first batch) or 'auto' (for OpenVINO CPU_DEFAULT_PRECISION of the architecture: int8
      for the seed network, bf16 for the U-Net; fp32 otherwise).
    temperature, prior_correction, chroma_gain: a classification model's decoding (see
      colorjax.decoding); None keeps the model config's.

  Returns:
    {'written': [output paths], 'kept': [inputs whose output existed], 'failed': {input: reason},
    'backend': 'BACKEND PRECISION' used (None if nothing was colorized)}.
  """
  if fmt not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
  resolve_backend(backend, precision)  # bad names fail before any work
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  output_dir = pathlib.Path(output_dir)
  result = {'written': [], 'kept': [], 'failed': {}, 'backend': None}
  todo, targets = [], {}
  for path in find_inputs(inputs):
    target = output_dir / f'{path.stem}.{fmt}'
    if target in targets:
      result['failed'][str(path)] = f'same output name as {targets[target]}'
    elif target.exists() and not overwrite:
      result['kept'].append(str(path))
    else:
      targets[target] = path
      todo.append((path, target))
  for path, reason in result['failed'].items():
    logging.error('skipping %s: %s', path, reason)
  if not todo:
    return result
  colorizer = inference.load(checkpoint)
  colorizer = decoding.with_decoding(
    colorizer, temperature=temperature, prior_correction=prior_correction, chroma_gain=chroma_gain
  )
  (output_dir / COMPARE_DIR if compare else output_dir).mkdir(parents=True, exist_ok=True)
  predict = None
  with tempfile.TemporaryDirectory() as tmp, tqdm.tqdm(total=len(todo), unit='image') as bar:
    for start in range(0, len(todo), batch_size):
      batch = []
      for path, target in todo[start : start + batch_size]:
        try:
          batch.append((path, target, fullsize.read_image(path)))
        except Exception as e:  # pylint: disable=broad-except  (any unreadable file is skipped)
          result['failed'][str(path)] = f'{type(e).__name__}: {e}'
          logging.error('cannot read %s: %s', path, e)
          bar.update(1)
      if not batch:
        continue
      size = colorizer.config.image_size
      if predict is None:
        calibration = np.stack([fullsize.model_input(im, size) for _, _, im in batch])
        predict, result['backend'] = make_predictor(
          colorizer, backend, precision, batch_size, calibration, tmp
        )
      outputs = inference.colorize_images(colorizer, [im for _, _, im in batch], predict=predict)
      for (path, target, image), colorized in zip(batch, outputs):
        try:
          _save(target, colorized, fmt)
          if compare:
            _save(output_dir / COMPARE_DIR / target.name, _compare_strip(image, colorized), fmt)
          result['written'].append(str(target))
        except OSError as e:
          result['failed'][str(path)] = f'{type(e).__name__}: {e}'
          logging.error('cannot write %s: %s', target, e)
        bar.update(1)
  return result
