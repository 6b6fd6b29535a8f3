"""Images/s of the Grain loader per worker count and of the device augmentation vs 250/s per core.

python3 -m bench.pipeline                  # synthesizes 256x256 records from COCO val2017 JPEGs
python3 -m bench.pipeline --data_dir=DIR   # reuses {split}-*-of-*.array_record shards in DIR
"""

import functools
import glob
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from array_record.python import array_record_module
from tqdm import tqdm

from bench import report
from colorjax import augment, constants, input_pipeline, lab, records
from data_prep import builder

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '', 'Existing record shards; empty: synthesize into --work_dir.')
flags.DEFINE_string('split', 'val', 'Split of the shards to read.')
flags.DEFINE_string('work_dir', '/tmp/colorjax_bench_pipeline_256', 'Where synthesized records go.')
flags.DEFINE_string('jpeg_dir', '/work/shared/data/coco/val2017', 'JPEGs to synthesize from.')
flags.DEFINE_integer('num_images', 256, 'Random images to write when --jpeg_dir has no JPEGs.')
flags.DEFINE_integer('batch_size', 32, 'Batch size of loader and augmentation.')
flags.DEFINE_list('worker_counts', ['0', '1', '2'], 'Grain worker processes to measure.')
flags.DEFINE_float('seconds', 3.0, 'Timed seconds per measurement (after warm-up).')
flags.DEFINE_integer('repeats', 3, 'Interleaved rounds over all rows; the median is reported.')

TARGET_PER_CORE = 250.0  # images/s per host core the training loop must sustain


def synthesize(work_dir, jpeg_dir, num_images, split, size=constants.IMAGE_SIZE, num_shards=4):
  """Builds size x size records unless present: data_prep from the JPEGs, else random images."""
  if glob.glob(os.path.join(work_dir, f'{split}-*-of-*.array_record')):
    return work_dir
  if glob.glob(os.path.join(jpeg_dir, '*.jpg')):
    builder.build_records(
      jpeg_dir, work_dir, split, image_size=size, num_shards=num_shards, workers=1
    )
    return work_dir
  os.makedirs(work_dir, exist_ok=True)
  rs = np.random.RandomState(0)
  writers = [
    array_record_module.ArrayRecordWriter(
      os.path.join(work_dir, builder.shard_name(split, k, num_shards)), 'group_size:1'
    )
    for k in range(num_shards)
  ]
  for i in tqdm(range(num_images), desc='random records'):
    Lab = lab.rgb8_to_lab(rs.randint(0, 256, (size, size, 3), dtype=np.uint8))
    writers[i % num_shards].write(records.encode_example(Lab[..., 0], Lab[..., 1:], f'random-{i}'))
  for w in writers:
    w.close()
  return work_dir


def loader_rate(data_dir, split, batch_size, worker_count, seconds):
  """Images/s of train_dataset alone (shuffled, repeated, decoded, batched), after 3 batches."""
  it = iter(
    input_pipeline.train_dataset(
      data_dir, split=split, batch_size=batch_size, seed=0, worker_count=worker_count
    )
  )
  for _ in range(3):
    next(it)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(it)
    n += 1
  rate = n * batch_size / (time.perf_counter() - start)
  it.close()
  return rate


def _map_coordinates_augment(rng, L, ab, config):
  """The alternative sampler: jax.scipy.ndimage.map_coordinates (order=1), one call per channel."""
  angle, scale, flip = augment.sample_params(rng, L.shape[0], config)
  _, h, w, _ = L.shape
  c = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0])
  grid = (
    jnp.stack(
      jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing='ij'
      )
    )
    - c[:, None, None]
  )

  def one(image, a, s, f):
    coords = jnp.einsum('ij,jhw->ihw', augment.sampling_matrix(a, s, f), grid) + c[:, None, None]
    return jnp.stack(
      [
        jax.scipy.ndimage.map_coordinates(image[..., k], list(coords), order=1, mode=config.fill)
        for k in range(image.shape[-1])
      ],
      -1,
    )

  out = jax.vmap(one)(jnp.concatenate([L, ab], -1), angle, scale, flip)
  return out[..., :1], out[..., 1:]


def augment_rate(fn, batch_size, seconds, size=constants.IMAGE_SIZE):
  """Images/s of prepare_batch + `fn` under jit on uint8/int8 codes already on the device."""
  rs = np.random.RandomState(0)
  batch = jax.device_put(
    {
      'L': rs.randint(0, 256, (batch_size, size, size, 1)).astype(np.uint8),
      'ab': rs.randint(-100, 100, (batch_size, size, size, 2)).astype(np.int8),
    }
  )

  @jax.jit
  def step(rng, batch):
    return fn(rng, *augment.prepare_batch(batch))

  jax.block_until_ready(step(jax.random.key(0), batch))
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(step(jax.random.key(n), batch))
    n += 1
  return n * batch_size / (time.perf_counter() - start)


def run(
  data_dir, split, work_dir, jpeg_dir, num_images, batch_size, worker_counts, seconds, repeats
):
  """Measures everything (median of interleaved rounds) and writes docs/benchmarks.md 'pipeline'."""
  data_dir = data_dir or synthesize(work_dir, jpeg_dir, num_images, split)
  config = augment.AugmentConfig()
  stages = [
    (
      f'Grain loader, worker_count={w}',
      max(1, w),
      functools.partial(loader_rate, data_dir, split, batch_size, w, seconds),
    )
    for w in worker_counts
  ]
  samplers = [
    (
      'augment (gather bilinear, colorjax.augment)',
      functools.partial(augment.augment_batch, config=config),
    ),
    (
      'augment (jax.scipy map_coordinates, alternative)',
      functools.partial(_map_coordinates_augment, config=config),
    ),
    (
      'prepare_batch only (AugmentConfig.none())',
      functools.partial(augment.augment_batch, config=augment.AugmentConfig.none()),
    ),
  ]
  stages += [
    (
      f'{name}, jit, {jax.default_backend()}',
      os.cpu_count(),
      functools.partial(augment_rate, fn, batch_size, seconds),
    )
    for name, fn in samplers
  ]
  rates = [[] for _ in stages]
  for _ in tqdm(range(repeats), desc='rounds'):
    for k, (_, _, measure) in enumerate(stages):
      rates[k].append(measure())
  rows = []
  for (name, cores, _), r in zip(stages, rates):
    rate = float(np.median(r))
    rows.append((name, rate, cores, rate / cores, rate / cores / TARGET_PER_CORE))
  body = (
    f'{constants.IMAGE_SIZE}x{constants.IMAGE_SIZE} records, batch {batch_size}; median of '
    f'{repeats} interleaved rounds of {seconds:g} s per row after warm-up; target '
    f'{TARGET_PER_CORE:g} images/s per core. Loader rows: host images/s over max(1, workers) '
    'cores. Augmentation rows: XLA on all host cores (on a GPU it runs inside the train '
    'step). The host is shared with other jobs: compare rows, not runs.\n\n'
    + report.table(['stage', 'images/s', 'cores', 'images/s/core', 'x target'], rows)
  )
  report.write_section('pipeline', 'python3 -m bench.pipeline', body)


def main(argv):
  del argv
  run(
    FLAGS.data_dir,
    FLAGS.split,
    FLAGS.work_dir,
    FLAGS.jpeg_dir,
    FLAGS.num_images,
    FLAGS.batch_size,
    [int(w) for w in FLAGS.worker_counts],
    FLAGS.seconds,
    FLAGS.repeats,
  )


if __name__ == '__main__':
  app.run(main)
