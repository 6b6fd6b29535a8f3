"""Runs an exported ONNX colorizer on the CPU (OpenVINO or ONNX Runtime; fp32, bf16 or int8)."""

import logging
import pathlib
import sys
import tempfile
import types

import numpy as np

from colorjax import decoding, onnx_export, propagation

BACKENDS = ('openvino', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'int8')
# OpenVINO's name for each precision's INFERENCE_PRECISION_HINT. An int8 model keeps f32 between
# its quantized convolutions: measured faster than bf16 there, and closer to fp32.
_OV_HINT = {'fp32': 'f32', 'bf16': 'bf16', 'int8': 'f32'}


class _CalibrationReader:
  """onnxruntime.quantization's calibration protocol over stacked inputs, one image at a time."""

  def __init__(self, names, arrays):
    self._feeds = iter(
      [{n: a[i : i + 1] for n, a in zip(names, arrays)} for i in range(len(arrays[0]))]
    )

  def get_next(self):
    return next(self._feeds, None)


# The fixed calibration set of int8: scikit-image's bundled color photos (no download), so a
# photo's colors never depend on what else is being colorized, and every run quantizes alike.
CALIBRATION_PHOTOS = (
  'astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina', 'colorwheel',
  'hubble_deep_field',
)  # fmt: skip


def calibration_inputs(image_size, with_hints=False, photos=None):
  """The calibration set at image_size: L (N, S, S, 1) and, with_hints, ideepcolor-style hints
  drawn from the photos' own colors with a fixed key (so the hint channels' ranges are those
  real hints give, not zeros). photos: uint8 RGB arrays of any size (default: the fixed set,
  CALIBRATION_PHOTOS)."""
  import jax  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from colorjax import hints, lab  # pylint: disable=g-import-not-at-top

  if photos is None:
    import skimage.data  # pylint: disable=g-import-not-at-top

    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in CALIBRATION_PHOTOS]
  rgb = [
    np.asarray(Image.fromarray(p).convert('RGB').resize((image_size, image_size), Image.LANCZOS))
    for p in photos
  ]
  Lab = lab.rgb8_to_lab(np.stack(rgb))
  L = np.ascontiguousarray(Lab[..., :1], np.float32)
  if not with_hints:
    return (L,)
  config = hints.HintConfig(max_patch=min(9, image_size))
  hint_ab, mask = hints.sample_hints(jax.random.key(0), Lab[..., 1:], config)
  return L, np.asarray(hint_ab, np.float32), np.asarray(mask, np.float32)


# Quantized when every op is refused by OpenVINO: its low-precision passes fail on the U-Net's
# quantized GroupNorm (MultiplyPartialTransformation); quantizing the convolutions only compiles.
MATMUL_OPS = ('Conv', 'MatMul', 'Gemm')


def quantize_int8(onnx_path, int8_path, calibration=None, op_types=None):
  """Post-training static quantization (QDQ, per-channel int8 weights, uint8 activations).

  Args:
    onnx_path: the float32 model written by onnx_export.export_onnx.
    int8_path: where to write the quantized model (its metadata says int8).
    calibration: the inputs that set the activation ranges, one array per model input ((L,) or
      (L, hint_ab, hint_mask), each stacked over N images); None: calibration_inputs, the fixed
      set.
    op_types: the ONNX op types to quantize (None: every one ONNX Runtime can; the seed model's
      fastest form in OpenVINO); MATMUL_OPS quantizes only the convolutions.

  Returns:
    int8_path as a pathlib.Path.
  """
  onnx = onnx_export.require('onnx')
  quantization = onnx_export.require('onnxruntime.quantization')
  model = onnx.load(str(onnx_path))
  names = [i.name for i in model.graph.input]
  if calibration is None:
    calibration = calibration_inputs(_image_size(model)[0], with_hints=len(names) > 1)
  if len(calibration) != len(names):
    raise ValueError(f'the model takes {names}; got {len(calibration)} calibration arrays')
  calibration = [_check_L(calibration[0], _image_size(model))] + [
    np.ascontiguousarray(x, np.float32) for x in calibration[1:]
  ]
  quantization.quantize_static(
    str(onnx_path),
    str(int8_path),
    _CalibrationReader(names, calibration),
    quant_format=quantization.QuantFormat.QDQ,
    per_channel=True,
    activation_type=quantization.QuantType.QUInt8,
    weight_type=quantization.QuantType.QInt8,
    **({} if op_types is None else {'op_types_to_quantize': list(op_types)}),
  )
  quantized = onnx.load(str(int8_path))
  config, size, _ = onnx_export.read_metadata(onnx_path)
  onnx_export.set_metadata(quantized, config, size, precision='int8')
  onnx.save(quantized, str(int8_path))
  return pathlib.Path(int8_path)


def _image_size(model):
  dims = model.graph.input[0].type.tensor_type.shape.dim
  return tuple(d.dim_value for d in dims[1:])


def _check_L(L, image_shape):
  L = np.asarray(L, np.float32)
  if L.ndim != 4 or L.shape[1:] != tuple(image_shape):
    raise ValueError(
      f'L must have shape (B, {", ".join(map(str, image_shape))}) to fit this model, got {L.shape}'
    )
  if L.shape[0] == 0:
    raise ValueError('L holds no images')
  return np.ascontiguousarray(L)


def _openvino_fn(model_path, precision, num_threads):
  ov = onnx_export.require('openvino')
  config = {'INFERENCE_PRECISION_HINT': _OV_HINT[precision], 'PERFORMANCE_HINT': 'LATENCY'}
  if num_threads:
    config['INFERENCE_NUM_THREADS'] = int(num_threads)
  compiled = ov.Core().compile_model(str(model_path), 'CPU', config)
  request = compiled.create_infer_request()
  return lambda feeds: np.array(request.infer(list(feeds))[0], np.float32)


