"""Tests colorjax.hints against NumPy references of ideepcolor's protocol and scikit-image's Lab."""

import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color

from colorjax import hints


def _ab(shape, seed=0):
  return np.random.RandomState(seed).uniform(-100, 100, shape + (2,)).astype(np.float32)


def _corner_pmf(n, patch, sigma_scale):
  """Exact pmf of clip(floor(N((n - P + 1) / 2, (n - P + 1) s)), 0, n - P) over 0..n - P."""
  extent = n - patch + 1
  mu, sigma = extent / 2, extent * sigma_scale
  cdf = lambda t: 0.5 * (1 + math.erf((t - mu) / (sigma * math.sqrt(2))))
  edges = [-math.inf] + list(range(1, extent)) + [math.inf]
  return np.array([cdf(b) - cdf(a) for a, b in zip(edges[:-1], edges[1:])])


def _numpy_paint(ab, count, top_left, size):
  """ideepcolor's loop: patch k gets the mean ab of its pixels, later patches overwrite."""
  hint, mask = np.zeros_like(ab), np.zeros(ab.shape[:-1] + (1,), np.float32)
  for b in range(ab.shape[0]):
    for k in range(count[b]):
      (r, c), p = top_left[b, k], size[b, k]
      hint[b, r : r + p, c : c + p] = ab[b, r : r + p, c : c + p].mean(axis=(0, 1))
      mask[b, r : r + p, c : c + p] = 1
  return hint, mask


_points = jax.jit(hints.sample_points, static_argnums=(1, 2))
_sample = jax.jit(hints.sample_hints, static_argnums=2)


def test_config_validation_and_truncation():
  config = hints.HintConfig()
  assert config.truncated_prob == pytest.approx(0.875**33)  # ~1.2%
  assert config.mean_points == pytest.approx(7 * (1 - 0.875**32))
  for bad in (
    dict(continue_prob=1.0),
    dict(max_points=0),
    dict(min_patch=0),
    dict(min_patch=5, max_patch=4),
    dict(sigma_scale=0.0),
  ):
    with pytest.raises(ValueError):
      hints.HintConfig(**bad)


def test_number_of_points_is_truncated_geometric():
  config = hints.HintConfig()
  count = np.asarray(_points(jax.random.key(0), (4000, 16, 16), config).count)
  p, cap, n = config.continue_prob, config.max_points, count.size
  pmf = (1 - p) * p ** np.arange(cap + 1.0)
  pmf[cap] = p**cap  # the truncated tail lands on the cap
  assert pmf.sum() == pytest.approx(1.0)
  freq = np.bincount(count, minlength=cap + 1) / n
  assert count.min() >= 0 and count.max() <= cap
  for k in (0, 1, 2, 7, cap):  # P(0) = 1/8, P(k) = p^k / 8, P(cap) = p^cap
    assert abs(freq[k] - pmf[k]) < 4 * math.sqrt(pmf[k] * (1 - pmf[k]) / n), k
  mean = np.sum(np.arange(cap + 1) * pmf)
  std = math.sqrt(np.sum((np.arange(cap + 1) - mean) ** 2 * pmf))
  assert mean == pytest.approx(config.mean_points)
  assert abs(count.mean() - mean) < 4 * std / math.sqrt(n)


def test_patch_sides_uniform_and_corners_gaussian():
  config = hints.HintConfig()
  height, width = 40, 56
  points = jax.tree.map(np.asarray, _points(jax.random.key(1), (4000, height, width), config))
  active = np.arange(config.max_points)[None] < points.count[:, None]
  size, top_left = points.size[active], points.top_left[active]
  freq = np.bincount(size, minlength=10)[1:] / size.size
  assert size.min() == 1 and size.max() == 9
  np.testing.assert_allclose(freq, 1 / 9, atol=4 * math.sqrt(1 / 9 * 8 / 9 / size.size))
  for axis, n in ((0, height), (1, width)):  # all sizes pooled: the mean to ~0.05 sigma
    z = np.zeros(size.size)
    for patch in range(1, 10):
      pmf = _corner_pmf(n, patch, config.sigma_scale)
      mean = np.sum(np.arange(pmf.size) * pmf)
      std = math.sqrt(np.sum((np.arange(pmf.size) - mean) ** 2 * pmf))
      z[size == patch] = (top_left[size == patch, axis] - mean) / std
    assert abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.std() - 1) < 0.03
  for patch in (1, 5, 9):
    for axis, n in ((0, height), (1, width)):
      corner = top_left[size == patch, axis]
      assert corner.min() >= 0 and corner.max() <= n - patch
      pmf = _corner_pmf(n, patch, config.sigma_scale)
      mean = np.sum(np.arange(pmf.size) * pmf)
      std = math.sqrt(np.sum((np.arange(pmf.size) - mean) ** 2 * pmf))
      # The patch's center averages about n / 2; sigma is (n - P + 1) / 4 before clipping.
      assert abs(mean + patch / 2 - n / 2) < 0.1
      assert abs(corner.mean() - mean) < 4 * std / math.sqrt(corner.size)
      assert abs(corner.std() - std) < 0.05 * std


