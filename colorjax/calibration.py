"""Picks a classification model's decoding (temperature, prior correction, chroma gain) on
validation images.

The three knobs trade colorfulness for accuracy, and where a trained network sits on that curve
moves with its training: vivid.flags' first decoding (T 0.1, correction 0.08) suited 600 steps at
128 px, but after 3000 steps the same network decoded that way overshot (docs/gpu/quality.md:
colorfulness ratio 1.26, tint 8). `sweep` decodes the network's logits (computed once) with every
(temperature, correction) pair at chroma gain 1 and scores each; given a target colorfulness, it
then bisects the correction where a temperature's grid crosses the target, and solves for the
chroma gain that brings each pair below the target up to it (the stretch keeps the tint, and at a
given colorfulness it usually costs the least PSNR). `choose` keeps the rows whose tint (mean ab
error) is at most max_tint and returns the most accurate (PSNR) one at least target_colorfulness
colorful, or, if none is, the most colorful one. python -m launch.calibrate writes the choice
into a checkpoint's model.json.
"""

import dataclasses
import json
import shutil

import jax
import numpy as np

from colorjax import decoding, evaluation, fileutil, inference, metrics, models, visualize

TEMPERATURES = (0.1, 0.2, 0.3, 0.38, 0.6)
CORRECTIONS = (-0.5, -0.3, -0.15, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3)
TARGET_COLORFULNESS, MAX_TINT = 0.85, 3.0  # issue #5's targets (colorfulness ratio, tint length)
MAX_GAIN = 4.0  # the largest chroma gain the sweep tries
GAIN_STEPS = 4  # secant steps toward the target colorfulness per (temperature, correction)
GAIN_TOLERANCE = 0.005  # a gain row within this above the target ends the search


def tint_length(m):
  """Length of an evaluation's mean ab bias (the tint)."""
  return float(np.hypot(*m['ab_bias']))


def scorer(ids, L_NxSxS, ab_gt):
  """A function from predicted ab (N, S, S, 2) to the means the sweep needs: psnr, auc,
  colorfulness_ratio and tint, as evaluation.score and metrics.summarize compute them (without
  SSIM, most of their time; the ground truth's RGB is converted once)."""
  if not len(ids) == len(L_NxSxS) == len(ab_gt):
    raise ValueError('ids, L and ab must have one entry per image')
  gt_u8 = [visualize.lab_to_uint8(l_, a) for l_, a in zip(L_NxSxS, ab_gt)]
  cf_gt = np.mean([metrics.colorfulness(g) for g in gt_u8])

  def score(ab_pred):
    psnr, cf, auc, bias = [], [], [], []
    for l_, gt, g_u8, pred in zip(L_NxSxS, ab_gt, gt_u8, ab_pred):
      pred_u8 = visualize.lab_to_uint8(l_, pred)
      psnr.append(metrics.psnr(g_u8, pred_u8))
      cf.append(metrics.colorfulness(pred_u8))
      auc.append(metrics.auc(pred, gt))
      bias.append(metrics.ab_bias(pred, gt))
    finite = [p for p in psnr if np.isfinite(p)]
    return {
      'psnr': float(np.mean(finite)) if finite else float('inf'),
      'auc': float(np.mean(auc)),
      'colorfulness_ratio': float(np.mean(cf) / cf_gt) if cf_gt else float('nan'),
      'tint': float(np.hypot(*np.mean(bias, axis=0))),
    }

  return score


