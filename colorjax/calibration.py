"""Picks a classification model's decoding (temperature, prior correction) on validation images.

Both knobs trade colorfulness for accuracy, and where a trained network sits on that curve moves
with its training: vivid.flags' decoding (T 0.1, correction 0.08) suits 600 steps at 128 px, but
after 3000 steps the same network decoded that way overshoots (docs/gpu/quality.md: colorfulness
ratio 1.26, tint 8). `sweep` decodes the network's logits (computed once) with every pair and
scores each, then refines the correction where a temperature's grid crosses the target
colorfulness; `choose` keeps the pairs whose tint (mean ab error) is at most max_tint and returns
the most accurate (PSNR) one at least target_colorfulness colorful, or, if none is, the most
colorful one. python -m launch.calibrate writes the choice into a checkpoint's model.json.
"""

import dataclasses
import json
import pathlib
import shutil

import jax
import numpy as np

from colorjax import evaluation, inference, models

TEMPERATURES = (0.05, 0.1, 0.2, 0.38, 0.6)
CORRECTIONS = (-0.5, -0.3, -0.15, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
TARGET_COLORFULNESS, MAX_TINT = 0.85, 3.0  # issue #5's targets (colorfulness ratio, tint length)


def tint_length(m):
  """Length of an evaluation's mean ab bias (the tint)."""
  return float(np.hypot(*m['ab_bias']))


def sweep(
  colorizer,
  images,
  temperatures=TEMPERATURES,
  corrections=CORRECTIONS,
  batch_size=32,
  target_colorfulness=None,
  refine_steps=4,
):
  """Scores of every (temperature, prior correction) decoding of a classification colorizer.

  Args:
    colorizer: an inference.Colorizer with loss 'classification'.
    images: evaluation.load_eval_images' list of (id, L, ab).
    temperatures, corrections: the values to cross.
    batch_size: images per network call.
    target_colorfulness: if given, each temperature whose grid crosses this colorfulness ratio
      between two corrections gets refine_steps more rows, bisecting the corrections toward the
      one that reaches it (colorfulness grows with the correction): the grid alone steps past
      the target (e.g. 0.849 -> 0.949).
    refine_steps: decodings added per crossing temperature.

  Returns:
    One dict per decoding, the grid's in order, then the refined ones: temperature,
    prior_correction, psnr, auc, colorfulness_ratio, tint (evaluation.score's means over the
    images).
  """
  if colorizer.config.loss != 'classification':
    raise ValueError(f'a {colorizer.config.loss!r} model has no decoding to calibrate')
  if not images:
    raise ValueError('no validation images to calibrate on')
  ids = [i for i, _, _ in images]
  L = np.stack([x for _, x, _ in images])
  ab = np.stack([x for _, _, x in images])
  network = jax.jit(models.create_model(colorizer.config).apply)
  logits = [
    network(colorizer.params, L[i : i + batch_size, ..., None])
    for i in range(0, len(L), batch_size)
  ]
  decode = jax.jit(models.decode, static_argnums=0)

  def row(t, c):
    config = dataclasses.replace(colorizer.config, temperature=float(t), prior_correction=float(c))
    pred = np.concatenate([np.asarray(decode(config, x)) for x in logits])
    m, _ = evaluation.score(ids, L, ab, pred)
    return {
      'temperature': float(t),
      'prior_correction': float(c),
      'psnr': m['psnr'],
      'auc': m['auc'],
      'colorfulness_ratio': m['colorfulness_ratio'],
      'tint': tint_length(m),
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
  return rows + refined


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
              target_colorfulness=TARGET_COLORFULNESS,
              max_tint=MAX_TINT, dry_run=False):  # fmt: skip
  """launch.calibrate: sweeps a checkpoint's decodings on `source` (photos or records, see
  evaluation.load_eval_images; image_size defaults to the model's), prints the table, chooses,
  and unless dry_run writes the choice into its model.json (the previous one kept as
  model.json.uncalibrated) and the sweep into calibration.json. Returns (rows, chosen row)."""
  path = pathlib.Path(checkpoint)
  colorizer = inference.load(path)
  size = image_size or colorizer.config.image_size
  images = evaluation.load_eval_images(source, size, max_images=max_images, split=split)
  rows = sweep(colorizer, images, target_colorfulness=target_colorfulness)
  best = choose(rows, target_colorfulness, max_tint)
  print('| T | prior correction | PSNR dB | AuC % | CF ratio | tint | |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    mark = 'chosen' if r is best else ''
    print(
      f'| {r["temperature"]:g} | {r["prior_correction"]:g} | {r["psnr"]:.2f} | {r["auc"]:.1f} '
      f'| {r["colorfulness_ratio"]:.3f} | {r["tint"]:.2f} | {mark} |'
    )
  print(
    f'chosen: temperature {best["temperature"]:g}, prior_correction '
    f'{best["prior_correction"]:g} (was {colorizer.config.temperature:g}, '
    f'{colorizer.config.prior_correction:g}) on {len(images)} images at {size} px'
  )
  if not dry_run:
    model_json = path / inference.MODEL_JSON
    backup = path / (inference.MODEL_JSON + '.uncalibrated')
    if not backup.exists():
      shutil.copyfile(model_json, backup)
    tuned = inference.with_decoding(
      colorizer, temperature=best['temperature'], prior_correction=best['prior_correction']
    )
    model_json.write_text(tuned.config.to_json())
    record = {
      'input': str(source),
      'image_size': size,
      'num_images': len(images),
      'target_colorfulness': target_colorfulness,
      'max_tint': max_tint,
      'chosen': best,
      'sweep': rows,
    }
    (path / 'calibration.json').write_text(json.dumps(record, indent=2))
    print(f'wrote {model_json} (the previous one: {backup}) and {path / "calibration.json"}')
  return rows, best
