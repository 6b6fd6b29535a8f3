"""Evaluates checkpoints on photos or records: metrics.json, a Table-2-style report.md, figures."""

import glob
import json
import logging
import math
import os
import pathlib

import grain
import numpy as np
import tqdm

from colorjax import (
  colorize_files,
  decoding,
  image_io,
  inference,
  input_pipeline,
  lab,
  metrics,
  records,
  visualize,
)

GRAY = 'gray'  # the all-gray baseline (ab = 0)
IMAGES_PER_FIGURE = 4
_BATCH = 8


def load_eval_images(source, image_size=256, *, max_images=None, split='val'):
  """Ground-truth images as a list of (id, L (S, S) float32, ab (S, S, 2) float32).

  Args:
    source: a folder of photos (center-cropped and resized to image_size as data_prep's default
      'crop') or a records folder holding *.array_record (its `split`, stored size kept).
    image_size: the side photos are resized to.
    max_images: keep the first N (sorted by file name / record order).
    split: the records split.
  """
  source = pathlib.Path(source)
  if not source.is_dir():
    raise FileNotFoundError(f'{source} is not a folder')
  images = []
  if glob.glob(str(source / '*.array_record')):
    data = grain.sources.ArrayRecordDataSource(input_pipeline.shard_paths(str(source), split))
    count = len(data) if max_images is None else min(max_images, len(data))
    for i in range(count):
      ex = records.decode_example(data[i])
      images.append((ex['id'], ex['L'][..., 0], ex['ab']))
    return images
  suffixes = colorize_files.IMAGE_SUFFIXES
  paths = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
  for path in paths:
    if max_images is not None and len(images) >= max_images:
      break
    try:
      rgb = image_io.load_rgb8(path, image_size, resize='crop', min_size=1)
    except image_io.Skip as e:
      logging.warning('skipping %s: %s', path, e)
      continue
    lab_img = lab.rgb8_to_lab(rgb)
    images.append((path.name, lab_img[..., 0], lab_img[..., 1:]))
  return images


def score(ids, L_NxSxS, ab_gt, ab_pred):
  """metrics.summarize of every image plus 'per_image' (with ids); also returns the RGB outputs."""
  per_image, rgb_pred = [], []
  for id_, L, gt, pred in zip(ids, L_NxSxS, ab_gt, ab_pred):
    gt_u8 = visualize.lab_to_uint8(L, gt)  # the ground truth round-tripped through Lab
    pred_u8 = visualize.lab_to_uint8(L, pred)  # predicted ab joined to the ground-truth L
    per_image.append({'id': id_, **metrics.image_metrics(gt_u8, pred_u8, pred, gt)})
    rgb_pred.append(pred_u8)
  return {**metrics.summarize(per_image), 'per_image': per_image}, rgb_pred


def report_table(results):
  """Markdown table of the means, one row per checkpoint (like the report's Table 2)."""
  header = [
    'Model',
    'MSE ab/128',
    'PSNR dB',
    'SSIM',
    'AuC %',
    'CF',
    'CF gt',
    'CF ratio',
    'Chroma ratio',
    'Tint a',
    'Tint b',
    'Tint length',
  ]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, r in results.items():
    a, b = r['ab_bias']
    row = [
      name,
      f'{r["mse_ab"]:.4f}',
      f'{r["psnr"]:.2f}',
      f'{r["ssim"]:.3f}',
      f'{r["auc"]:.1f}',
      f'{r["colorfulness"]:.1f}',
      f'{r["colorfulness_gt"]:.1f}',
      f'{r["colorfulness_ratio"]:.2f}',
      f'{r["chroma_ratio"]:.2f}',
      f'{a:+.2f}',
      f'{b:+.2f}',
      f'{math.hypot(a, b):.2f}',
    ]
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def write_figures(output_dir, gt_u8, gray_u8, preds, names):
  """PNG figures, rows Original | Grayscale | Model 1 | Model 2 ..., a few images per figure."""
  paths = []
  for start in range(0, len(gt_u8), IMAGES_PER_FIGURE):
    rows = [
      [gt_u8[i], gray_u8[i]] + [p[i] for p in preds]
      for i in range(start, min(start + IMAGES_PER_FIGURE, len(gt_u8)))
    ]
    path = pathlib.Path(output_dir) / f'figure_{start // IMAGES_PER_FIGURE:03d}.png'
    visualize.save_png(path, visualize.comparison_grid(rows, ['Original', 'Grayscale'] + names))
    paths.append(path)
  return paths


