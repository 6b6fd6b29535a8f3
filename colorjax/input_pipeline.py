"""Grain input pipeline: 8-bit record bytes -> batches of uint8 L and int8 ab codes, checkpointable.

The host only reads, decodes (a reshape of the record bytes) and stacks; dequantization and
augmentation run on the device (colorjax.augment.prepare_batch / augment_batch).

Checkpointing: iterators of these datasets are grain.DatasetIterator objects with get_state() /
set_state(state) (JSON-able dicts). With Orbax, save one next to the train state as an item of
an ocp.CheckpointManager: ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it), ...)
and restore in place with grain.checkpoint.CheckpointRestore(it) (one JSON file per process).
"""

import functools
import glob
import math
import os
import re

import grain
import jax
import numpy as np

from colorjax import records

_SHARD_RE = re.compile(r'-(\d{5})-of-(\d{5})\.array_record$')


def shard_paths(data_dir, split):
  """The sorted {split}-0000k-of-0000n.array_record files of a split; all n must be present."""
  paths = sorted(glob.glob(os.path.join(data_dir, f'{split}-*-of-*.array_record')))
  if not paths:
    raise FileNotFoundError(f'no {split}-*-of-*.array_record shards in {data_dir}')
  counts = {int(m.group(2)) for m in map(_SHARD_RE.search, paths) if m}
  if len(counts) != 1 or len(paths) != counts.pop():
    raise ValueError(
      f'incomplete or mixed shard set for split {split!r} in {data_dir}: '
      f'{[os.path.basename(p) for p in paths]}'
    )
  return paths


def example_size(data_dir, split):
  """(height, width) of a split's first record."""
  source = grain.sources.ArrayRecordDataSource(shard_paths(data_dir, split))
  if not len(source):
    raise ValueError(f'the {split} records in {data_dir} hold no example')
  return records.decode_quantized(source[0])['L'].shape[:2]


def _source(data_dir, split):
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shard_paths(data_dir, split)))


def _process_slice(shard_index, shard_count):
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= index < count:
    raise ValueError(f'shard_index {index} is not in [0, shard_count={count})')
  return index, count


def decode_codes(data):
  """Record bytes -> {'L': uint8 (H, W, 1), 'ab': int8 (H, W, 2)} (the id is dropped)."""
  ex = records.decode_quantized(data)
  return {'L': ex['L'], 'ab': ex['ab']}


def _decode_eval(data):
  ex = decode_codes(data)
  ex['mask'] = np.bool_(True)
  return ex


def _blank_example(height, width, _):
  return {
    'L': np.zeros((height, width, 1), np.uint8),
    'ab': np.zeros((height, width, 2), np.int8),
    'mask': np.bool_(False),
  }


def _to_iter(ds, worker_count, read_threads, read_buffer):
  if worker_count < 0:
    raise ValueError(f'worker_count must be >= 0, got {worker_count}')
  it_ds = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_buffer)
  )
  if worker_count > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it_ds


def train_dataset(
  data_dir,
  *,
  split='train',
  batch_size,
  seed,
  worker_count=0,
  shard_index=None,
  shard_count=None,
  read_threads=2,
  read_buffer=4,
):
  """An infinite, shuffled stream of batches for this JAX process.

  Args:
    data_dir: folder holding {split}-0000k-of-0000n.array_record shards.
    split: which shards to read.
    batch_size: examples per batch of THIS process (global batch / process count).
    seed: global shuffle seed in [0, 2**32); each epoch is reshuffled (seed + epoch).
    worker_count: Grain worker processes; 0 reads in this process.
    shard_index, shard_count: this process's slice of every epoch's permutation (defaults:
      jax.process_index() / jax.process_count()); the slices are disjoint and cover the data.
    read_threads, read_buffer: threads and buffered batches per reading process.

  Returns:
    A grain.IterDataset of {'L': uint8 (B, H, W, 1), 'ab': int8 (B, H, W, 2)}; iter() on it gives
    a checkpointable grain.DatasetIterator.
  """
  index, count = _process_slice(shard_index, shard_count)
  ds = _source(data_dir, split).shuffle(seed=seed)[index::count]
  if len(ds) < batch_size:
    raise ValueError(f'{len(ds)} examples for this process, fewer than batch_size {batch_size}')
  ds = ds.repeat().map(decode_codes).batch(batch_size, drop_remainder=True)
  return _to_iter(ds, worker_count, read_threads, read_buffer)


def eval_dataset(
  data_dir,
  *,
  split='val',
  batch_size,
  worker_count=0,
  shard_index=None,
  shard_count=None,
  read_threads=2,
  read_buffer=4,
):
  """One unshuffled pass over this process's slice, in full batches padded with a mask.

  Every batch holds batch_size examples; 'mask' (bool, (B,)) is False on padding (zeros). All
  processes get the same number of batches, ceil(ceil(N / shard_count) / batch_size), so a
  multi-host eval loop stays in step. Sum metrics weighted by the mask.

  Returns:
    A grain.IterDataset of {'L': uint8 (B, H, W, 1), 'ab': int8 (B, H, W, 2), 'mask': bool (B,)}.
  """
  index, count = _process_slice(shard_index, shard_count)
  source = _source(data_dir, split)
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  num_batches = math.ceil(math.ceil(len(source) / count) / batch_size)
  ds = source[index::count].map(_decode_eval)
  pad = num_batches * batch_size - len(ds)
  if pad:
    height, width, _ = records.decode_quantized(source[0])['L'].shape
    blank = grain.MapDataset.range(pad).map(functools.partial(_blank_example, height, width))
    ds = grain.MapDataset.concatenate([ds, blank])
  return _to_iter(ds.batch(batch_size), worker_count, read_threads, read_buffer)


def device_prefetch(ds, size=2, put=None, host_buffer=2):
  """Places batches on the device(s) `size` batches ahead, in a background thread.

  Args:
    ds: a grain.IterDataset (e.g. from train_dataset).
    size: batches kept on the device ahead of the consumer.
    put: host batch -> device batch (e.g. a parallel.Runner's put_batch, which shards it over
      the mesh, or makes each process' batch its part of a global array); None puts it on the
      first device.
    host_buffer: batches kept on the host before the transfer.

  Returns:
    A grain.IterDataset of jax.Array batches; its iterator's get_state() refers to the batches
    already consumed, not to those prefetched.
  """
  put = put or (lambda batch: jax.device_put(batch, jax.devices()[0]))
  ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=host_buffer)
  return grain.experimental.ThreadPrefetchIterDataset(ds.map(put), prefetch_buffer_size=size)
