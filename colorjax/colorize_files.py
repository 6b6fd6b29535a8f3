"""Colorizes image files in batches (the library half of launch/colorize.py)."""

import dataclasses
import glob
import importlib.util
import logging
import os
import pathlib
import tempfile

import numpy as np
import tqdm
from PIL import Image

from colorjax import decoding, fileutil, fullsize, inference, visualize
from colorjax import hints as hints_lib

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')
FORMATS = ('png', 'jpg')
BACKENDS = ('auto', 'jax', 'onnxruntime', 'openvino')
PRECISIONS = ('auto', 'fp32', 'bf16', 'int8')
# What 'auto' picks on a CPU-only JAX: OpenVINO at the fastest precision within 0.2 dB PSNR and 2%
# colorfulness of float32 for the architecture (docs/benchmarks.md, cpu_runtime; the U-Net's int8
# loses more colorfulness than that).
CPU_DEFAULT_BACKEND = 'openvino'
CPU_DEFAULT_PRECISION = {'seed': 'int8', 'unet': 'bf16', 'effnet_unet': 'bf16'}
_CPU_MODULES = ('onnx', 'onnxruntime', 'openvino')  # the [cpu] extra: the runtimes
_EXPORT_MODULES = ('jax2onnx',)  # the [onnx] extra: exporting a model for them
COMPARE_DIR = 'compare'
_COMPARE_HEIGHT = 384  # tile height of the --compare strips


def find_inputs(spec):
  """A file, a folder (its image files, sorted) or a glob pattern -> a sorted list of files;
  FileNotFoundError when nothing matches."""
  path = pathlib.Path(spec)
  if path.is_file():
    return [path]
  if path.is_dir():
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
      raise FileNotFoundError(f'{spec} holds no image files ({", ".join(IMAGE_SUFFIXES)})')
    return found
  found = sorted(pathlib.Path(p) for p in glob.glob(str(spec)) if pathlib.Path(p).is_file())
  if not found:
    what = 'no images match' if glob.has_magic(str(spec)) else 'no such file or folder:'
    raise FileNotFoundError(f'{what} {spec}')
  return found


