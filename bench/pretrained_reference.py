"""The shipped model's reference numbers on photos every install has: scikit-image's.

python -m bench.pretrained_reference [--checkpoint=colorjax/weights/pretrained]

Writes CHECKPOINT/reference.json: the mean PSNR, SSIM and AuC of the model's automatic
colorization (JAX, float32) of scikit-image's color photos at the model's size, which
tests/pretrained_test.py reproduces from the installed package (within 0.05 dB) and
docs/model_card.md quotes beside the val numbers.
"""

import json
import pathlib

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
# scikit-image's color photos (a fixed list: the reference must not change with its version).
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina')

_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', str(ROOT / 'colorjax' / 'weights' / 'pretrained'), 'the exported model'
)


def reference_metrics(colorizer, photos=PHOTOS):
  """{'psnr', 'ssim', 'auc'}: means over the photos, squashed to the model's size."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from colorjax import hint_curve, lab  # pylint: disable=g-import-not-at-top

  size = colorizer.config.image_size
  rgb = [
    np.asarray(
      Image.fromarray(getattr(skimage.data, n)()[..., :3]).resize((size, size), Image.LANCZOS)
    )
    for n in photos
  ]
  Lab = lab.rgb8_to_lab(np.stack(rgb))
  return hint_curve.curve(colorizer, Lab[..., 0], Lab[..., 1:], counts=(0,))[0]


def main(argv):
  del argv
  import colorjax  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(_CHECKPOINT.value)
  record = {'photos': list(PHOTOS), **reference_metrics(colorjax.load(path))}
  (path / 'reference.json').write_text(json.dumps(record, indent=1) + '\n')
  print(json.dumps(record))


if __name__ == '__main__':
  app.run(main)
