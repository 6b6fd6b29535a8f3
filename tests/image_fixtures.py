"""Test helpers: small synthetic photos, JPEG bytes, EXIF orientations and a real sample photo."""

import io

import numpy as np
from PIL import Image


def photo_codes(size, names=('astronaut', 'chelsea', 'coffee', 'rocket')):
  """A batch of scikit-image's photos squashed to size x size, as records' 8-bit codes:
  {'L', 'ab', 'index'} (what the input pipeline feeds a train step)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top

  from colorjax import lab, records  # pylint: disable=g-import-not-at-top

  L, ab = [], []
  for name in names:
    rgb = skimage.transform.resize(
      getattr(skimage.data, name)()[..., :3], (size, size), anti_aliasing=True
    ).astype(np.float32)
    Lab = lab.rgb_to_lab(rgb)
    L.append(records.quantize_L(Lab[..., :1]))
    ab.append(records.quantize_ab(Lab[..., 1:]))
  return {'L': np.stack(L), 'ab': np.stack(ab), 'index': np.arange(len(names), dtype=np.int32)}


def pattern(h, w, seed):
  """A smooth, colorful, asymmetric uint8 image (compresses well as JPEG)."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  rng = np.random.default_rng(seed)
  p = rng.uniform(1, 4, 3)
  rgb = np.stack([x, y * x, 0.5 + 0.5 * np.sin(p[2] * 6 * (x + 2 * y))], -1) ** p[:, None, None].T
  return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def jpeg(arr, **kw):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, 'JPEG', quality=95, **kw)
  return buf.getvalue()


def upright(img, orientation):
  """PIL image -> uint8 array turned upright for EXIF orientation 1-8 (exif_transpose's map)."""
  method = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
  }.get(orientation)
  return np.asarray(img if method is None else img.transpose(method))


def chelsea():
  import skimage.data  # pylint: disable=g-import-not-at-top

  return skimage.data.chelsea()