def _onnxruntime_fn(model_path, num_threads):
  ort = onnx_export.require('onnxruntime')
  options = ort.SessionOptions()
  if num_threads:
    options.intra_op_num_threads = int(num_threads)
  session = ort.InferenceSession(str(model_path), options, providers=['CPUExecutionProvider'])
  names = [i.name for i in session.get_inputs()]
  return lambda feeds: np.asarray(session.run(None, dict(zip(names, feeds)))[0], np.float32)


def cpu_runtime(
  onnx_path,
  backend='openvino',
  precision='fp32',
  num_threads=None,
  calibration=None,
  chroma_gain=1.0,
  spread_hints=True,
):
  """A CPU colorize function for an exported model (same contract as colorjax colorize).

  Args:
    onnx_path: a file written by onnx_export.export_onnx, or an int8 file quantize_int8 (or
      `launch.export --precision=int8`) wrote, which runs as it is.
    backend: 'openvino' or 'onnxruntime'.
    precision: 'fp32'; 'bf16' (OpenVINO only: its INFERENCE_PRECISION_HINT, AMX where the CPU
      has it); or 'int8' (post-training static quantization, calibrated on `calibration`).
    num_threads: CPU threads for the runtime; None lets it use every core.
    calibration: int8 only: the calibration inputs (see quantize_int8); None: the fixed set
      (calibration_inputs), so colors never depend on the photos colorized.
    chroma_gain: stretches the file's ab as colorjax.decoding.stretch_chroma does (an exported
      file is decoded at chroma gain 1), before the hints are spread.
    spread_hints: as colorize's: False returns the network's own answer to the hints.

  Returns:
    A function from L (B, H, W, 1) float32 in [0, 100], any B, and for a hint-taking model
    optional hints (hint_ab (B, H, W, 2), mask (B, H, W, 1); None: none), to ab (B, H, W, 2)
    float32 in Lab units, where H and W are the exported image size. Given hints are spread
    over the image as colorize spreads them (colorjax.propagation), unless spread_hints is False.
  """
  if backend not in BACKENDS:
    raise ValueError(f'unknown backend {backend!r}; choose from {BACKENDS}')
  if precision not in PRECISIONS:
    raise ValueError(f'unknown precision {precision!r}; choose from {PRECISIONS}')
  if precision == 'bf16' and backend != 'openvino':
    raise ValueError(
      "precision='bf16' needs backend='openvino' (ONNX Runtime's CPU provider "
      'has no bfloat16 convolutions)'
    )
  onnx_path = pathlib.Path(onnx_path)
  if not onnx_path.is_file():
    raise FileNotFoundError(f'no ONNX model at {onnx_path}')
  onnx = onnx_export.require('onnx')
  proto = onnx.load(str(onnx_path), load_external_data=False)
  image_shape = _image_size(proto)
  takes_hints = len(proto.graph.input) > 1
  stored = {e.key: e.value for e in proto.metadata_props}.get('colorjax_precision', 'fp32')
  if stored == 'int8' and precision != 'int8':
    raise ValueError(f'{onnx_path} holds an int8 model; run it with precision int8')

  with tempfile.TemporaryDirectory() as tmp:
    model_path = onnx_path
    if precision == 'int8' and stored != 'int8':
      model_path = quantize_int8(onnx_path, pathlib.Path(tmp) / 'int8.onnx', calibration)
    if backend == 'openvino':
      try:
        run = _openvino_fn(model_path, precision, num_threads)
      except RuntimeError as e:
        if precision != 'int8' or stored == 'int8':
          raise
        logging.warning('OpenVINO refused the int8 model (%s); quantizing %s only',
                        str(e).strip().splitlines()[0], ', '.join(MATMUL_OPS))  # fmt: skip
        model_path = quantize_int8(
          onnx_path, pathlib.Path(tmp) / 'int8_matmul.onnx', calibration, MATMUL_OPS
        )
        run = _openvino_fn(model_path, precision, num_threads)
    else:
      run = _onnxruntime_fn(model_path, num_threads)

  def stretched(ab):
    return np.asarray(decoding.stretch_chroma(ab, chroma_gain), np.float32)

  def colorize_cpu(L_BxHxWx1, hints=None):
    L_BxHxWx1 = _check_L(L_BxHxWx1, image_shape)
    if not takes_hints:
      if hints is not None:
        raise ValueError('this model was exported without hint inputs; it takes none')
      return stretched(run([L_BxHxWx1]))
    given = hints is not None
    if not given:
      shape = L_BxHxWx1.shape
      hints = (np.zeros(shape[:-1] + (2,), np.float32), np.zeros(shape, np.float32))
    hint_ab, mask = (np.ascontiguousarray(h, np.float32) for h in hints)
    if hint_ab.shape != L_BxHxWx1.shape[:-1] + (2,) or mask.shape != L_BxHxWx1.shape:
      raise ValueError(f"hints must be ab and mask at L's size {L_BxHxWx1.shape[1:3]}")
    ab = stretched(run([L_BxHxWx1, hint_ab, mask]))
    if not (given and spread_hints):
      return ab
    return np.asarray(propagation.spread_jit(L_BxHxWx1, ab, hint_ab, mask), np.float32)

  return colorize_cpu


class _CallableModule(types.ModuleType):
  """`colorjax.cpu_runtime(path, ...)` calls cpu_runtime (the API as introduced), while
  `colorjax.cpu_runtime.quantize_int8` etc. stay reachable: the name is both this module and
  its function, whichever import set the package attribute first."""

  def __call__(self, *args, **kwargs):
    return cpu_runtime(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
