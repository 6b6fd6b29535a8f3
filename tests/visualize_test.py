"""Figure layout: sizes, tile placement, colors through Lab."""

import numpy as np
import pytest

from colorjax import lab, visualize


def test_lab_to_uint8_and_gray():
  rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
  lab_img = lab.rgb8_to_lab(rgb)
  back = visualize.lab_to_uint8(lab_img[..., :1], lab_img[..., 1:])
  assert np.abs(back.astype(int) - rgb).max() <= 1
  gray = visualize.gray_uint8(lab_img[..., 0])
  assert gray.shape == (5, 6, 3)
  # zero chroma -> equal channels (neutral gray) up to rounding
  assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 1


def test_comparison_grid_places_tiles():
  red = np.zeros((10, 20, 3), np.uint8)
  red[..., 0] = 255
  blue = np.zeros((5, 5), np.uint8)  # grayscale, resized to the tile height
  grid = visualize.comparison_grid([[red, blue], [red, red]], titles=['A', 'B'], pad=2)
  top = visualize._TITLE_HEIGHT
  assert grid.shape == (top + 2 * 12 + 2, 2 + 20 + 2 + 20 + 2, 3)
  np.testing.assert_array_equal(grid[top + 2, 2], [255, 0, 0])
  np.testing.assert_array_equal(grid[top + 2, 24], [0, 0, 0])  # the resized black tile
  with pytest.raises(ValueError):
    visualize.comparison_grid([])