def test_sigma_scale_sets_the_spread():
  config = hints.HintConfig(sigma_scale=0.1)
  points = hints.sample_points_at(jax.random.key(2), (2000, 64, 64), 4, 5, config)
  rows = np.asarray(points.top_left)[..., 0].ravel()
  pmf = _corner_pmf(64, 5, 0.1)
  std = math.sqrt(np.sum((np.arange(pmf.size) - np.sum(np.arange(pmf.size) * pmf)) ** 2 * pmf))
  assert std == pytest.approx(6.0, abs=0.1)  # (64 - 5 + 1) * 0.1, barely clipped
  assert abs(rows.std() - std) < 0.05 * std
  assert abs(rows.mean() - np.sum(np.arange(pmf.size) * pmf)) < 4 * std / math.sqrt(rows.size)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_hints_equal_patch_means_and_mask_is_union_of_patches(seed):
  config = hints.HintConfig(continue_prob=0.95, max_points=12)  # dense: many overlaps
  ab = _ab((4, 16, 20), seed)
  rng = jax.random.key(seed)
  points = jax.tree.map(np.asarray, _points(rng, ab.shape, config))
  hint, mask = _sample(rng, ab, config)
  ref_hint, ref_mask = _numpy_paint(ab, *points)
  np.testing.assert_array_equal(np.asarray(mask), ref_mask)
  np.testing.assert_allclose(np.asarray(hint), ref_hint, atol=1e-4)
  assert ref_mask.sum() > 0


def test_overlaps_keep_the_later_patch():
  ab = _ab((1, 12, 12))
  points = hints.Points(
    count=jnp.array([2]), top_left=jnp.array([[[2, 2], [4, 4]]]), size=jnp.array([[5, 5]])
  )
  hint, mask = hints.paint(ab, points, 9)
  np.testing.assert_allclose(np.asarray(hint)[0, 5, 5], ab[0, 4:9, 4:9].mean((0, 1)), atol=1e-5)
  np.testing.assert_allclose(np.asarray(hint)[0, 2, 2], ab[0, 2:7, 2:7].mean((0, 1)), atol=1e-5)
  assert np.asarray(mask).sum() == 25 + 25 - 9


def test_same_rng_same_hints_and_zero_off_mask():
  config = hints.HintConfig()
  sample = functools.partial(_sample, config=config)
  ab = _ab((8, 24, 24))
  hint0, mask0 = (np.asarray(t) for t in sample(jax.random.key(3), ab))
  hint1, mask1 = (np.asarray(t) for t in sample(jax.random.key(3), ab))
  hint2, mask2 = (np.asarray(t) for t in sample(jax.random.key(4), ab))
  np.testing.assert_array_equal(hint0, hint1)
  np.testing.assert_array_equal(mask0, mask1)
  assert not np.array_equal(mask0, mask2)
  assert set(np.unique(mask0)) <= {0.0, 1.0} and mask0.sum() > 0
  assert np.all(hint0[mask0[..., 0] == 0] == 0)
  assert np.all(np.abs(hint0[mask0[..., 0] == 1]) > 0)  # random ab: means are never exactly 0


def test_evaluation_hints_fixed_count_and_size_nested_and_reproducible():
  ab = _ab((3, 32, 32))
  rng = jax.random.key(5)
  at = jax.jit(hints.sample_hints_at, static_argnums=(2, 3))
  points = jax.tree.map(np.asarray, hints.sample_points_at(rng, ab.shape, 10, 6))
  np.testing.assert_array_equal(points.count, 10)
  np.testing.assert_array_equal(points.size, 6)
  hint, mask = at(rng, ab, 10, 6)
  ref_hint, ref_mask = _numpy_paint(ab, *points)
  np.testing.assert_array_equal(np.asarray(mask), ref_mask)
  np.testing.assert_allclose(np.asarray(hint), ref_hint, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(at(rng, ab, 10, 6)[0]), np.asarray(hint))
  fewer = hints.sample_points_at(rng, ab.shape, 4, 6)
  np.testing.assert_array_equal(np.asarray(fewer.top_left), points.top_left[:, :4])
  zero_hint, zero_mask = at(rng, ab, 0, 6)
  assert not np.any(np.asarray(zero_hint)) and not np.any(np.asarray(zero_mask))
  with pytest.raises(ValueError, match='patch side'):
    hints.sample_hints_at(rng, ab, 3, 40)


