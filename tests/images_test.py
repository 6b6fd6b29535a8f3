"""data_prep.images: JPEG fast path vs PIL, EXIF orientations, the Lab code table, squash."""

import io

import numpy as np
import pytest
from image_fixtures import chelsea, jpeg, pattern, upright
from PIL import Image
from skimage import color as skcolor

from colorjax import records
from data_prep import images

S = 32  # output side in these tests


def test_lab_codes_equal_converting_then_quantizing():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
  rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]] + [[1, 2, 3]] * 3
  L_q, ab_q = images.lab_codes(rgb)
  Lab = images.lab.rgb8_to_lab(rgb)
  np.testing.assert_array_equal(L_q, records.quantize_L(Lab[..., 0]))
  np.testing.assert_array_equal(ab_q, records.quantize_ab(Lab[..., 1:]))
  with pytest.raises(ValueError, match='uint8'):
    images.lab_codes(rgb.astype(np.float32))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_fast_jpeg_path_applies_every_exif_orientation(orientation):
  photo = pattern(60, 90, 12)
  exif = Image.Exif()
  exif[0x0112] = orientation
  got = images.load_rgb8(jpeg(photo, exif=exif.tobytes()), S, min_size=8)
  plain = Image.fromarray(images.load_rgb8(jpeg(photo), S, min_size=8))
  np.testing.assert_array_equal(got, upright(plain, orientation))


@pytest.mark.parametrize('resize', ['crop', 'squash'])
def test_fast_jpeg_path_agrees_with_pil_on_a_photo(resize):
  """The fast path (M/8 DCT scaling, crop to whole pixels, OpenCV bicubic) vs PIL's antialiased
  bicubic from its own draft decode: on average within about one Lab unit."""
  photo = jpeg(chelsea())  # 451 x 300: decoded at 4/8 scale for 128, at 1/8 for 32 and 16
  for size in (128, 32, 16):  # 16: the remaining 38 -> 16 step goes through PIL
    fast = images.load_rgb8(photo, size, resize=resize)
    img = Image.open(io.BytesIO(photo))
    img.draft('RGB', (size, size))
    box = tuple(float(int(b)) for b in images.resize_box(img.size, resize))  # whole pixels
    pil = np.asarray(img.convert('RGB').resize((size, size), Image.Resampling.BICUBIC, box=box))
    diff = np.abs(skcolor.rgb2lab(fast) - skcolor.rgb2lab(pil))
    assert diff[..., 0].mean() < 1.5 and diff[..., 1:].mean() < 1.0, (size, diff.mean((0, 1)))


def test_squash_resizes_the_whole_image():
  rgb = pattern(40, 80, 3)
  squashed = images.load_rgb8(rgb, 16, resize='squash', min_size=8)
  ref = Image.fromarray(rgb).resize((16, 16), Image.Resampling.BICUBIC)
  np.testing.assert_array_equal(squashed, np.asarray(ref))
  with pytest.raises(images.Skip, match='too_small'):
    images.load_rgb8(rgb, 16, min_size=41)
  with pytest.raises(images.Skip, match='decompression_bomb'):
    images.load_rgb8(jpeg(rgb), 16, min_size=8, max_pixels=40 * 79)
