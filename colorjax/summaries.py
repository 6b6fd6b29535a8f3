"""Training logs: metrics.jsonl rows, TensorBoard scalars and images, sample grids."""

import json
import math
import os

import numpy as np

from colorjax import visualize

GRID_TITLES = ('Original', 'Grayscale', 'Model')


class MetricWriter:
  """Appends {'step', ...} rows to WORKDIR/metrics.jsonl and TensorBoard; a no-op if disabled."""

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled
    self.workdir = workdir
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
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