def sweep(
  colorizer,
  images,
  temperatures=TEMPERATURES,
  corrections=CORRECTIONS,
  batch_size=32,
  target_colorfulness=None,
  refine_steps=4,
  max_tint=None,
):
  """Scores of (temperature, prior correction, chroma gain) decodings of a classification
  colorizer.

  Args:
    colorizer: an inference.Colorizer with loss 'classification'.
    images: evaluation.load_eval_images' list of (id, L, ab).
    temperatures, corrections: the values to cross, at chroma gain 1.
    batch_size: images per network call.
    target_colorfulness: if given, two kinds of rows follow the grid's:
      - each temperature whose grid crosses this colorfulness ratio between two corrections gets
        refine_steps rows bisecting the correction toward the one that reaches it (colorfulness
        grows with the correction; the grid alone steps past the target, e.g. 0.849 -> 0.949);
      - each grid pair below the target gets up to GAIN_STEPS rows with the chroma gain that
        reaches it, found by secant steps (colorfulness grows about linearly with the gain), up
        to MAX_GAIN.
    refine_steps: correction bisections per crossing temperature.
    max_tint: if given, pairs whose tint exceeds it get no gain rows (the gain keeps the tint).

  Returns:
    One dict per decoding, the grid's in order, then the refined ones: temperature,
    prior_correction, chroma_gain, psnr, auc, colorfulness_ratio, tint (means over the images,
    as evaluation.score computes them).
  """
  if colorizer.config.loss != 'classification':
    raise ValueError(f'a {colorizer.config.loss!r} model has no decoding to calibrate')
  if not images:
    raise ValueError('no validation images to calibrate on')
  L = np.stack([x for _, x, _ in images])
  score = scorer([i for i, _, _ in images], L, np.stack([x for _, _, x in images]))
  network = jax.jit(models.create_model(colorizer.config).apply)
  logits = [
    network(colorizer.params, L[i : i + batch_size, ..., None])
    for i in range(0, len(L), batch_size)
  ]
  decode = jax.jit(decoding.decode, static_argnums=0)

  def row(t, c, g=1.0):
    config = dataclasses.replace(
      colorizer.config, temperature=float(t), prior_correction=float(c), chroma_gain=float(g)
    )
    pred = np.concatenate([np.asarray(decode(config, x)) for x in logits])
    return {
      'temperature': float(t),
      'prior_correction': float(c),
      'chroma_gain': float(g),
      **score(pred),
    }

  rows = [row(t, c) for t in temperatures for c in corrections]
  if target_colorfulness is None:
    return rows
  refined = []
  for t in temperatures:
    line = sorted(
      (r for r in rows if r['temperature'] == float(t)), key=lambda r: r['prior_correction']
    )
    bracket = next(
      ((lo, hi) for lo, hi in zip(line, line[1:])
       if lo['colorfulness_ratio'] < target_colorfulness <= hi['colorfulness_ratio']),
      None,
    )  # fmt: skip
    for _ in range(refine_steps if bracket else 0):  # bisection of the correction
      lo, hi = bracket
      mid = row(t, (lo['prior_correction'] + hi['prior_correction']) / 2)
      refined.append(mid)
      bracket = (lo, mid) if mid['colorfulness_ratio'] >= target_colorfulness else (mid, hi)
  for base in rows:
    if not 0 < base['colorfulness_ratio'] < target_colorfulness:
      continue
    if max_tint is not None and base['tint'] > max_tint:
      continue
    refined.extend(_gain_rows(base, row, target_colorfulness))
  return rows + refined


def _gain_rows(base, row, target):
  """Secant search for the chroma gain that brings base (a gain-1 row) to the target
  colorfulness; returns the rows it scored (at most GAIN_STEPS)."""
  aim = target + GAIN_TOLERANCE / 2  # land just above the target
  points = [(1.0, base['colorfulness_ratio'])]
  gain = aim / base['colorfulness_ratio']  # as if colorfulness were proportional to the gain
  out = []
  for _ in range(GAIN_STEPS):
    gain = float(np.clip(gain, 1.0, MAX_GAIN))
    if any(abs(gain - g) < 1e-6 for g, _ in points):
      break
    r = row(base['temperature'], base['prior_correction'], gain)
    out.append(r)
    cf = r['colorfulness_ratio']
    if target <= cf <= target + GAIN_TOLERANCE:
      break
    (g0, f0), (g1, f1) = points[-1], (gain, cf)
    points.append((g1, f1))
    if f1 <= f0:  # the stretch no longer adds colorfulness (e.g. clipping at the gamut)
      break
    gain = g1 + (aim - f1) * (g1 - g0) / (f1 - f0)
  return out


def choose(rows, target_colorfulness=TARGET_COLORFULNESS, max_tint=MAX_TINT):
  """The row to decode with (see the module doc); raises if every row's tint exceeds max_tint."""
  untinted = [r for r in rows if r['tint'] <= max_tint]
  if not untinted:
    least = min(r['tint'] for r in rows) if rows else float('nan')
    raise ValueError(f'no decoding keeps the tint <= {max_tint} (least: {least:.2f})')
  colorful = [r for r in untinted if r['colorfulness_ratio'] >= target_colorfulness]
  if colorful:
    return max(colorful, key=lambda r: r['psnr'])
  return max(untinted, key=lambda r: r['colorfulness_ratio'])


