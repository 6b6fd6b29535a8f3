"""Evaluates checkpoints on photos or records: metrics.json, a Table-2-style report.md, figures."""

import glob
import json
import logging
import math
import os
import pathlib
import sys

import grain
import numpy as np
import tqdm

from colorjax import (
  colorize_files,
  decoding,
  fileutil,
  hint_curve,
  image_io,
  inference,
  input_pipeline,
  lab,
  metrics,
  records,
  visualize,
)

GRAY = 'gray'  # the all-gray baseline (ab = 0)
# metrics.json is strict JSON: a metric without a finite value is null, with '<key>_note' saying
# why. A ratio to a ground truth without color (every pixel gray after 8-bit rounding, so its
# colorfulness is 0 and its chroma float noise of ~0.003) is null, not NaN or a huge number.
NO_COLOR_NOTE = 'the ground truth has no color (its colorfulness is 0)'
EXACT_NOTE = 'predicted exactly: PSNR is infinite'
ALL_EXACT_NOTE = 'every image was predicted exactly: PSNR is infinite'
NOT_FINITE_NOTE = 'not a finite number'
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


def json_safe(result):
  """One checkpoint's score() dict with no NaN or infinity: such values are None, each with a
  '<key>_note' beside it saying why (see NO_COLOR_NOTE, EXACT_NOTE, ALL_EXACT_NOTE).

  The PSNR mean leaves out images predicted exactly (as metrics.summarize does): when some
  were, 'psnr_note' says how many; when all were, the mean is None.
  """
  out = dict(result)
  if out.get('colorfulness_gt') == 0:
    for key in ('colorfulness_ratio', 'chroma_ratio'):
      out[key], out[f'{key}_note'] = None, NO_COLOR_NOTE
  per_image, exact = [], 0
  for m in out.get('per_image', []):
    m = dict(m)
    if isinstance(m.get('psnr'), float) and math.isinf(m['psnr']):
      m['psnr'], m['psnr_note'], exact = None, EXACT_NOTE, exact + 1
    per_image.append(_finite(m))
  if 'per_image' in out:
    out['per_image'] = per_image
  if exact and exact == len(per_image):
    out['psnr'], out['psnr_note'] = None, ALL_EXACT_NOTE
  elif exact:
    out['psnr_note'] = (
      f'mean over the {len(per_image) - exact} of {len(per_image)} images not predicted exactly '
      f'(the other {exact}: {EXACT_NOTE}; null in per_image)'
    )
  return _finite(out)


def _finite(d):
  """Any other non-finite number (in a value or a list) -> None, with a note beside it."""
  out = dict(d)
  for key, value in d.items():
    bad = isinstance(value, float) and not math.isfinite(value)
    if isinstance(value, (list, tuple)):
      bad = any(isinstance(v, float) and not math.isfinite(v) for v in value)
    if bad:
      out[key], out[f'{key}_note'] = None, NOT_FINITE_NOTE
  return out


def _null_summary(results):
  """One line naming the means written as null and why, or None when there are none."""
  by_note = {}
  for name, r in results.items():
    label = os.path.basename(os.path.normpath(name)) or name
    for key, value in r.items():
      if value is None and key != 'per_image':
        by_note.setdefault(r.get(f'{key}_note', NOT_FINITE_NOTE), {}).setdefault(key, []).append(
          label
        )
  if not by_note:
    return None
  parts = [
    '; '.join(f'{key} of {", ".join(labels)}' for key, labels in keys.items()) + f' ({note})'
    for note, keys in by_note.items()
  ]
  return 'evaluation: metrics.json has null for ' + '; '.join(parts)


def _fmt(value, spec):
  return 'n/a' if value is None or not math.isfinite(value) else format(value, spec)


