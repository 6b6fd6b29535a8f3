"""The record format: round trip, stated error bound, corrupt input."""

import numpy as np
import pytest

import colorjax
from colorjax import records


def test_round_trip_within_stated_bound():
  rng = np.random.default_rng(0)
  L = rng.uniform(0, 100, (13, 17, 1)).astype(np.float32)
  ab = rng.uniform(-110, 110, (13, 17, 2)).astype(np.float32)
  ex = colorjax.decode_example(colorjax.encode_example(L, ab, 'train2017/0001.jpg'))
  assert ex['id'] == 'train2017/0001.jpg'
  assert ex['L'].shape == (13, 17, 1) and ex['L'].dtype == np.float32
  assert ex['ab'].shape == (13, 17, 2) and ex['ab'].dtype == np.float32
  assert np.abs(ex['L'] - L).max() <= records.L_MAX_ERROR + 1e-5
  assert np.abs(ex['ab'] - ab).max() <= records.AB_MAX_ERROR + 1e-5
  # The bound is tight: quantizing the worst-case values reaches it.
  assert records.L_MAX_ERROR == pytest.approx(100 / 510)
  assert records.AB_MAX_ERROR == 0.5


def test_compact_and_deterministic():
  L = np.full((8, 8), 50.0)
  ab = np.zeros((8, 8, 2))
  data = colorjax.encode_example(L, ab, 'x')
  assert len(data) == 10 + 1 + 8 * 8 * 3
  assert data == colorjax.encode_example(L[..., None], ab, 'x')


def test_unicode_id_and_extremes():
  L = np.array([[0.0, 100.0]])
  ab = np.array([[[-200.0, 200.0], [127.0, -128.0]]])
  ex = colorjax.decode_example(colorjax.encode_example(L, ab, 'фото/ü.png'))
  assert ex['id'] == 'фото/ü.png'
  np.testing.assert_allclose(ex['L'][..., 0], L)
  np.testing.assert_allclose(ex['ab'], [[[-128, 127], [127, -128]]])


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='expected L'):
    colorjax.encode_example(np.zeros((4, 4)), np.zeros((4, 5, 2)), 'x')
  data = colorjax.encode_example(np.zeros((4, 4)), np.zeros((4, 4, 2)), 'x')
  with pytest.raises(ValueError, match='magic'):
    colorjax.decode_example(b'XXXX' + data[4:])
  with pytest.raises(ValueError, match='does not hold'):
    colorjax.decode_example(data[:-1])
