"""The PSNR-vs-hints curve: a hint-taking colorizer scored with 0, 1, 2, 5, ... simulated hints.

The protocol is ideepcolor's evaluation (Zhang et al. 2017): P x P patches (6 x 6) at the
training protocol's Gaussian positions, each holding its ground-truth mean ab, the same points
for every model (a fixed key), nested across counts.
"""

import jax
import numpy as np

from colorjax import hints, inference, metrics, visualize

COUNTS = (0, 1, 2, 5, 10, 20, 50, 100)
PATCH = 6
# ideepcolor's published curve: 1000 ImageNet val photos at 256 x 256, PSNR (dB) by hint count.
IDEEPCOLOR_PSNR = {
  0: 24.43, 1: 25.37, 2: 26.20, 5: 27.39, 10: 28.42, 20: 29.34, 50: 30.42, 100: 31.13, 200: 31.70,
  500: 32.14,
}  # fmt: skip


def eval_hints(ab_NxSxSx2, count, seed=0, patch=PATCH):
  """(hint ab, mask) of `count` points per image: fixed for a seed, nested across counts."""
  hint_ab, mask = hints.sample_hints_at(
    jax.random.key(seed), np.asarray(ab_NxSxSx2, np.float32), count, patch
  )
  return np.asarray(hint_ab), np.asarray(mask)


def curve(colorizer, L_NxSxS, ab_gt, counts=COUNTS, seed=0, batch_size=8, spread_hints=True):
  """{count: {'psnr', 'ssim', 'auc'}} means over the images for each hint count; hints spread
  as colorize spreads them, or (spread_hints False) the network's own answer alone."""
  if not colorizer.config.hints and any(counts):
    raise ValueError('this model takes no hints: its curve is its 0-hint point only')
  predict = inference.batch_predictor(colorizer, batch_size, spread_hints)
  gt_u8 = [visualize.lab_to_uint8(l_, ab) for l_, ab in zip(L_NxSxS, ab_gt)]
  out = {}
  for count in counts:
    given = eval_hints(ab_gt, count, seed) if count else None
    ab_pred = predict(L_NxSxS, given)
    rows = []
    for l_, gt, g_u8, pred in zip(L_NxSxS, ab_gt, gt_u8, ab_pred):
      p_u8 = visualize.lab_to_uint8(l_, pred)
      rows.append(
        (min(metrics.psnr(g_u8, p_u8), 100.0), metrics.ssim(g_u8, p_u8), metrics.auc(pred, gt))
      )
    psnr, ssim, auc = np.mean(rows, axis=0)
    out[count] = {'psnr': float(psnr), 'ssim': float(ssim), 'auc': float(auc)}
  return out


def plot(curves, path, title='PSNR against the number of hints'):
  """A PNG: PSNR vs hints, one line per model, and ideepcolor's published gains drawn from each
  model's own 0-hint PSNR (dashed) for reference."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
  for name, points in curves.items():
    counts = sorted(int(c) for c in points)
    x = [max(c, 0.5) for c in counts]  # 0 hints drawn at 0.5 on the log axis
    line = ax.plot(x, [points[c]['psnr'] for c in counts], 'o-', label=name)[0]
    base = points[counts[0]]['psnr'] - IDEEPCOLOR_PSNR[0]
    ref = [c for c in sorted(IDEEPCOLOR_PSNR) if c <= counts[-1]]
    ax.plot(
      [max(c, 0.5) for c in ref],
      [IDEEPCOLOR_PSNR[c] + base for c in ref],
      '--',
      color=line.get_color(),
      alpha=0.5,
      label=f"{name}: ideepcolor's gains",
    )
  ax.set_xscale('log')
  ax.set_xlabel('hints per image (0 drawn at 0.5)')
  ax.set_ylabel('PSNR dB')
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