def report_table(results):
  """Markdown table of the means, one row per checkpoint (like the report's Table 2); n/a where
  a metric has no finite value (see json_safe)."""
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
    if name == 'hint_curve':
      continue
    a, b = r['ab_bias'] or (None, None)
    row = [
      name,
      _fmt(r['mse_ab'], '.4f'),
      _fmt(r['psnr'], '.2f'),
      _fmt(r['ssim'], '.3f'),
      _fmt(r['auc'], '.1f'),
      _fmt(r['colorfulness'], '.1f'),
      _fmt(r['colorfulness_gt'], '.1f'),
      _fmt(r['colorfulness_ratio'], '.2f'),
      _fmt(r['chroma_ratio'], '.2f'),
      _fmt(a, '+.2f'),
      _fmt(b, '+.2f'),
      _fmt(None if a is None or b is None else math.hypot(a, b), '.2f'),
    ]
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def hint_report(curves, names, checkpoints):
  """report.md's section on the hint curve: PSNR, SSIM and AuC by count, gains over 0 hints."""
  short = dict(zip(checkpoints, names))
  lines = [
    '',
    f'## PSNR against the number of hints ({hint_curve.PATCH}x{hint_curve.PATCH} patches of the '
    "ground truth's mean ab at ideepcolor's Gaussian positions, a fixed seed)",
    '',
    '| model | hints | PSNR dB | gain dB | SSIM | AuC % | ideepcolor gain dB |',
    '|---|---|---|---|---|---|---|',
  ]
  for checkpoint, points in curves.items():
    base = points[min(points)]['psnr']
    for count, v in sorted(points.items()):
      ref = hint_curve.IDEEPCOLOR_PSNR.get(count)
      ref = f'{ref - hint_curve.IDEEPCOLOR_PSNR[0]:+.2f}' if ref is not None else ''
      lines.append(
        f'| {short[checkpoint]} | {count} | {v["psnr"]:.2f} | {v["psnr"] - base:+.2f} '
        f'| {v["ssim"]:.3f} | {v["auc"]:.1f} | {ref} |'
      )
  return '\n'.join(lines) + '\n\n![hint curve](hint_curve.png)\n'


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
  hint_points=None,
  step=None,
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
    step: the training step of each workdir (default: each one's newest that restores).
    hint_points: hint counts (e.g. colorjax.hint_curve.COUNTS): each hint-taking checkpoint is
      also scored with that many simulated hints per image (ideepcolor's protocol, a fixed
      seed), into metrics.json's 'hint_curve' ({checkpoint: {count: psnr, ssim, auc}}), a
      section of report.md and hint_curve.png.

  Returns:
    The metrics.json dict: {checkpoint or 'gray': means + 'per_image'} (and 'hint_curve' with
    hint_points), strict JSON: a metric
    without a finite value (a ratio to a ground truth without color, the PSNR of an exact
    prediction) is None with a '<key>_note' saying why (json_safe); one line on stderr names
    the means written as null.
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
    colorizer = inference.load(checkpoint, step=step)
    if colorizer.config.loss == 'classification':
      colorizer = decoding.with_decoding(colorizer, **knobs)
    ab_pred = inference.batch_predictor(colorizer, _BATCH)(L)
    results[checkpoint], rgb = score(ids, L, ab_gt, ab_pred)
    preds.append(rgb)
  curves = {}
  for checkpoint in checkpoints if hint_points else ():
    colorizer = inference.load(checkpoint, step=step)
    if colorizer.config.hints:
      if colorizer.config.loss == 'classification':
        colorizer = decoding.with_decoding(colorizer, **knobs)
      curves[checkpoint] = hint_curve.curve(colorizer, L, ab_gt, sorted(set(hint_points)))
  results[GRAY], gray_rgb = score(ids, L, ab_gt, np.zeros_like(ab_gt))
  results = {name: json_safe(r) for name, r in results.items()}
  written = dict(results)
  if curves:
    written['hint_curve'] = {c: {str(n): v for n, v in p.items()} for c, p in curves.items()}
  output_dir = pathlib.Path(output_dir)
  (output_dir / 'figures').mkdir(parents=True, exist_ok=True)
  fileutil.atomic_write_text(
    output_dir / 'metrics.json', json.dumps(written, indent=1, allow_nan=False)
  )
  if line := _null_summary(results):
    print(line, file=sys.stderr)
  names = [os.path.basename(os.path.normpath(c)) or c for c in checkpoints]
  table = report_table(results)
  asked = ', '.join(f'{k} {v:g}' for k, v in knobs.items() if v is not None)
  fileutil.atomic_write_text(
    output_dir / 'report.md',
    f'# Evaluation on {len(images)} images from {source}\n\n'
    'Means over images; PSNR and SSIM on RGB uint8 against the ground truth round-tripped '
    'through Lab; predicted ab joined to the ground-truth L; tint = mean (a, b) error. '
    'The PSNR mean leaves out images predicted exactly (infinite PSNR); n/a: no finite value '
    "(e.g. a ratio to a ground truth without color; metrics.json's *_note fields say why)."
    + (f' Classification checkpoints decoded with {asked}.' if asked else '')
    + '\n\n'
    f'{table}\n' + (hint_report(curves, names, checkpoints) if curves else ''),
  )
  if curves:
    short = dict(zip(checkpoints, names))
    hint_curve.plot({short[c]: v for c, v in curves.items()}, output_dir / 'hint_curve.png')
  gt_rgb = [visualize.lab_to_uint8(l_, ab) for l_, ab in zip(L, ab_gt)]
  write_figures(output_dir / 'figures', gt_rgb, gray_rgb, preds, names)
  return written
