"""Time to colorize one 256 px image, 8 of them and a 12-megapixel photo vs the network alone.

python3 -m bench.colorize                       # a randomly initialized seed model at 256 px
python3 -m bench.colorize --checkpoint=DIR      # a training workdir or exported params
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from bench import report
from colorjax import inference, models

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
  colorizer = inference.load(_CHECKPOINT.value) if _CHECKPOINT.value else random_colorizer()
  size = colorizer.config.image_size
  run = inference.jax_predictor(colorizer)
  n = _REPEATS.value
  rng = np.random.RandomState(0)
  L1 = rng.uniform(0, 100, (1, size, size)).astype(np.float32)
  L8 = rng.uniform(0, 100, (8, size, size)).astype(np.float32)
  small = [photo(_PHOTO.value, size, size)] * 8
  big = photo(_PHOTO.value, 4000, 3000)
  net1, net8, e2e1, e2e8, e2e_big = median_seconds(
    [
      lambda: run(L1),
      lambda: run(L8),
      lambda: inference.colorize_image(colorizer, small[0]),
      lambda: inference.colorize_images(colorizer, small),
      lambda: inference.colorize_image(colorizer, big),
    ],
    n,
  )
  rows = [
    (f'network alone, 1 x {size}x{size}', net1 * 1e3, 1.0, 1 / net1),
    (f'network alone, batch 8 x {size}x{size}', net8 * 1e3, net8 / net1, 8 / net8),
    (f'colorize_image, 1 x {size}x{size} RGB', e2e1 * 1e3, e2e1 / net1, 1 / e2e1),
    (f'colorize_images, 8 x {size}x{size} RGB', e2e8 * 1e3, e2e8 / net1, 8 / e2e8),
    ('colorize_image, 4000x3000 (12 MP) RGB', e2e_big * 1e3, e2e_big / net1, 1 / e2e_big),
  ]
  model = _CHECKPOINT.value or f'random-init seed model at {size} px'
  body = (
    f'Model: {model}; {n} timed runs after a warm-up, median. End to end = read, antialiased '
    'downscale to the model size, network, bilinear ab upsampling to full size, gamut fit '
    "keeping L, Lab -> RGB uint8 (a random model saturates most pixels: the gamut fit's worst "
    'case). 12 MP: the full-size work runs in 1-megapixel chunks '
    f'({(e2e_big - net1) / 12 * 1e3:.0f} ms per megapixel beyond the network).\n\n'
    + report.table(['case', 'ms', 'x network (1 image)', 'images/s'], rows)
  )
  report.write_section('colorize', ' '.join(['python3 -m bench.colorize'] + sys.argv[1:]), body)


if __name__ == '__main__':
  app.run(main)