def cpu_runtime_available(export=True):
  """Whether JAX runs on the CPU only and the CPU runtimes ([cpu]) are there, and with export
  also jax2onnx ([onnx]; not needed for a file that is already ONNX, like the shipped model's)."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.default_backend() != 'cpu':
    return False
  needed = _CPU_MODULES + (_EXPORT_MODULES if export else ())
  return all(importlib.util.find_spec(name) is not None for name in needed)


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


def _jax_predictor(colorizer, precision, batch_size, spread_hints=True):
  """(L (B, S, S), hints) -> ab (B, S, S, 2) with JAX, padded to batch_size (one compile)."""
  if precision == 'int8':
    raise ValueError("precision='int8' needs an ONNX backend (onnxruntime or openvino)")
  if colorizer.params is None:
    raise ValueError('an ONNX checkpoint runs on an ONNX backend (onnxruntime or openvino)')
  if precision == 'bf16':
    colorizer = colorizer.replace(config=dataclasses.replace(colorizer.config, dtype='bfloat16'))
  return inference.batch_predictor(colorizer, batch_size, spread_hints)


def _onnx_predictor(
  colorizer, backend, precision, onnx_path, given_onnx=None, gain=1.0, spread_hints=True
):
  """(L (B, S, S), hints) -> ab (B, S, S, 2) with an ONNX CPU runtime: the given file, or the
  colorizer exported to onnx_path (int8: calibrated on cpu_runtime's fixed set), its ab
  stretched by `gain` (a bundled file, inference.BUNDLED_ONNX, is decoded at chroma gain 1)."""
  from colorjax import cpu_runtime, onnx_export  # pylint: disable=g-import-not-at-top

  if given_onnx is None:
    given_onnx = onnx_export.export_onnx(
      colorizer.config, colorizer.params['params'], onnx_path, colorizer.config.image_size
    )
  run = cpu_runtime.cpu_runtime(
    given_onnx, backend, precision, chroma_gain=gain, spread_hints=spread_hints
  )
  return lambda L_BxSxS, hints=None: run(np.asarray(L_BxSxS, np.float32)[..., None], hints)


def bundled_onnx_fits(colorizer, onnx_path):
  """Whether a bundled ONNX file computes this colorizer's network and decoding up to the chroma
  gain (not when --temperature or --prior_correction changed it: those need a new export)."""
  from colorjax import onnx_export  # pylint: disable=g-import-not-at-top

  return _fits(colorizer, onnx_export.read_metadata(onnx_path))


def _fits(colorizer, metadata):
  config, size, _ = metadata
  mine = colorizer.config
  return size == mine.image_size and dataclasses.replace(config, chroma_gain=1.0) == (
    dataclasses.replace(mine, chroma_gain=1.0)
  )


def make_predictor(
  colorizer, backend, precision, batch_size, tmp_dir, given_onnx=None, spread_hints=True
):
  """(predict function, 'backend precision') resolved; 'auto' falls back to JAX if export fails.
  given_onnx: an exported file to run instead of exporting the colorizer (ONNX backends only;
  an int8 file runs at int8). spread_hints: as colorize's."""
  auto, gain = backend == 'auto', 1.0
  if given_onnx is not None:
    from colorjax import onnx_export  # pylint: disable=g-import-not-at-top

    metadata = onnx_export.read_metadata(given_onnx)  # read once: the file is tens of MB
  if given_onnx is not None and colorizer.params is not None:
    # A bundled file: used by the ONNX backends when it computes this decoding, else the export.
    usable = backend != 'auto' or cpu_runtime_available(export=False)
    if backend == 'jax' or not usable or not _fits(colorizer, metadata):
      given_onnx = None
    else:
      gain = colorizer.config.chroma_gain / metadata[0].chroma_gain
  if given_onnx is not None:
    if backend == 'jax':
      raise ValueError('an ONNX checkpoint runs on an ONNX backend (onnxruntime or openvino)')
    stored = metadata[2]
    backend = CPU_DEFAULT_BACKEND if backend == 'auto' else backend
    if precision == 'auto':
      precision = stored if stored == 'int8' else CPU_DEFAULT_PRECISION[colorizer.config.name]
  backend, precision = resolve_backend(backend, precision, colorizer.config.name)
  if backend != 'jax':
    try:
      predict = _onnx_predictor(
        colorizer,
        backend,
        precision,
        pathlib.Path(tmp_dir) / 'model.onnx',
        given_onnx,
        gain,
        spread_hints,
      )
      logging.info('colorizing with %s %s', backend, precision)
      return predict, f'{backend} {precision}'
    except Exception as e:  # pylint: disable=broad-except  (any export or runtime failure)
      if not auto or (given_onnx is not None and colorizer.params is None):
        raise
      logging.warning('ONNX export or %s failed (%s: %s); using JAX', backend, type(e).__name__, e)
      backend, precision = 'jax', 'fp32'
  logging.info('colorizing with jax %s', precision)
  return _jax_predictor(colorizer, precision, batch_size, spread_hints), f'jax {precision}'


def load_checkpoint(checkpoint, step=None):
  """(Colorizer, ONNX path or None) for a training workdir, an export (with its bundled ONNX
  file, inference.BUNDLED_ONNX, if it has one), or an exported .onnx (whose Colorizer has no
  params and the exported image size)."""
  path = pathlib.Path(checkpoint)
  if path.suffix.lower() == '.onnx' and path.is_file():
    from colorjax import onnx_export  # pylint: disable=g-import-not-at-top

    config, size, _ = onnx_export.read_metadata(path)
    return inference.Colorizer(None, dataclasses.replace(config, image_size=size)), path
  colorizer = inference.load(checkpoint, step=step)
  bundled = inference.resolve(checkpoint) / inference.BUNDLED_ONNX
  return colorizer, (bundled if bundled.is_file() else None)


def read_hints(spec, inputs):
  """{input path: [colorjax.hints.Hint]} for colorize_files' hints argument: None (none), a
  JSON file (for a single input), or 'sidecar' (NAME.hints.json beside each input, where one
  exists). Points outside their photo are an error."""
  if spec is None:
    return {}
  if spec == 'sidecar':
    return {p: hints_lib.load_hints(hints_lib.sidecar_path(p)) for p in inputs
            if hints_lib.sidecar_path(p).is_file()}  # fmt: skip
  if len(inputs) != 1:
    raise ValueError(
      f'--hints={spec} is one JSON for one photo; {len(inputs)} inputs match (for a folder, '
      'put NAME.hints.json beside each photo and pass --hints=sidecar)'
    )
  return {inputs[0]: hints_lib.load_hints(spec)}


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
  # A temporary file of an unpredictable name in the same folder, renamed over the target: no
  # half-written output if interrupted, and no link followed.
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      Image.fromarray(image).save(f, format='PNG' if fmt == 'png' else 'JPEG', quality=95)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def check_output_dir(output_dir):
  """Refuses an output folder that is a file, and any output that would land on an input."""
  output_dir = pathlib.Path(output_dir)
  if output_dir.exists() and not output_dir.is_dir():
    raise NotADirectoryError(f'--output_dir {output_dir} is a file, not a folder')
  for parent in output_dir.parents:
    if parent.exists() and not parent.is_dir():
      raise NotADirectoryError(f'cannot create {output_dir}: {parent} is a file')


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
  hints=None,
  step=None,
):
  """Colorizes every image of `inputs` into output_dir, keeping names (new extension) and sizes.

  Args:
    checkpoint: a training workdir, exported params (see inference.load), or an exported .onnx
      file (run by an ONNX backend as it is: an int8 file at int8).
    inputs: a file, folder or glob pattern (see find_inputs).
    output_dir: where OUT/NAME.fmt (and with compare, OUT/compare/NAME.fmt) are written; an
      output that would replace one of the inputs is refused (ValueError) before any work.
    batch_size: photos per network call.
    compare: also write an Original | Grayscale | Model strip per photo.
    fmt: 'png' or 'jpg'.
    overwrite: replace existing outputs (default: keep them and skip their inputs).
    backend: 'jax', an ONNX CPU runtime ('onnxruntime', 'openvino'; needs the [cpu] extra), or
      'auto' (see resolve_backend: OpenVINO on a CPU-only machine with the extra, else JAX; JAX
      also if the ONNX export fails, with a warning).
    precision: 'fp32', 'bf16', 'int8' (ONNX backends only; calibrated on cpu_runtime's fixed
      set, so a photo's colors do not depend on the others) or 'auto' (for OpenVINO
      CPU_DEFAULT_PRECISION of the architecture; fp32 otherwise).
    temperature, prior_correction, chroma_gain: a classification model's decoding (see
      colorjax.decoding); None keeps the model config's.
    hints: None, a hints JSON file for a single input, or 'sidecar' (see read_hints).
    step: a training workdir's step to use (default: the newest that restores).

  The output folder is locked for the run (fileutil.exclusive_lock): a second colorize into it
  raises fileutil.LockedError.

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
  paths = find_inputs(inputs)
  check_output_dir(output_dir)
  given_hints = read_hints(hints, paths)
  result = {'written': [], 'kept': [], 'failed': {}, 'backend': None}
  todo, targets = [], {}
  sources = {p.resolve() for p in paths}
  for path in paths:
    target = output_dir / f'{path.stem}.{fmt}'
    strip = output_dir / COMPARE_DIR / target.name
    for out in (target, strip) if compare else (target,):
      if out.resolve() in sources:
        raise ValueError(
          f'refusing to write {out} over the input photo {path}; choose another --output_dir'
        )
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
  output_dir.mkdir(parents=True, exist_ok=True)
  with fileutil.exclusive_lock(output_dir):
    return _colorize(
      checkpoint, step, todo, output_dir, result, given_hints, batch_size, compare, fmt,
      backend, precision, (temperature, prior_correction, chroma_gain),
    )  # fmt: skip


def _colorize(checkpoint, step, todo, output_dir, result, given_hints, batch_size, compare, fmt,
              backend, precision, knobs):  # fmt: skip
  temperature, prior_correction, chroma_gain = knobs
  colorizer, given_onnx = load_checkpoint(checkpoint, step)
  colorizer = decoding.with_decoding(
    colorizer, temperature=temperature, prior_correction=prior_correction, chroma_gain=chroma_gain
  )
  standalone_onnx = given_onnx is not None and colorizer.params is None
  if standalone_onnx and (temperature, prior_correction, chroma_gain) != (None,) * 3:
    raise ValueError('an exported .onnx file has its decoding built in; export again to change it')
  if given_hints and not colorizer.config.hints:
    raise ValueError('this model was trained without hints; it takes none (see --hints)')
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
      if predict is None:
        predict, result['backend'] = make_predictor(
          colorizer, backend, precision, batch_size, tmp, given_onnx
        )
      images = [im for _, _, im in batch]
      photo_hints = [given_hints.get(path) for path, _, _ in batch]
      outputs = inference.colorize_images(colorizer, images, hints=photo_hints, predict=predict)
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
