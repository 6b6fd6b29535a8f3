"""The README's first command: python -m launch.demo (or colorjax demo).

Writes scikit-image's bundled photos as black-and-white JPEGs into OUT/photos (no download),
colorizes them with the shipped model (or --checkpoint) as launch.colorize does, and joins them into
OUT/demo.png: the gray photos above, their colorizations below. The last line names that picture.
"""

import pathlib

from absl import flags

import launch
from colorjax import colorize_files

# scikit-image's photos: one born gray ('camera') and color ones shown without their colors.
PHOTOS = ('camera', 'astronaut', 'coffee', 'chelsea', 'rocket')

_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'pretrained', 'the model (default: the shipped one)'
)
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/demo_colorized', 'where the pictures go')
_BACKEND = flags.DEFINE_enum('backend', 'auto', colorize_files.BACKENDS, 'as launch.colorize')


def write_gray_photos(folder):
  """The PHOTOS as gray JPEGs in folder (kept if already there); returns their paths."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for name in PHOTOS:
    path = folder / f'{name}.jpg'
    if not path.exists():
      Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert('L').save(path, quality=92)
    paths.append(path)
  return paths


def main(argv):
  del argv  # checked by launch.run
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from colorjax import visualize  # pylint: disable=g-import-not-at-top

  out = pathlib.Path(_OUTPUT_DIR.value)
  photos = write_gray_photos(out / 'photos')
  colorized = out / 'colorized'
  result = colorize_files.colorize_files(
    _CHECKPOINT.value, str(out / 'photos'), colorized, backend=_BACKEND.value, overwrite=True
  )
  if result['failed']:
    raise RuntimeError(f'could not colorize {sorted(result["failed"])}')
  rows = [
    [np.asarray(Image.open(p)) for p in photos],
    [np.asarray(Image.open(colorized / f'{p.stem}.png')) for p in photos],
  ]
  picture = out / 'demo.png'
  visualize.save_png(picture, visualize.comparison_grid(rows, tile_height=256))
  print(
    f'colorized {len(photos)} photos with {result["backend"]}; the picture: {picture.resolve()}'
  )


def run(argv=None):
  launch.run(main, 'launch.demo', argv=argv)


if __name__ == '__main__':
  run()
