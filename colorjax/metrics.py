"""Colorization metrics per image (NumPy) as METRICS.md defines them: PSNR, SSIM, colorfulness..."""

import numpy as np
import skimage.metrics

from colorjax import constants

AUC_MAX_THRESHOLD = 150  # Zhang et al. 2016: thresholds 0, 1, ..., 150 in ab units


def _same_shape(a, b, what):
  if a.shape != b.shape:
    raise ValueError(f'{what}: shapes differ, {a.shape} vs {b.shape}')


def _rgb8(image, name):
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'{name} must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
  return image


def _ab(ab, name):
  ab = np.asarray(ab, np.float64)
  if ab.ndim < 1 or ab.shape[-1] != 2:
    raise ValueError(f'{name} must have shape (..., 2), got {ab.shape}')
  return ab


def psnr(gt_u8, pred_u8):
  """20 log10(255 / sqrt(MSE)) over all pixels and channels of uint8 RGB images (inf if equal)."""
  gt, pred = _rgb8(gt_u8, 'gt'), _rgb8(pred_u8, 'pred')
  _same_shape(gt, pred, 'psnr')
  mse = np.mean((gt.astype(np.float64) - pred.astype(np.float64)) ** 2)
  return float('inf') if mse == 0 else float(20 * np.log10(255.0 / np.sqrt(mse)))


def ssim(gt_u8, pred_u8):
  """scikit-image's SSIM on uint8 RGB (channel_axis=-1, data_range=255)."""
  gt, pred = _rgb8(gt_u8, 'gt'), _rgb8(pred_u8, 'pred')
  _same_shape(gt, pred, 'ssim')
  return float(skimage.metrics.structural_similarity(gt, pred, channel_axis=-1, data_range=255))


def colorfulness(rgb_u8):
  """Hasler and Suesstrunk (2003) on 0-255 RGB: sigma_rgyb + 0.3 mu_rgyb (population std)."""
  rgb = _rgb8(rgb_u8, 'rgb').astype(np.float64)
  rg = rgb[..., 0] - rgb[..., 1]
  yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
  return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def mse_ab(ab_pred, ab_gt):
  """The report's loss: mean squared error of ab / AB_SCALE."""
  pred, gt = _ab(ab_pred, 'ab_pred'), _ab(ab_gt, 'ab_gt')
  _same_shape(pred, gt, 'mse_ab')
  return float(np.mean(((pred - gt) / constants.AB_SCALE) ** 2))


def auc(ab_pred, ab_gt, max_threshold=AUC_MAX_THRESHOLD):
  """Mean over t = 0..max_threshold of the share of pixels with ab error <= t, in percent."""
  pred, gt = _ab(ab_pred, 'ab_pred'), _ab(ab_gt, 'ab_gt')
  _same_shape(pred, gt, 'auc')
  err = np.sqrt(np.sum((pred - gt) ** 2, axis=-1)).ravel()
  thresholds = np.arange(max_threshold + 1)
  counts = np.searchsorted(np.sort(err), thresholds, side='right')  # pixels with err <= t
  return float(100.0 * np.mean(counts / err.size))


def chroma(ab):
  """Mean chroma sqrt(a^2 + b^2) over pixels."""
  ab = _ab(ab, 'ab')
  return float(np.mean(np.sqrt(np.sum(ab**2, axis=-1))))


def ab_bias(ab_pred, ab_gt):
  """The tint: mean over pixels of (a_pred - a_gt, b_pred - b_gt), a 2-vector."""
  pred, gt = _ab(ab_pred, 'ab_pred'), _ab(ab_gt, 'ab_gt')
  _same_shape(pred, gt, 'ab_bias')
  return (pred - gt).reshape(-1, 2).mean(axis=0).tolist()


def image_metrics(gt_u8, pred_u8, ab_pred, ab_gt):
  """Every per-image metric of one prediction (RGB uint8 images, ab in Lab units) as a dict."""
  return {
    'psnr': psnr(gt_u8, pred_u8),
    'ssim': ssim(gt_u8, pred_u8),
    'mse_ab': mse_ab(ab_pred, ab_gt),
    'colorfulness': colorfulness(pred_u8),
    'colorfulness_gt': colorfulness(gt_u8),
    'auc': auc(ab_pred, ab_gt),
    'chroma': chroma(ab_pred),
    'chroma_gt': chroma(ab_gt),
    'ab_bias': ab_bias(ab_pred, ab_gt),
  }


def summarize(per_image):
  """Means over images of image_metrics dicts, plus colorfulness_ratio and chroma_ratio.

  PSNR is the mean of per-image PSNRs (inf for an exact image is left out of the mean); the two
  ratios are ratios of the means; ab_bias is the mean 2-vector (images have equal sizes).
  """
  if not per_image:
    raise ValueError('no images to summarize')
  mean = lambda key: float(np.mean([m[key] for m in per_image]))
  finite_psnr = [m['psnr'] for m in per_image if np.isfinite(m['psnr'])]
  cf, cf_gt = mean('colorfulness'), mean('colorfulness_gt')
  ch, ch_gt = mean('chroma'), mean('chroma_gt')
  return {
    'psnr': float(np.mean(finite_psnr)) if finite_psnr else float('inf'),
    'ssim': mean('ssim'),
    'mse_ab': mean('mse_ab'),
    'colorfulness': cf,
    'colorfulness_gt': cf_gt,
    'colorfulness_ratio': cf / cf_gt if cf_gt > 0 else float('nan'),
    'auc': mean('auc'),
    'chroma_ratio': ch / ch_gt if ch_gt > 0 else float('nan'),
    'ab_bias': np.mean([m['ab_bias'] for m in per_image], axis=0).tolist(),
  }