def evaluate(
  checkpoints,
  source,
  output_dir,
  *,
  image_size=256,
  max_images=None,
  split='val',
  temperature=None,
  prior_correction=None,
  chroma_gain=None,
):
  """Scores each checkpoint and the all-gray baseline; writes metrics.json, report.md, figures.

  Args:
    checkpoints: training workdirs or exported params, keyed in the outputs as given.
    source: a folder of photos or of records (see load_eval_images).
    output_dir: receives metrics.json, report.md and figures/figure_NNN.png.
    image_size: photos are center-cropped and resized to this (records keep their size).
    max_images: evaluate the first N images only.
    split: the records split.
    temperature, prior_correction, chroma_gain: the decoding of classification checkpoints
      (None: each one's model config); 'mse' checkpoints have none and ignore them.

  Returns:
    The metrics.json dict: {checkpoint or 'gray': means + 'per_image'}.
  """
  if not checkpoints:
    raise ValueError('give at least one checkpoint')
  if len(set(checkpoints)) != len(checkpoints) or GRAY in checkpoints:
    raise ValueError(f'checkpoints must be distinct and not named {GRAY!r}: {checkpoints}')
  images = load_eval_images(source, image_size, max_images=max_images, split=split)
  if not images:
    raise ValueError(f'no images to evaluate in {source}')
  ids = [i for i, _, _ in images]
  L = np.stack([L for _, L, _ in images])
  ab_gt = np.stack([ab for _, _, ab in images])
  results, preds = {}, []
  knobs = {
    'temperature': temperature,
    'prior_correction': prior_correction,
    'chroma_gain': chroma_gain,
  }
  for checkpoint in tqdm.tqdm(checkpoints, unit='checkpoint'):
    colorizer = inference.load(checkpoint)
    if colorizer.config.loss == 'classification':
      colorizer = decoding.with_decoding(colorizer, **knobs)
    ab_pred = inference.batch_predictor(colorizer, _BATCH)(L)
    results[checkpoint], rgb = score(ids, L, ab_gt, ab_pred)
    preds.append(rgb)
  results[GRAY], gray_rgb = score(ids, L, ab_gt, np.zeros_like(ab_gt))
  output_dir = pathlib.Path(output_dir)
  (output_dir / 'figures').mkdir(parents=True, exist_ok=True)
  (output_dir / 'metrics.json').write_text(json.dumps(results, indent=1))
  names = [os.path.basename(os.path.normpath(c)) or c for c in checkpoints]
  table = report_table(results)
  asked = ', '.join(f'{k} {v:g}' for k, v in knobs.items() if v is not None)
  (output_dir / 'report.md').write_text(
    f'# Evaluation on {len(images)} images from {source}\n\n'
    'Means over images; PSNR and SSIM on RGB uint8 against the ground truth round-tripped '
    'through Lab; predicted ab joined to the ground-truth L; tint = mean (a, b) error.'
    + (f' Classification checkpoints decoded with {asked}.' if asked else '')
    + '\n\n'
    f'{table}\n'
  )
  gt_rgb = [visualize.lab_to_uint8(l_, ab) for l_, ab in zip(L, ab_gt)]
  write_figures(output_dir / 'figures', gt_rgb, gray_rgb, preds, names)
  return results
