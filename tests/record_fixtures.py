"""Test helpers: tiny synthetic Lab images written as ArrayRecord shards in data_prep's layout."""

import os

import numpy as np
from array_record.python import array_record_module

from colorjax import records


def synthetic_images(count, size=8, seed=0):
  """`count` random (L, ab, id) triples; L in [0, 100], ab in [-100, 100], ids 'img-00000'..."""
  rs = np.random.RandomState(seed)
  return [
    (
      rs.uniform(0, 100, (size, size)).astype(np.float32),
      rs.uniform(-100, 100, (size, size, 2)).astype(np.float32),
      f'img-{i:05d}',
    )
    for i in range(count)
  ]


def write_shards(directory, split, images, num_shards):
  """Writes images, round-robin, to {split}-0000k-of-0000n.array_record; returns the paths."""
  os.makedirs(directory, exist_ok=True)
  paths = [
    os.path.join(directory, f'{split}-{k:05d}-of-{num_shards:05d}.array_record')
    for k in range(num_shards)
  ]
  writers = [array_record_module.ArrayRecordWriter(p, 'group_size:1') for p in paths]
  for i, (L, ab, id_) in enumerate(images):
    writers[i % num_shards].write(records.encode_example(L, ab, id_))
  for w in writers:
    w.close()
  return paths
