"""Time to colorize one 256 px image, 8 of them and a 12-megapixel photo (JAX and the CPU default).

python3 -m bench.colorize                       # a randomly initialized seed model at 256 px
python3 -m bench.colorize --checkpoint=DIR      # a training workdir or exported params
"""

import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from bench import report
from colorjax import colorize_files, fullsize, inference, lab, models
from colorjax import hints as hints_lib

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'workdir or export (default: random init)')
_PHOTO = flags.DEFINE_string(
  'photo',
  '/work/shared/data/coco/originals/000000000139.jpg',
  'photo upscaled to the 12-megapixel input (skimage astronaut if absent)',
)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'timed runs per row after a warm-up; median shown')


def random_colorizer(image_size=256):
  """The seed network with LeCun-normal weights (timing does not depend on the values)."""
  config = models.ModelConfig(image_size=image_size)
  shapes = jax.eval_shape(
    models.create_model(config).init,
    jax.random.PRNGKey(0),
    jnp.zeros((1, image_size, image_size, 1)),
  )
  rng = np.random.RandomState(0)
  draw = lambda s: (
    (rng.normal(0, 1, s.shape) / np.sqrt(max(1, np.prod(s.shape[:-1])))).astype(np.float32)
    if len(s.shape) > 1
    else np.zeros(s.shape, np.float32)
  )
  return inference.Colorizer(params=jax.tree.map(draw, shapes), config=config)


def median_seconds(fns, repeats):
  """Median seconds of each function; rounds interleave them so load changes hit all alike."""
  for fn in fns:
    fn()  # compile / warm up
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, t in zip(fns, times):
      start = time.perf_counter()
      fn()
      t.append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]


def photo(path, width, height):
  try:
    image = Image.open(path).convert('RGB')
  except OSError:
    import skimage.data  # pylint: disable=g-import-not-at-top

    image = Image.fromarray(skimage.data.astronaut())
  return np.asarray(image.resize((width, height), Image.BICUBIC))


def main(argv):
  del argv
  bundled = None
  if _CHECKPOINT.value:
    colorizer, bundled = colorize_files.load_checkpoint(_CHECKPOINT.value)
  else:
    colorizer = random_colorizer()
  size = colorizer.config.image_size
  run1, run8 = inference.batch_predictor(colorizer, 1), inference.batch_predictor(colorizer, 8)
  n = _REPEATS.value
  rng = np.random.RandomState(0)
  L1 = rng.uniform(0, 100, (1, size, size)).astype(np.float32)
  L8 = rng.uniform(0, 100, (8, size, size)).astype(np.float32)
  small = [photo(_PHOTO.value, size, size)] * 8
  big = photo(_PHOTO.value, 4000, 3000)
  L_big = fullsize.lightness(big)
  ab_model = run1(fullsize.model_input(big, size)[None])[0]
  ab_photo = lab.rgb8_to_lab(photo(_PHOTO.value, size, size))[..., 1:]  # a photo's own chroma
  with tempfile.TemporaryDirectory() as tmp:
    cpu, setting = colorize_files.make_predictor(colorizer, 'auto', 'auto', 1, tmp, bundled)
    hinted = {}
    if colorizer.config.hints:  # the interactive case: one 256x256 photo with 10 hints
      from colorjax import cpu_runtime, hint_curve, onnx_export  # pylint: disable=g-import-not-at-top

      path = onnx_export.export_onnx(
        colorizer.config, colorizer.params['params'], f'{tmp}/hints256.onnx', 256
      )
      precision_256 = colorize_files.CPU_DEFAULT_PRECISION[colorizer.config.name]
      run256 = cpu_runtime.cpu_runtime(path, 'openvino', precision_256)
      photo256 = photo(_PHOTO.value, 256, 256)
      Lab256 = lab.rgb8_to_lab(photo256)[None]
      given = hint_curve.eval_hints(Lab256[..., 1:], 10)
      L256 = np.ascontiguousarray(Lab256[..., :1])
      label = f'cpu_runtime, 1 x 256x256, 10 hints spread, openvino {precision_256} (< 100 ms)'
      # The same photo with 10 points as a person gives them, the network at its own size.
      rs = np.random.RandomState(0)
      drawn = rs.uniform((20, 20, -40, -40), (236, 236, 40, 40), (10, 4))
      points = [hints_lib.Hint(x=float(x), y=float(y), ab=(float(a), float(b)), radius=3)
                for x, y, a, b in drawn]  # fmt: skip
      hinted = {
        label: (lambda: run256(L256, given), 1),
        f'colorize_images, a 256x256 photo with 10 hints, {setting}': (
          lambda: inference.colorize_images(colorizer, [photo256], hints=[points], predict=cpu),
          1,
        ),
      }
    cases = {
      f'network alone, 1 x {size}x{size}': (lambda: run1(L1), 1),
      f'network alone, batch 8 x {size}x{size}': (lambda: run8(L8), 8),
      f'colorize_image, 1 x {size}x{size} RGB': (
        lambda: inference.colorize_image(colorizer, small[0]),
        1,
      ),
      f'colorize_images, 8 x {size}x{size} RGB': (
        lambda: inference.colorize_images(colorizer, small),
        8,
      ),
      '12 MP (4000x3000) RGB end to end, jax fp32': (
        lambda: inference.colorize_image(colorizer, big),
        1,
      ),
      f'12 MP RGB end to end, {setting} (CPU default)': (
        lambda: inference.colorize_images(colorizer, [big], predict=cpu),
        1,
      ),
      f'network alone, 1 x {size}x{size}, {setting}': (lambda: cpu(L1), 1),
      **hinted,
      '12 MP full-res L (fullsize.lightness)': (lambda: fullsize.lightness(big), 1),
      '12 MP join from L, model ab': (lambda: fullsize.join(L_big, ab_model), 1),
      '12 MP join from the RGB photo, model ab': (lambda: fullsize.join(big, ab_model), 1),
      '12 MP join from the RGB photo, its own ab (realistic chroma)': (
        lambda: fullsize.join(big, ab_photo),
        1,
      ),
    }
    seconds = median_seconds([fn for fn, _ in cases.values()], n)
  net1 = seconds[0]
  rows = [
    (name, t * 1e3, t / net1, images / t) for (name, (_, images)), t in zip(cases.items(), seconds)
  ]
  model = _CHECKPOINT.value or f'random-init seed model at {size} px'
  body = (
    f'Model: {model}; {n} timed runs after a warm-up, interleaved, median. End to end = '
    'antialiased downscale to the model size, network, bilinear ab upsampling to full size, '
    "Lab -> RGB uint8 keeping the photo's L, gamut fit of the pixels outside sRGB (a random "
    "model saturates most pixels: the gamut fit's worst case; the last row has a photo's own "
    'chroma, as a trained model gives). The full-size work runs in one jitted XLA function per '
    f'1-megapixel chunk. CPU default (--backend=auto here): {setting}'
    f'{" (the export bundled ONNX file)" if bundled else ""}; int8 is calibrated on a fixed set.'
    '\n\n' + report.table(['case', 'ms', 'x network (1 image, jax)', 'images/s'], rows)
  )
  report.write_section('colorize', ' '.join(['python3 -m bench.colorize'] + sys.argv[1:]), body)
  print(body)


if __name__ == '__main__':
  app.run(main)
