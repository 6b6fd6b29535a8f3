"""The README's before/after strip: historical black-and-white photos colorized by a model.

python -m bench.readme_figure [--checkpoint=pretrained] [--photos_dir=../shared/data/historical_bw]
    [--output=docs/readme_strip.jpg]

Each photo is colorized at full resolution with `colorjax.colorize_image` (the network at its own
size, the colors joined to the photo's own lightness); the strip shows the originals above and
the colorized photos below, at one height, then the photos of HINTS once more with those color
points (marked by a ring). The default photos are in the public domain (US
government work of the Farm Security Administration and the Library of Congress, or published
before 1927).
"""

import pathlib

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Public domain: FSA photographs (Dorothea Lange 1936, Arthur Rothstein's dust bowl series), a
# Library of Congress Civil War photograph, and a Detroit Publishing Co. street view of 1908.
PHOTOS = (
  'migrant_mother.jpg',
  'dustbowl_people.jpg',
  'civil_war_3.jpg',
  'Buffalo Bank Buffalo, New York, circa 1908. Erie County Savings Bank, Niagara Street.jpg',
)

# A few color points a person might give (photo pixels, sRGB hex): the launch.colorize --hints
# schema. Dustbowl: the sky, the boy's shirt, the girl's coat.
HINTS = {
  'dustbowl_people.jpg': {
    'hints': [
      {'x': 290, 'y': 55, 'color': '#8fb0d8'},
      {'x': 124, 'y': 178, 'color': '#b5483a'},
      {'x': 150, 'y': 400, 'color': '#3f6e4a'},
    ]
  },
}

_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'pretrained', 'the model (default: the shipped one)'
)
_PHOTOS_DIR = flags.DEFINE_string(
  'photos_dir', '../shared/data/historical_bw', 'the folder holding the photos'
)
_NAMES = flags.DEFINE_list('names', list(PHOTOS), 'the photos of the strip, in order')
_HEIGHT = flags.DEFINE_integer('height', 256, 'the height of each tile')
_OUTPUT = flags.DEFINE_string('output', str(ROOT / 'docs' / 'readme_strip.jpg'), 'the strip')


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  import colorjax  # pylint: disable=g-import-not-at-top
  from colorjax import hints, image_io, visualize  # pylint: disable=g-import-not-at-top

  colorizer = colorjax.load(_CHECKPOINT.value)
  folder = pathlib.Path(_PHOTOS_DIR.value)
  originals, colorized = [], []
  for name in _NAMES.value:
    image = image_io.read_image(folder / name)
    originals.append(Image.fromarray(image))
    colorized.append(Image.fromarray(colorjax.colorize_image(colorizer, image)))
  for name, spec in HINTS.items() if colorizer.config.hints else ():
    image = image_io.read_image(folder / name)
    points = hints.parse_hints(spec)
    hinted = Image.fromarray(colorjax.colorize_image(colorizer, image, hints=points))
    marked = Image.fromarray(image).convert('RGB')
    draw = ImageDraw.Draw(marked)
    for point in spec['hints']:
      x, y, r = point['x'], point['y'], 9
      draw.ellipse([x - r, y - r, x + r, y + r], fill=point['color'], outline='white', width=3)
    originals.append(marked)
    colorized.append(hinted)
  rows = [[np.asarray(im.convert('RGB')) for im in row] for row in (originals, colorized)]
  out = Image.fromarray(visualize.comparison_grid(rows, tile_height=_HEIGHT.value))
  output = pathlib.Path(_OUTPUT.value)
  output.parent.mkdir(parents=True, exist_ok=True)
  out.save(output, quality=88)
  print(f'wrote {output} ({out.width}x{out.height})')


if __name__ == '__main__':
  app.run(main)
