"""Colorizes image files in batches (the library half of launch/colorize.py)."""

import dataclasses
import glob
import logging
import pathlib
import tempfile

import numpy as np
import tqdm
from PIL import Image

from colorjax import inference, visualize

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')
FORMATS = ('png', 'jpg')
BACKENDS = ('jax', 'onnxruntime', 'openvino')
PRECISIONS = ('fp32', 'bf16', 'int8')
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


def _predictor(colorizer, backend, precision, batch_size, calibration_L, tmp_dir, temperature):
  """L (B, S, S) -> ab (B, S, S, 2) for the backend; JAX pads to batch_size (one compile)."""
  if backend == 'jax':
    if precision == 'int8':
      raise ValueError("precision='int8' needs an ONNX backend (onnxruntime or openvino)")
    if precision == 'bf16':
      config = dataclasses.replace(colorizer.config, dtype='bfloat16')
      colorizer = inference.Colorizer(params=colorizer.params, config=config)
    run = inference.jax_predictor(colorizer, temperature)

    def predict(L_BxSxS):
      n = len(L_BxSxS)
      padded = np.zeros((batch_size,) + L_BxSxS.shape[1:], np.float32)
      padded[:n] = L_BxSxS
      return run(padded)[:n]

    return predict
  from colorjax import cpu_runtime, onnx_export  # pylint: disable=g-import-not-at-top

  onnx_path = onnx_export.export_onnx(
    colorizer.config,
    colorizer.params['params'],
    pathlib.Path(tmp_dir) / 'model.onnx',
    image_size=colorizer.config.image_size,
  )
  calibration = None if precision != 'int8' else calibration_L[..., None]
  run = cpu_runtime.cpu_runtime(onnx_path, backend, precision, calibration_L=calibration)
  return lambda L_BxSxS: run(np.asarray(L_BxSxS, np.float32)[..., None])


def _compare_strip(image, colorized):
  """Original | Grayscale | Model at one tile height (a gray photo's original is itself)."""
  height = min(_COMPARE_HEIGHT, image.shape[0])
  width = max(1, round(image.shape[1] * height / image.shape[0]))
  small = lambda im: np.asarray(Image.fromarray(im).resize((width, height), Image.LANCZOS))
  original = small(image)
  gray = visualize.gray_uint8(inference.lightness(original))
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
  backend='jax',
  precision='fp32',
  temperature=None,
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
    backend: 'jax', or an ONNX CPU runtime ('onnxruntime', 'openvino'; needs the [cpu] extra).
    precision: 'fp32', 'bf16' or 'int8' (ONNX backends only; calibrated on the first batch).
    temperature: for classification models (JAX backend).

  Returns:
    {'written': [output paths], 'kept': [inputs whose output existed], 'failed': {input: reason}}.
  """
  if fmt not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
  if backend not in BACKENDS:
    raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if temperature is not None and backend != 'jax':
    raise ValueError('temperature works with the jax backend only')
  output_dir = pathlib.Path(output_dir)
  result = {'written': [], 'kept': [], 'failed': {}}
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
  (output_dir / COMPARE_DIR if compare else output_dir).mkdir(parents=True, exist_ok=True)
  predict = None
  with tempfile.TemporaryDirectory() as tmp, tqdm.tqdm(total=len(todo), unit='image') as bar:
    for start in range(0, len(todo), batch_size):
      batch = []
      for path, target in todo[start : start + batch_size]:
        try:
          batch.append((path, target, inference.read_image(path)))
        except Exception as e:  # pylint: disable=broad-except  (any unreadable file is skipped)
          result['failed'][str(path)] = f'{type(e).__name__}: {e}'
          logging.error('cannot read %s: %s', path, e)
          bar.update(1)
      if not batch:
        continue
      size = colorizer.config.image_size
      if predict is None:
        calibration = np.stack([inference.model_input(im, size) for _, _, im in batch])
        predict = _predictor(
          colorizer, backend, precision, batch_size, calibration, tmp, temperature
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