def calibrate(checkpoint, source, *, image_size=None, max_images=None, split='val',
              target_colorfulness=TARGET_COLORFULNESS, max_tint=MAX_TINT, dry_run=False,
              temperatures=TEMPERATURES, corrections=CORRECTIONS, lock=True):  # fmt: skip
  """launch.calibrate: sweeps a checkpoint's decodings on `source` (photos or records, see
  evaluation.load_eval_images; image_size defaults to the model's) over the temperatures x
  corrections grid and the gains that reach the target, prints the table, chooses,
  and unless dry_run writes the sweep into calibration.json and the choice into its model.json
  (the previous one kept as model.json.uncalibrated). Returns (rows, chosen row). Raises
  ValueError, model.json unchanged, when no decoding keeps the tint <= max_tint (calibration.json
  is written, with chosen None). With lock, the folder is locked while it is rewritten
  (fileutil.LockedError when another run holds it); the shipped model is read-only."""
  path = inference.resolve(checkpoint)
  if not dry_run and str(checkpoint) == inference.PRETRAINED:
    raise ValueError(
      'the shipped model is read-only: export it (launch.export --checkpoint=pretrained '
      '--output=DIR) and calibrate DIR, or pass --dry_run'
    )
  if lock and not dry_run:  # it rewrites model.json: no other run may use the folder meanwhile
    with fileutil.exclusive_lock(path):
      return _calibrate(path, source, image_size, max_images, split, target_colorfulness,
                        max_tint, dry_run, temperatures, corrections)  # fmt: skip
  return _calibrate(path, source, image_size, max_images, split, target_colorfulness, max_tint,
                    dry_run, temperatures, corrections)  # fmt: skip


def _calibrate(path, source, image_size, max_images, split, target_colorfulness, max_tint,
               dry_run, temperatures, corrections):  # fmt: skip
  colorizer = inference.load(path)
  size = image_size or colorizer.config.image_size
  images = evaluation.load_eval_images(source, size, max_images=max_images, split=split)
  rows = sweep(
    colorizer,
    images,
    temperatures,
    corrections,
    target_colorfulness=target_colorfulness,
    max_tint=max_tint,
  )
  try:
    best, failure = choose(rows, target_colorfulness, max_tint), None
  except ValueError as e:  # every decoding is too tinted: the table is still worth keeping
    best, failure = None, e
  print('| T | prior correction | chroma gain | PSNR dB | AuC % | CF ratio | tint | |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    mark = 'chosen' if r is best else ''
    print(
      f'| {r["temperature"]:g} | {r["prior_correction"]:g} | {r["chroma_gain"]:.3g} '
      f'| {r["psnr"]:.2f} | {r["auc"]:.1f} '
      f'| {r["colorfulness_ratio"]:.3f} | {r["tint"]:.2f} | {mark} |'
    )
  was = colorizer.config
  if best:
    print(
      f'chosen: temperature {best["temperature"]:g}, prior_correction '
      f'{best["prior_correction"]:g}, chroma_gain {best["chroma_gain"]:.4g} (was '
      f'{was.temperature:g}, {was.prior_correction:g}, {was.chroma_gain:g}) on {len(images)} '
      f'images at {size} px'
    )
  model_json = path / inference.MODEL_JSON
  if not dry_run:
    record = {
      'input': str(source),
      'image_size': size,
      'num_images': len(images),
      'target_colorfulness': target_colorfulness,
      'max_tint': max_tint,
      'chosen': best,
      'sweep': rows,
    }
    fileutil.atomic_write_text(path / 'calibration.json', json.dumps(record, indent=2))
  if failure:
    raise ValueError(
      f'{failure}; {model_json} is unchanged'
      + ('' if dry_run else f', the sweep is in {path / "calibration.json"}')
    )
  if not dry_run:
    backup = path / (inference.MODEL_JSON + '.uncalibrated')
    if not backup.exists():
      shutil.copyfile(model_json, backup)
    tuned = decoding.with_decoding(
      colorizer,
      temperature=best['temperature'],
      prior_correction=best['prior_correction'],
      chroma_gain=best['chroma_gain'],
    )
    fileutil.atomic_write_text(model_json, tuned.config.to_json())
    print(f'wrote {model_json} (the previous one: {backup}) and {path / "calibration.json"}')
  return rows, best
