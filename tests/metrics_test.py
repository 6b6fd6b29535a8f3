"""Tests for colorjax.metrics against hand-computed values on tiny arrays."""

import math

import numpy as np
import pytest
import skimage.data
import skimage.metrics

from colorjax import metrics


def test_psnr_of_known_mse():
  gt = np.zeros((4, 4, 3), np.uint8)
  assert metrics.psnr(gt, gt + 5) == pytest.approx(20 * math.log10(255 / 5))  # MSE 25
  pred = gt.copy()
  pred[1, 2, 0] = 16  # MSE = 256 / 48
  assert metrics.psnr(gt, pred) == pytest.approx(10 * math.log10(255**2 * 48 / 256))
  assert metrics.psnr(gt, gt) == math.inf
  # uint8 wrap-around must not happen: 0 vs 255 is an error of 255 -> 0 dB.
  assert metrics.psnr(gt, gt + 255) == pytest.approx(0.0)


def test_ssim_is_skimages():
  gt = skimage.data.astronaut()[:64, :64]
  pred = np.clip(gt.astype(int) + np.random.RandomState(0).randint(-20, 20, gt.shape), 0, 255)
  pred = pred.astype(np.uint8)
  expected = skimage.metrics.structural_similarity(gt, pred, channel_axis=-1, data_range=255)
  assert metrics.ssim(gt, pred) == pytest.approx(expected)
  assert metrics.ssim(gt, gt) == pytest.approx(1.0)
  assert 0 < metrics.ssim(gt, pred) < 1


def test_colorfulness_of_known_images():
  # One red and one black pixel: rg = (255, 0), yb = (127.5, 0); std = mean = half of each.
  image = np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8)
  sigma = math.hypot(127.5, 63.75)
  assert metrics.colorfulness(image) == pytest.approx(sigma + 0.3 * sigma)
  assert metrics.colorfulness(np.full((3, 5, 3), 77, np.uint8)) == 0.0
  # A uniform blue image: rg = 0, yb = -200 everywhere -> no spread, only the mean term.
  blue = np.zeros((2, 2, 3), np.uint8)
  blue[..., 2] = 200
  assert metrics.colorfulness(blue) == pytest.approx(0.3 * 200)


def test_auc_of_constant_error():
  gt = np.zeros((5, 6, 2))
  assert metrics.auc(gt, gt) == pytest.approx(100.0)
  # Error 5 everywhere (a 3-4-5 shift): thresholds 5..150 count, 146 of 151.
  assert metrics.auc(gt + [3.0, 4.0], gt) == pytest.approx(100 * 146 / 151)
  assert metrics.auc(gt + [200.0, 0.0], gt) == 0.0
  # Half the pixels exact, half off by 10: (151 + 141) / 2 of 151.
  pred = gt.copy()
  pred[:, :3, 0] = 10.0
  assert metrics.auc(pred, gt) == pytest.approx(100 * (151 + 141) / 2 / 151)


def test_bias_chroma_and_mse_of_constant_shift():
  gt = np.random.RandomState(0).uniform(-50, 50, (4, 4, 2))
  pred = gt + [3.0, -4.0]
  np.testing.assert_allclose(metrics.ab_bias(pred, gt), [3.0, -4.0])
  assert metrics.mse_ab(gt + 12.8, gt) == pytest.approx(0.01)
  assert metrics.chroma(np.zeros((2, 2, 2)) + [3.0, 4.0]) == pytest.approx(5.0)


def test_summarize_means_and_ratios():
  per_image = [
    {
      'psnr': 20.0,
      'ssim': 0.5,
      'mse_ab': 0.01,
      'colorfulness': 10.0,
      'colorfulness_gt': 20.0,
      'auc': 90.0,
      'chroma': 4.0,
      'chroma_gt': 8.0,
      'ab_bias': [1.0, 2.0],
    },
    {
      'psnr': math.inf,
      'ssim': 1.0,
      'mse_ab': 0.03,
      'colorfulness': 20.0,
      'colorfulness_gt': 40.0,
      'auc': 100.0,
      'chroma': 2.0,
      'chroma_gt': 12.0,
      'ab_bias': [3.0, -2.0],
    },
  ]
  s = metrics.summarize(per_image)
  assert s['psnr'] == 20.0 and s['ssim'] == 0.75 and s['mse_ab'] == pytest.approx(0.02)
  assert s['colorfulness_ratio'] == pytest.approx(0.5)
  assert s['chroma_ratio'] == pytest.approx(3.0 / 10.0)
  assert s['ab_bias'] == [2.0, 0.0] and s['auc'] == 95.0
  with pytest.raises(ValueError, match='no images'):
    metrics.summarize([])


def test_image_metrics_keys_and_bad_inputs():
  gt = skimage.data.chelsea()[:32, :32]
  ab = np.zeros((32, 32, 2))
  m = metrics.image_metrics(gt, gt, ab, ab)
  assert set(m) == {
    'psnr',
    'ssim',
    'mse_ab',
    'colorfulness',
    'colorfulness_gt',
    'auc',
    'chroma',
    'chroma_gt',
    'ab_bias',
  }
  with pytest.raises(ValueError, match='uint8'):
    metrics.psnr(gt.astype(np.float32), gt)
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.psnr(gt, gt[:16])
  with pytest.raises(ValueError, match=r'\(\.\.\., 2\)'):
    metrics.auc(np.zeros((4, 3)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match='shapes differ'):
    metrics.ab_bias(ab, ab[:4])
