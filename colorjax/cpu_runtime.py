"""Runs an exported ONNX colorizer on the CPU (OpenVINO or ONNX Runtime; fp32, bf16 or int8)."""

import logging
import pathlib
import tempfile

import numpy as np

from colorjax import onnx_export

BACKENDS = ('openvino', 'onnxruntime')
PRECISIONS = ('fp32', 'bf16', 'int8')
# OpenVINO's name for each precision's INFERENCE_PRECISION_HINT. An int8 model keeps f32 between
# its quantized convolutions: measured faster than bf16 there, and closer to fp32.
_OV_HINT = {'fp32': 'f32', 'bf16': 'bf16', 'int8': 'f32'}


class _CalibrationReader:
  """onnxruntime.quantization's calibration protocol over a stack of L images, one at a time."""

  def __init__(self, input_name, L_NxHxWx1):
    self._feeds = iter([{input_name: L_NxHxWx1[i : i + 1]} for i in range(len(L_NxHxWx1))])

  def get_next(self):
    return next(self._feeds, None)


# Quantized when every op is refused by OpenVINO: its low-precision passes fail on the U-Net's
# quantized GroupNorm (MultiplyPartialTransformation); quantizing the convolutions only compiles.
MATMUL_OPS = ('Conv', 'MatMul', 'Gemm')


def quantize_int8(onnx_path, int8_path, calibration_L, op_types=None):
  """Post-training static quantization (QDQ, per-channel int8 weights, uint8 activations).

  Args:
    onnx_path: the float32 model written by onnx_export.export_onnx.
    int8_path: where to write the quantized model.
    calibration_L: (N, H, W, 1) float32 L images in [0, 100] that set the activation ranges.
    op_types: the ONNX op types to quantize (None: every one ONNX Runtime can; the seed model's
      fastest form, 68-109 images/s against 51-52 for MATMUL_OPS only in OpenVINO).

  Returns:
    int8_path as a pathlib.Path.
  """
  onnx = onnx_export.require('onnx')
  quantization = onnx_export.require('onnxruntime.quantization')
  model = onnx.load(str(onnx_path))
  input_name = model.graph.input[0].name
  calibration_L = _check_L(calibration_L, _image_size(model))
  quantization.quantize_static(
    str(onnx_path),
    str(int8_path),
    _CalibrationReader(input_name, calibration_L),
    quant_format=quantization.QuantFormat.QDQ,
    per_channel=True,
    activation_type=quantization.QuantType.QUInt8,
    weight_type=quantization.QuantType.QInt8,
    **({} if op_types is None else {'op_types_to_quantize': list(op_types)}),
  )
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
  return lambda L: np.array(request.infer({0: L})[0], np.float32)


def _onnxruntime_fn(model_path, num_threads):
  ort = onnx_export.require('onnxruntime')
  options = ort.SessionOptions()
  if num_threads:
    options.intra_op_num_threads = int(num_threads)
  session = ort.InferenceSession(str(model_path), options, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  return lambda L: np.asarray(session.run(None, {name: L})[0], np.float32)


def cpu_runtime(
  onnx_path, backend='openvino', precision='fp32', num_threads=None, calibration_L=None
):
  """A CPU colorize function for an exported model (same contract as colorjax colorize).

  Args:
    onnx_path: a file written by onnx_export.export_onnx.
    backend: 'openvino' or 'onnxruntime'.
    precision: 'fp32'; 'bf16' (OpenVINO only: its INFERENCE_PRECISION_HINT, AMX where the CPU
      has it); or 'int8' (post-training static quantization calibrated on `calibration_L`).
    num_threads: CPU threads for the runtime; None lets it use every core.
    calibration_L: (N, H, W, 1) float32 L images in [0, 100]; required for int8 only.

  Returns:
    A function from L (B, H, W, 1) float32 in [0, 100], any B, to ab (B, H, W, 2) float32 in Lab
    units, where H and W are the exported image size.
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
  if precision == 'int8' and calibration_L is None:
    raise ValueError("precision='int8' needs calibration_L: a few (N, H, W, 1) L images")
  onnx_path = pathlib.Path(onnx_path)
  if not onnx_path.is_file():
    raise FileNotFoundError(f'no ONNX model at {onnx_path}')
  onnx = onnx_export.require('onnx')
  image_shape = _image_size(onnx.load(str(onnx_path), load_external_data=False))

  with tempfile.TemporaryDirectory() as tmp:
    model_path = onnx_path
    if precision == 'int8':
      model_path = quantize_int8(onnx_path, pathlib.Path(tmp) / 'int8.onnx', calibration_L)
    if backend == 'openvino':
      try:
        run = _openvino_fn(model_path, precision, num_threads)
      except RuntimeError as e:
        if precision != 'int8':
          raise
        logging.warning('OpenVINO refused the int8 model (%s); quantizing %s only',
                        str(e).strip().splitlines()[0], ', '.join(MATMUL_OPS))  # fmt: skip
        model_path = quantize_int8(
          onnx_path, pathlib.Path(tmp) / 'int8_matmul.onnx', calibration_L, MATMUL_OPS
        )
        run = _openvino_fn(model_path, precision, num_threads)
    else:
      run = _onnxruntime_fn(model_path, num_threads)

  def colorize_cpu(L_BxHxWx1):
    return run(_check_L(L_BxHxWx1, image_shape))

  return colorize_cpu
