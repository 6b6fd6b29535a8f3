"""End-to-end test of python -m launch.colorize on a folder with a corrupt file."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import skimage.data
from inference_test import write_workdir
from PIL import Image

import colorjax
from colorjax import colorize_files, cpu_runtime, decoding, onnx_export, quantize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  return subprocess.run(
    [sys.executable, '-m', 'launch.colorize', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )


def test_colorize_folder_with_corrupt_file(tmp_path):
  write_workdir(tmp_path / 'wd')
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(skimage.data.chelsea()).save(photos / 'cat.jpg', quality=90)
  gray = np.asarray(Image.fromarray(skimage.data.camera()).resize((101, 37)))
  Image.fromarray(gray).save(photos / 'gray.png')
  Image.fromarray(skimage.data.coffee()[:64, :80]).save(photos / 'coffee.bmp')
  (photos / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  (photos / 'notes.txt').write_text('not an image, not an input')
  out = tmp_path / 'out'
  common = [f'--checkpoint={tmp_path / "wd"}', f'--output_dir={out}']

  proc = _run(*common, f'--input={photos}', '--compare', '--batch_size=2', '--backend=jax')
  assert proc.returncode == 1, proc.stderr
  assert 'broken.jpg' in proc.stderr
  assert '3 written, 0 kept (already there), 1 failed' in proc.stdout
  assert 'colorized with jax fp32' in proc.stdout
  sizes = {'cat.png': (300, 451), 'gray.png': (37, 101), 'coffee.png': (64, 80)}
  assert sorted(p.name for p in out.glob('*.png')) == sorted(sizes)
  for name, size in sizes.items():
    image = np.asarray(Image.open(out / name))
    assert image.shape == size + (3,), name
    strip = np.asarray(Image.open(out / 'compare' / name))
    tile_h = min(size[0], 384)
    tile_w = round(size[1] * tile_h / size[0])
    assert tile_h < strip.shape[0] < tile_h + 40  # one row of tiles under the titles
    assert 3 * tile_w < strip.shape[1] < 3 * tile_w + 40  # three tiles side by side
  # The gray input's output keeps its lightness (up to 8-bit rounding).
  L_out = colorjax.rgb_to_lab(np.asarray(Image.open(out / 'gray.png')) / 255.0)[..., 0]
  L_in = colorjax.rgb_to_lab(np.repeat(gray[..., None], 3, -1) / 255.0)[..., 0]
  assert np.abs(L_out - L_in).max() < 0.7

  mtime = (out / 'cat.png').stat().st_mtime_ns
  proc = _run(*common, f'--input={photos}/c*.jpg', '--backend=jax')
  assert proc.returncode == 2, proc.stderr  # nothing was colorized: say so
  assert '0 written, 1 kept' in proc.stdout
  assert 'nothing was colorized: every output exists (--overwrite replaces them)' in proc.stderr
  assert (out / 'cat.png').stat().st_mtime_ns == mtime


def test_colorize_with_openvino_int8(tmp_path):
  write_workdir(tmp_path / 'wd', image_size=32)
  photos = tmp_path / 'photos'
  photos.mkdir()
  gray = np.asarray(Image.fromarray(skimage.data.camera()).resize((45, 30)))
  Image.fromarray(gray).save(photos / 'gray.png')
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(photos / 'coffee.png')
  out = tmp_path / 'out'
  proc = _run(
    f'--checkpoint={tmp_path / "wd"}', f'--input={photos}', f'--output_dir={out}',
    '--backend=openvino',
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  assert 'colorized with openvino int8' in proc.stdout  # precision auto -> int8
  assert np.asarray(Image.open(out / 'coffee.png')).shape == (40, 50, 3)
  L_out = colorjax.rgb_to_lab(np.asarray(Image.open(out / 'gray.png')) / 255.0)[..., 0]
  L_in = colorjax.rgb_to_lab(np.repeat(gray[..., None], 3, -1) / 255.0)[..., 0]
  assert np.abs(L_out - L_in).max() < 0.7


def test_nothing_to_do_or_bad_flags_exit_2(tmp_path):
  (tmp_path / 'empty').mkdir()
  proc = _run('--checkpoint=unused', f'--input={tmp_path / "empty"}', f'--output_dir={tmp_path}')
  assert proc.returncode == 2, proc.stderr
  assert _run('--checkpoint=unused', f'--output_dir={tmp_path}').returncode == 2
  assert _run('--checkpoint=x', '--input=y', '--output_dir=z', '--format=gif').returncode == 2
  assert _run('--checkpoint=x', '--input=y', '--output_dir=z', '--backend=tpu').returncode == 2


@pytest.mark.parametrize('available', [True, False])
def test_auto_backend_follows_cpu_runtime_availability(monkeypatch, available):
  monkeypatch.setattr(colorize_files, 'cpu_runtime_available', lambda export=True: available)
  expected = ('openvino', 'int8') if available else ('jax', 'fp32')
  assert colorize_files.resolve_backend('auto', 'auto') == expected
  # The U-Net's int8 is outside the quality limits: OpenVINO bf16 is its default.
  unet = ('openvino', 'bf16') if available else ('jax', 'fp32')
  assert colorize_files.resolve_backend('auto', 'auto', 'unet') == unet
  assert colorize_files.resolve_backend('openvino', 'auto', 'unet') == ('openvino', 'bf16')
  assert colorize_files.resolve_backend('auto', 'fp32')[1] == 'fp32'
  assert colorize_files.resolve_backend('onnxruntime', 'auto') == ('onnxruntime', 'fp32')
  assert colorize_files.resolve_backend('jax', 'auto') == ('jax', 'fp32')
  with pytest.raises(ValueError, match='backend must be one of'):
    colorize_files.resolve_backend('tpu', 'auto')
  with pytest.raises(ValueError, match='precision must be one of'):
    colorize_files.resolve_backend('auto', 'int4')


def test_unet_colorizes_through_openvino_by_default_and_in_int8(tmp_path, caplog):
  """The vivid U-Net (GroupNorm) on the CPU runtime: auto picks OpenVINO bf16; int8 compiles
  (quantizing only the convolutions if OpenVINO refuses the fully quantized graph)."""
  log_w = tuple(np.random.default_rng(0).normal(0, 1, quantize.NUM_BINS))
  write_workdir(
    tmp_path / 'unet', image_size=32, name='unet', width=8, loss='classification',
    bin_log_weights=log_w, prior_correction=-0.05, chroma_gain=1.5,
  )  # fmt: skip
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(tmp_path / 'coffee.png')
  expected = colorjax.colorize_image(colorjax.load(tmp_path / 'unet'), tmp_path / 'coffee.png')
  for precision, name in (('auto', 'openvino bf16'), ('int8', 'openvino int8')):
    out = tmp_path / precision
    result = colorize_files.colorize_files(
      tmp_path / 'unet', tmp_path / 'coffee.png', out, backend='openvino', precision=precision
    )
    assert result['backend'] == name and len(result['written']) == 1, result
    got = np.asarray(Image.open(out / 'coffee.png'), np.int16)
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 3


def test_int8_requantizes_the_convolutions_when_openvino_refuses(tmp_path, monkeypatch, caplog):
  log_w = tuple(np.random.default_rng(0).normal(0, 1, quantize.NUM_BINS))
  config, params = write_workdir(
    tmp_path / 'unet', image_size=32, name='unet', width=8, loss='classification',
    bin_log_weights=log_w,
  )  # fmt: skip
  path = onnx_export.export_onnx(config, params[0], tmp_path / 'unet.onnx', image_size=32)
  calls, compile_openvino = [], cpu_runtime._openvino_fn

  def refuse_first(model_path, precision, num_threads):
    calls.append(pathlib.Path(model_path).name)
    if len(calls) == 1:
      raise RuntimeError('Exception from src/core: MultiplyPartialTransformation failed')
    return compile_openvino(model_path, precision, num_threads)

  quantized = []
  quantize_int8 = cpu_runtime.quantize_int8
  monkeypatch.setattr(cpu_runtime, '_openvino_fn', refuse_first)
  monkeypatch.setattr(
    cpu_runtime,
    'quantize_int8',
    lambda *a, **k: quantized.append(a[3:] or k.get('op_types')) or quantize_int8(*a, **k),
  )
  L = np.random.default_rng(1).uniform(0, 100, (2, 32, 32, 1)).astype(np.float32)
  run = cpu_runtime.cpu_runtime(path, 'openvino', 'int8', calibration=(L,))
  ab = run(L)
  assert ab.shape == (2, 32, 32, 2) and np.isfinite(ab).all()
  assert calls == ['int8.onnx', 'int8_matmul.onnx']
  assert quantized[0] in ((), None) and tuple(quantized[1][0]) == cpu_runtime.MATMUL_OPS
  assert 'quantizing Conv, MatMul, Gemm only' in caplog.text

  # Any other precision's failure is not retried.
  def refuse(*args):
    raise RuntimeError('refused')

  monkeypatch.setattr(cpu_runtime, '_openvino_fn', refuse)
  with pytest.raises(RuntimeError):
    cpu_runtime.cpu_runtime(path, 'openvino', 'fp32')


def test_cpu_runtime_available_needs_a_cpu_jax(monkeypatch):
  assert colorize_files.cpu_runtime_available()  # this machine: CPU JAX with the [cpu] extra
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not colorize_files.cpu_runtime_available()


def test_auto_falls_back_to_jax_when_export_fails(tmp_path, monkeypatch, caplog):
  write_workdir(tmp_path / 'wd', image_size=32)
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(tmp_path / 'coffee.png')
  monkeypatch.setattr(colorize_files, 'cpu_runtime_available', lambda export=True: True)

  def broken_export(*args, **kwargs):
    raise NotImplementedError('no ONNX for this layer')

  monkeypatch.setattr(onnx_export, 'export_onnx', broken_export)
  result = colorize_files.colorize_files(tmp_path / 'wd', tmp_path / 'coffee.png', tmp_path / 'out')
  assert result['backend'] == 'jax fp32' and len(result['written']) == 1
  assert 'no ONNX for this layer' in caplog.text
  with pytest.raises(NotImplementedError):  # asked for explicitly: no silent fallback
    colorize_files.colorize_files(
      tmp_path / 'wd', tmp_path / 'coffee.png', tmp_path / 'out2', backend='openvino'
    )


def test_decoding_knobs_override_the_model_config(tmp_path):
  log_w = tuple(np.random.default_rng(0).normal(0, 1, quantize.NUM_BINS))
  write_workdir(
    tmp_path / 'cls', image_size=32, loss='classification', head_stride=1, bin_log_weights=log_w
  )
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(tmp_path / 'coffee.png')
  outputs = {}
  for beta, gain in ((None, None), (2.0, None), (None, 3.0)):
    out = tmp_path / f'out_{beta}_{gain}'
    result = colorize_files.colorize_files(
      tmp_path / 'cls',
      tmp_path / 'coffee.png',
      out,
      backend='jax',
      prior_correction=beta,
      chroma_gain=gain,
    )
    assert len(result['written']) == 1
    outputs[beta, gain] = np.asarray(Image.open(out / 'coffee.png'), np.int16)
  assert np.abs(outputs[None, None] - outputs[2.0, None]).max() > 2
  # The gain reaches the model: the photo is colorized as by a colorizer decoding with it.
  gained = decoding.with_decoding(colorjax.load(tmp_path / 'cls'), chroma_gain=3.0)
  expected = colorjax.colorize_image(gained, tmp_path / 'coffee.png')
  np.testing.assert_array_equal(outputs[None, 3.0], expected)
  assert np.any(outputs[None, 3.0] != outputs[None, None])
  # A regression model has no decoding to set: exit 2 with the reason.
  write_workdir(tmp_path / 'mse', image_size=32)
  for flag in ('prior_correction=0.2', 'chroma_gain=1.5'):
    proc = _run(
      f'--checkpoint={tmp_path / "mse"}',
      f'--input={tmp_path / "coffee.png"}',
      f'--output_dir={tmp_path / "out_mse"}',
      f'--{flag}',
    )
    assert proc.returncode == 2 and f'takes no {flag.split("=")[0]}' in proc.stderr


def _one_line(proc):
  assert proc.returncode == 2, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.startswith('launch.colorize: ')]
  assert len(lines) == 1, proc.stderr
  return lines[0]


@pytest.mark.parametrize('overwrite', [False, True])
def test_colorizing_into_the_input_folder_is_refused_and_touches_nothing(tmp_path, overwrite):
  write_workdir(tmp_path / 'wd', image_size=32)
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(photos / 'coffee.png')
  before = (photos / 'coffee.png').read_bytes()
  args = [f'--checkpoint={tmp_path / "wd"}', f'--input={photos}', '--backend=jax']
  line = _one_line(_run(*args, f'--output_dir={photos}', *(['--overwrite'] if overwrite else [])))
  assert 'refusing to write' in line and 'over the input photo' in line
  # The same through another spelling of the folder.
  line = _one_line(_run(*args, f'--output_dir={photos}/../photos/.', '--overwrite'))
  assert 'over the input photo' in line
  assert (photos / 'coffee.png').read_bytes() == before
  assert sorted(p.name for p in photos.iterdir()) == ['coffee.png']


def test_bad_paths_are_one_line_errors(tmp_path):
  write_workdir(tmp_path / 'wd', image_size=32)
  common = [f'--checkpoint={tmp_path / "wd"}', '--backend=jax']
  line = _one_line(_run(*common, f'--input={tmp_path}/*.jpg', f'--output_dir={tmp_path / "o"}'))
  assert line.endswith(f'no images match {tmp_path}/*.jpg')
  line = _one_line(_run(*common, f'--input={tmp_path}/missing', f'--output_dir={tmp_path}'))
  assert 'no such file or folder' in line
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(tmp_path / 'c.png')
  (tmp_path / 'file').write_text('x')
  line = _one_line(
    _run(*common, f'--input={tmp_path / "c.png"}', f'--output_dir={tmp_path / "file"}')
  )
  assert 'is a file, not a folder' in line
  line = _one_line(
    _run('--checkpoint=/nowhere', f'--input={tmp_path / "c.png"}', f'--output_dir={tmp_path / "o"}')
  )
  assert 'no model.json' in line
  # --verbose shows the traceback of the same error.
  verbose = _run(
    '--checkpoint=/nowhere',
    f'--input={tmp_path / "c.png"}',
    f'--output_dir={tmp_path / "o"}',
    '--verbose',
  )
  assert verbose.returncode != 0 and 'Traceback' in verbose.stderr


def test_an_exported_onnx_file_is_a_checkpoint(tmp_path):
  pytest.importorskip('openvino')
  write_workdir(tmp_path / 'wd', image_size=32)
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(photos / 'coffee.png')
  Image.fromarray(skimage.data.astronaut()[:60, :30]).save(photos / 'astronaut.png')
  model = tmp_path / 'model.int8.onnx'
  export = subprocess.run(
    [sys.executable, '-m', 'launch.export', f'--checkpoint={tmp_path / "wd"}', f'--output={model}',
     '--format=onnx', '--precision=int8', '--image_size=64'],
    cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
  )  # fmt: skip
  assert export.returncode == 0, export.stderr
  assert onnx_export.read_metadata(model)[1:] == (64, 'int8')
  out = tmp_path / 'out'
  proc = _run(f'--checkpoint={model}', f'--input={photos}', f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr
  assert 'colorized with openvino int8' in proc.stdout
  first = np.asarray(Image.open(out / 'coffee.png'))
  # The same photo alone gets the same colors: int8 was calibrated once, at export.
  alone = tmp_path / 'alone'
  proc = _run(f'--checkpoint={model}', f'--input={photos / "coffee.png"}', f'--output_dir={alone}')
  assert proc.returncode == 0, proc.stderr
  np.testing.assert_array_equal(np.asarray(Image.open(alone / 'coffee.png')), first)
  line = _one_line(
    _run(
      f'--checkpoint={model}',
      f'--input={photos}',
      f'--output_dir={tmp_path / "j"}',
      '--backend=jax',
    )
  )
  assert 'runs on an ONNX backend' in line


def test_hints_json_for_one_photo_and_sidecars(tmp_path):
  from hint_model_fixtures import train_hint_model  # pylint: disable=g-import-not-at-top

  model = train_hint_model(tmp_path / 'hint_model', loss='mse', size=32, steps=3)
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(photos / 'coffee.png')
  Image.fromarray(skimage.data.astronaut()[:60, :30]).save(photos / 'astronaut.png')
  good = tmp_path / 'good.json'
  good.write_text('{"hints": [{"x": 10, "y": 5, "color": "#c0392b"}]}')
  common = [f'--checkpoint={model}', '--backend=jax']
  proc = _run(
    *common, f'--input={photos / "coffee.png"}', f'--output_dir={tmp_path / "a"}', f'--hints={good}'
  )
  assert proc.returncode == 0, proc.stderr
  plain = _run(*common, f'--input={photos / "coffee.png"}', f'--output_dir={tmp_path / "b"}')
  assert plain.returncode == 0, plain.stderr
  assert not np.array_equal(
    np.asarray(Image.open(tmp_path / 'a' / 'coffee.png')),
    np.asarray(Image.open(tmp_path / 'b' / 'coffee.png')),
  )
  cases = [
    (
      '{"hints": [{"x": 100, "y": 5, "color": "#c0392b"}]}',
      'hint 0 at (x=100, y=5) is outside the 50x40 photo',
    ),
    ('{"hints": [{"x": 1, "y": 5, "color": "red"}]}', "hint 0: field 'color' must be '#rrggbb'"),
    ('{"hints": [{"x": 1, "y": 5, "colour": "#c0392b"}]}', 'colour'),
    ('{"hints": [{"x": 1, "y": 5, "ab": [300, 0]}]}', "field 'ab' must lie in"),
    ('{"hints": [', 'line 1'),
  ]
  # The command line says the first as one line; each is the ValueError that colorize_files
  # raises and launch.colorize prints (in-process: a command start each costs seconds).
  bad = tmp_path / 'bad.json'
  bad.write_text(cases[0][0])
  args = (f'--input={photos / "coffee.png"}', f'--output_dir={tmp_path / "c"}', f'--hints={bad}')
  line = _one_line(_run(*common, *args))
  assert cases[0][1] in line, line
  for i, (text, message) in enumerate(cases):
    bad.write_text(text)
    with pytest.raises(ValueError) as e:
      colorize_files.colorize_files(
        model, str(photos / 'coffee.png'), tmp_path / f'c{i}', hints=str(bad), backend='jax'
      )
    assert message in str(e.value), str(e.value)
  line = _one_line(
    _run(*common, f'--input={photos}', f'--output_dir={tmp_path / "c"}', f'--hints={good}')
  )
  assert '--hints=sidecar' in line
  (photos / 'coffee.hints.json').write_text(good.read_text())
  proc = _run(*common, f'--input={photos}', f'--output_dir={tmp_path / "s"}', '--hints=sidecar')
  assert proc.returncode == 0, proc.stderr
  np.testing.assert_array_equal(
    np.asarray(Image.open(tmp_path / 's' / 'coffee.png')),
    np.asarray(Image.open(tmp_path / 'a' / 'coffee.png')),
  )
  plain_model = tmp_path / 'plain'
  write_workdir(plain_model, image_size=32)
  line = _one_line(
    _run(
      f'--checkpoint={plain_model}',
      '--backend=jax',
      f'--input={photos / "coffee.png"}',
      f'--output_dir={tmp_path / "p"}',
      f'--hints={good}',
    )
  )
  assert 'trained without hints' in line


def test_a_photo_that_cannot_be_read_is_one_plain_line_and_exit_1(tmp_path):
  """A user-facing warning or error reads as a sentence, without absl's log-record prefix
  ('E1202 11:07:48.123456 123 colorize_files.py:335]'), and the other photos are written."""
  write_workdir(tmp_path / 'wd', image_size=32)
  photos = tmp_path / 'photos'
  photos.mkdir()
  Image.fromarray(skimage.data.coffee()[:40, :50]).save(photos / 'coffee.png')
  (photos / 'broken.png').write_bytes(b'not an image')
  proc = _run(f'--checkpoint={tmp_path / "wd"}', f'--input={photos}',
              f'--output_dir={tmp_path / "out"}', '--backend=jax')  # fmt: skip
  assert proc.returncode == 1, proc.stderr
  assert (tmp_path / 'out' / 'coffee.png').is_file()
  assert f'error: cannot read {photos / "broken.png"}: not_an_image' in proc.stderr, proc.stderr
  assert not re.search(r'[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+', proc.stderr), proc.stderr