def test_scaled_hints_network_inputs_and_no_hints():
  L = np.full((2, 4, 4, 1), 50.0, np.float32)
  hint_ab, mask = hints.no_hints(L)
  assert hint_ab.shape == (2, 4, 4, 2) and mask.shape == (2, 4, 4, 1)
  assert hints.no_hints((3, 5, 1))[0].shape == (3, 5, 2)
  hint_ab = hint_ab.at[0, 1, 1].set(jnp.array([55.0, -110.0]))
  mask = mask.at[0, 1, 1].set(1.0)
  scaled = np.asarray(hints.scaled_hints(hint_ab, mask))
  np.testing.assert_allclose(scaled[0, 1, 1], [0.5, -1.0, 0.5])
  np.testing.assert_allclose(scaled[0, 0, 0], [0.0, 0.0, -0.5])
  x = np.asarray(hints.network_inputs(L, hint_ab, mask))
  np.testing.assert_allclose(x[0, 1, 1], [0.5, 0.5, -1.0, 0.5])
  with pytest.raises(ValueError):
    hints.no_hints((2, 4, 4, 2))


def test_rasterize_on_a_non_square_photo():
  size, width, height = 64, 300, 120
  hint = hints.Hint(x=250, y=30, color='#c0392b')
  hint_ab, mask = hints.rasterize([hint], height, width, size)
  assert hint_ab.shape == (size, size, 2) and mask.shape == (size, size, 1)
  rows, cols = np.nonzero(mask[..., 0])
  assert len(rows) == 9  # the default: 3x3 network pixels
  # Pixel centers: the photo pixel's center 250.5 maps to 250.5 * 64 / 300 = 53.44.
  assert abs(cols.mean() + 0.5 - 250.5 * size / width) <= 0.5
  assert abs(rows.mean() + 0.5 - 30.5 * size / height) <= 0.5
  assert (round(cols.mean()), round(rows.mean())) == (53, 16)
  expected = skimage.color.rgb2lab(np.array([[[0xC0, 0x39, 0x2B]]], np.float64) / 255)[0, 0, 1:]
  np.testing.assert_allclose(hint_ab[rows, cols], np.tile(expected, (9, 1)), atol=0.01)
  assert not np.any(hint_ab[mask[..., 0] == 0])


def test_rasterize_radius_edges_and_order():
  size, width, height = 64, 300, 120
  # radius 10 photo pixels: k = floor(10 * 64 / 300) = 2 across, floor(10 * 64 / 120) = 5 down.
  _, mask = hints.rasterize([hints.Hint(150, 60, ab=(1.0, 2.0), radius=10)], height, width, size)
  rows, cols = np.nonzero(mask[..., 0])
  assert (np.ptp(cols) + 1, np.ptp(rows) + 1) == (5, 11)
  _, mask = hints.rasterize([hints.Hint(150, 60, ab=(1.0, 2.0), radius=0)], height, width, size)
  assert mask.sum() == 1
  _, mask = hints.rasterize([hints.Hint(0, 0, ab=(1.0, 2.0))], height, width, size)
  assert mask.sum() == 4 and mask[0, 0, 0] == 1  # clipped at the corner
  two = [hints.Hint(100, 50, ab=(10.0, 20.0)), hints.Hint(104, 50, ab=(-30.0, 40.0))]
  hint_ab, mask = hints.rasterize(two, height, width, size)
  col = int(104.5 * size / width)
  np.testing.assert_array_equal(hint_ab[int(50.5 * size / height), col - 1], [-30.0, 40.0])
  assert mask.sum() == 9 + 9 - 3 * 2
  for x, y in ((300, 10), (-1, 10), (10, 119.5)):
    bad = [hints.Hint(5, 5, ab=(0.0, 0.0)), hints.Hint(x, y, ab=(0.0, 0.0))]
    with pytest.raises(ValueError, match=rf'hint 1 at \(x={x:g}, y={y:g}\)'):
      hints.rasterize(bad, height, width, size)


GOOD = {'x': 1, 'y': 2, 'color': '#00ff00'}


