"""colorjax.propagation.spread against a NumPy float64 reference, and what it must do."""

import numpy as np
import pytest

from colorjax import propagation as P


def reference(L, ab, hint_ab, mask):
  """The same joint-bilateral spreading, pixel loops over cells in float64 (one image): each pixel
  the weighted mean of its own color (weight PRIOR) and the hint cells' mean colors."""
  H, W = L.shape
  cell = -(-max(H, W) // P.GRID)
  cells = {}
  for y in range(H):
    for x in range(W):
      if mask[y, x]:
        c = cells.setdefault((y // cell, x // cell), [])
        c.append((hint_ab[y, x], L[y, x], ab[y, x], (y + 0.5, x + 0.5)))
  kept = sorted(cells.values(), key=len, reverse=True)[: P.MAX_CELLS]
  out = ab.astype(np.float64).copy()
  for y in range(H):
    for x in range(W):
      num, den = P.PRIOR * ab[y, x].astype(np.float64), P.PRIOR
      for c in kept:
        h, l_, a, yx = (np.mean([e[i] for e in c], axis=0) for i in range(4))
        d = (
          np.sum((np.array([y + 0.5, x + 0.5]) - yx) ** 2) / (P.SPATIAL * max(H, W)) ** 2
          + (L[y, x] - l_) ** 2 / P.LIGHTNESS**2
          + np.sum((ab[y, x] - a) ** 2) / P.CHROMA**2
        )
        w = len(c) * np.exp(-0.5 * d)
        num, den = num + w * h, den + w
      out[y, x] = hint_ab[y, x] if mask[y, x] else num / den
  return out


def _scene(rs, H=24, W=40):
  L = np.where(np.arange(W) < W // 2, 30.0, 75.0)[None].repeat(H, 0) + rs.normal(0, 2, (H, W))
  ab = np.zeros((H, W, 2)) + rs.normal(0, 3, (H, W, 2))
  return L.astype(np.float32), ab.astype(np.float32)


def _hint(H, W, boxes, color):
  hint_ab, mask = np.zeros((H, W, 2), np.float32), np.zeros((H, W, 1), np.float32)
  for y0, x0, s in boxes:
    hint_ab[y0 : y0 + s, x0 : x0 + s] = color
    mask[y0 : y0 + s, x0 : x0 + s] = 1
  return hint_ab, mask


def test_spread_matches_the_float64_reference():
  rs = np.random.RandomState(0)
  L, ab = _scene(rs)
  hint_ab, mask = _hint(24, 40, [(3, 4, 3), (15, 30, 4), (10, 18, 5)], (40.0, -20.0))
  hint_ab[15:19, 30:34] = (-10.0, 50.0)  # a second color
  got = P.spread_jit(L[None, ..., None], ab[None], hint_ab[None], mask[None])[0]
  np.testing.assert_allclose(got, reference(L, ab, hint_ab, mask[..., 0]), atol=1e-3)


def test_no_hints_changes_nothing_and_hinted_pixels_take_their_hint():
  rs = np.random.RandomState(1)
  L, ab = _scene(rs)
  none = np.zeros((1, 24, 40, 2), np.float32), np.zeros((1, 24, 40, 1), np.float32)
  np.testing.assert_array_equal(P.spread(L[None, ..., None], ab[None], *none)[0], ab)
  hint_ab, mask = _hint(24, 40, [(5, 5, 4)], (30.0, 30.0))
  out = np.asarray(P.spread(L[None, ..., None], ab[None], hint_ab[None], mask[None])[0])
  np.testing.assert_array_equal(out[5:9, 5:9], hint_ab[5:9, 5:9])


def test_a_hint_recolors_its_side_of_an_edge_not_the_other():
  """Left half dark, right half light: a hint on the left moves the left's colors most of the way
  to it (from about 57 ab units away) and leaves the right's nearly as they were."""
  rs = np.random.RandomState(2)
  L, ab = _scene(rs)
  hint_ab, mask = _hint(24, 40, [(10, 8, 3)], (40.0, 40.0))
  out = np.asarray(P.spread(L[None, ..., None], ab[None], hint_ab[None], mask[None])[0])
  left = np.linalg.norm(out[:, :20] - (40, 40), axis=-1).mean()
  right_change = np.linalg.norm(out[:, 20:] - ab[:, 20:], axis=-1).mean()
  assert left < 19 and right_change < 4, (left, right_change)


@pytest.mark.parametrize('shape', [(32, 32), (50, 70)])
def test_any_size_and_more_hinted_cells_than_kept(shape):
  H, W = shape
  rs = np.random.RandomState(3)
  L = rs.uniform(0, 100, (1, H, W, 1)).astype(np.float32)
  ab = rs.normal(0, 20, (1, H, W, 2)).astype(np.float32)
  mask = (rs.uniform(size=(1, H, W, 1)) < 0.5).astype(np.float32)  # every cell hinted
  hint_ab = rs.normal(0, 20, (1, H, W, 2)).astype(np.float32) * mask
  out = np.asarray(P.spread_jit(L, ab, hint_ab, mask))
  assert out.shape == ab.shape and np.isfinite(out).all() and np.abs(out).max() <= 110
  np.testing.assert_array_equal(out[mask[..., 0] > 0], hint_ab[mask[..., 0] > 0])


def test_weights_on_the_halved_image_agree_with_full_resolution(monkeypatch):
  """A photo larger than WEIGHT_SIDE gets its weights on the halved image, upsampled: the same
  colors as the full computation up to the blur of one pixel at lightness edges."""
  rs = np.random.RandomState(4)
  L, ab = _scene(rs, 48, 80)
  L = np.repeat(np.repeat(L[::2, ::2], 2, 0), 2, 1)  # constant 2x2 blocks: halving loses nothing
  hint_ab, mask = _hint(48, 80, [(6, 8, 6), (30, 60, 6)], (40.0, -20.0))
  args = (L[None, ..., None], ab[None], hint_ab[None], mask[None])
  monkeypatch.setattr(P, 'WEIGHT_SIDE', 80)
  assert P._halvings(48, 80) == 0
  full = np.asarray(P.spread(*args)[0])
  monkeypatch.setattr(P, 'WEIGHT_SIDE', 40)
  assert P._halvings(48, 80) == 1 and P._halvings(47, 80) == 0
  halved = np.asarray(P.spread(*args)[0])
  moved = np.linalg.norm(full - ab, axis=-1)
  diff = np.linalg.norm(halved - full, axis=-1)
  assert moved.mean() > 10 and diff.mean() < 0.1 * moved.mean(), (moved.mean(), diff.mean())
  np.testing.assert_array_equal(halved[mask[..., 0] > 0], hint_ab[mask[..., 0] > 0])
