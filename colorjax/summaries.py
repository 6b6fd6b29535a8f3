"""Training logs: metrics.jsonl rows, TensorBoard scalars and images, sample grids."""

import json
import math
import os

import numpy as np

from colorjax import visualize

GRID_TITLES = ('Original', 'Grayscale', 'Model')


class MetricWriter:
  """Appends {'step', ...} rows to WORKDIR/metrics.jsonl and TensorBoard; a no-op if disabled.

  Rows after resume_step (left by a run that died after its last checkpoint) are dropped, so
  a resumed run's metrics.jsonl reads like an uninterrupted one.
  """

  def __init__(self, workdir, enabled=True, resume_step=None):
    self.enabled = enabled
    self.workdir = workdir
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      path = os.path.join(workdir, 'metrics.jsonl')
      if os.path.exists(path):
        with open(path) as f:
          rows = [line for line in f if line.strip()]
        keep = [r for r in rows if resume_step is not None and json.loads(r)['step'] <= resume_step]
        with open(path, 'w') as f:
          f.writelines(keep)
      self._jsonl = open(path, 'a')
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def scalars(self, step, metrics):
    if not self.enabled:
      return
    row = {'step': int(step)}
    row.update({k: float(v) for k, v in metrics.items()})
    self._jsonl.write(
      json.dumps({k: v if math.isfinite(v) else str(v) for k, v in row.items()}) + '\n'
    )
    self._jsonl.flush()
    for k, v in metrics.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()

  def image(self, step, name, image_HxWx3):
    if self.enabled:
      self._tb.add_image(name, np.asarray(image_HxWx3), int(step), dataformats='HWC')
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def sample_grid(L_NxHxWx1, ab_true_NxHxWx2, ab_pred_NxHxWx2):
  """The report's figure layout: one row per image, Original | Grayscale | Model."""
  rows = [
    [visualize.lab_to_uint8(L, ab), visualize.gray_uint8(L), visualize.lab_to_uint8(L, pred)]
    for L, ab, pred in zip(L_NxHxWx1, ab_true_NxHxWx2, ab_pred_NxHxWx2)
  ]
  return visualize.comparison_grid(rows, list(GRID_TITLES))