@pytest.mark.parametrize(
  'item, field',
  [
    ({'x': 1, 'y': 2, 'color': '#000000', 'size': 3}, 'size'),
    ({'x': 1, 'y': 2, 'color': '#000000', 'ab': [0, 0]}, 'ab'),
    ({'x': 1, 'y': 2}, 'color'),
    ({'x': 1, 'y': 2, 'color': '#12345'}, 'color'),
    ({'x': 1, 'y': 2, 'color': '#gggggg'}, 'color'),
    ({'x': 1, 'y': 2, 'color': 'red'}, 'color'),
    ({'x': 1, 'y': 2, 'color': 7}, 'color'),
    ({'x': 1, 'y': 2, 'ab': [120.0, 0.0]}, 'ab'),
    ({'x': 1, 'y': 2, 'ab': [0.0]}, 'ab'),
    ({'x': 1, 'y': 2, 'ab': [0.0, 'a']}, 'ab'),
    ({'x': 'a', 'y': 2, 'color': '#000000'}, 'x'),
    ({'x': True, 'y': 2, 'color': '#000000'}, 'x'),
    ({'x': 1, 'y': None, 'color': '#000000'}, 'y'),
    ({'x': 1, 'y': float('nan'), 'color': '#000000'}, 'y'),
    ({'y': 2, 'color': '#000000'}, 'x'),
    ({'x': 1, 'y': 2, 'color': '#000000', 'radius': -1}, 'radius'),
    ({'x': 1, 'y': 2, 'color': '#000000', 'radius': '3'}, 'radius'),
  ],
)
def test_parse_errors_name_the_hint_and_field(item, field):
  with pytest.raises(ValueError) as info:
    hints.parse_hints({'hints': [GOOD, item]})
  message = str(info.value)
  assert 'hint 1' in message and repr(field) in message and '\n' not in message


def test_parse_rejects_bad_documents():
  for doc in ([GOOD], {'hints': [GOOD], 'extra': 1}, {'hints': GOOD}, {'hints': [[1, 2]]}):
    with pytest.raises(ValueError):
      hints.parse_hints(doc)


def test_dump_parse_round_trip_and_files(tmp_path):
  original = [
    hints.Hint(120, 45, color='#c0392b', radius=4),
    hints.Hint(10.5, 20, ab=(40.0, 25.0)),
    hints.Hint(0, 0, color='#FFFFFF', radius=0),
  ]
  doc = json.loads(json.dumps(hints.dump_hints(original)))
  assert doc['hints'][1] == {'x': 10.5, 'y': 20, 'ab': [40.0, 25.0]}
  assert hints.parse_hints(doc) == original
  numpy_scalars = [
    hints.Hint(np.int64(3), np.float32(2.5), ab=(np.float32(1), 0), radius=np.int8(2))
  ]
  assert json.loads(json.dumps(hints.dump_hints(numpy_scalars)))['hints'] == [
    {'x': 3, 'y': 2.5, 'ab': [1.0, 0.0], 'radius': 2}
  ]
  path = tmp_path / 'photo.hints.json'
  path.write_text(json.dumps(doc))
  assert hints.load_hints(path, photo_size=(121, 46)) == original
  with pytest.raises(ValueError, match=r'hint 0 at \(x=120, y=45\) is outside the 120x46'):
    hints.load_hints(path, photo_size=(120, 46))
  with pytest.raises(FileNotFoundError, match='nope.json'):
    hints.load_hints(tmp_path / 'nope.json')
  path.write_text('{"hints": [\n  {"x": 1,, }]}')
  with pytest.raises(ValueError, match='line 2 column 11'):
    hints.load_hints(path)
  path.write_text('{"hints": [{"x": 1, "y": 2}]}')
  with pytest.raises(ValueError, match=r"photo.hints.json: hint 0: .*'color'"):
    hints.load_hints(path)


def test_sidecar_path(tmp_path):
  assert hints.sidecar_path(tmp_path / 'a' / 'cat.jpg') == tmp_path / 'a' / 'cat.hints.json'
  assert hints.sidecar_path('dir/x.y.png').as_posix() == 'dir/x.y.hints.json'


def test_training_batch_at_128_invariants_and_time(record_property):
  """Batch 16 at 128x128 (the CPU train step's): invariants checked, jitted time recorded."""
  config = hints.HintConfig()
  sample = jax.jit(functools.partial(hints.sample_hints, config=config))
  ab = jnp.asarray(_ab((16, 128, 128)))
  jax.block_until_ready(sample(jax.random.key(0), ab))
  times = []
  for i in range(10):
    start = time.perf_counter()
    hint, mask = jax.block_until_ready(sample(jax.random.key(i), ab))
    times.append(time.perf_counter() - start)
  points = _points(jax.random.key(9), ab.shape, config)
  area = np.asarray(mask).sum(axis=(1, 2, 3))
  assert np.all(area <= np.sum(np.where(np.arange(32) < points.count[:, None], 81, 0), 1))
  assert np.all((area > 0) == (np.asarray(points.count) > 0))
  assert not np.any(np.asarray(hint)[np.asarray(mask)[..., 0] == 0])
  record_property('sample_hints_ms', 1e3 * float(np.median(times)))
  print(f'sample_hints 16x128x128: {1e3 * np.median(times):.2f} ms (median of 10)')
