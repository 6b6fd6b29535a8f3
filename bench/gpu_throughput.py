"""GPU training throughput of the seed model: launch.train's loop against a device-resident batch.

Run by bench/gpu.sh (environment: BATCH, STEPS, EXAMPLES, WORKERS, WORK, SIZE, RESULT). For each
batch it times the jitted train step on one batch kept on the device (the upper bound), then
`trainer.train_and_evaluate` (what `python -m launch.train` runs: Grain over array_record, device
prefetch, logging, checkpoints) at each Grain worker count, and writes RESULT (a markdown table
and the ratio of the two, which bench/gpu_record.py reads).
"""

import dataclasses
import json
import os
import shutil
import time

from absl import flags

flags.FLAGS.mark_as_parsed()  # Grain workers re-import __main__ and need parsed flags

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from array_record.python import array_record_module  # noqa: E402

from bench import report  # noqa: E402
from colorjax import augment, models, records, train_config, train_step, trainer  # noqa: E402

SHARDS = 4
FWD_FLOP_256 = 18.2e9  # seed network forward FLOP per 256x256 image; training ~3x
PEAK_BF16 = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12, 'B200': 2250e12}


def write_records(work, size, examples):
  """Smooth random L and ab fields (noise upsampled x16) as 8-bit records: the train split and a
  small val split (the MSE model needs no manifest)."""
  data_dir = os.path.join(work, f'records{size}')
  paths = [os.path.join(data_dir, f'train-{k:05d}-of-{SHARDS:05d}.array_record')
           for k in range(SHARDS)]  # fmt: skip
  val = os.path.join(data_dir, 'val-00000-of-00001.array_record')
  if all(os.path.exists(p) for p in paths + [val]):
    return data_dir
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  cell = max(1, size // 16)

  def example(i):
    low = rng.uniform(size=(size // cell, size // cell, 3)).astype(np.float32)
    field = np.kron(low, np.ones((cell, cell, 1), np.float32))
    return records.encode_example(field[..., 0] * 100.0, (field[..., 1:] - 0.5) * 160.0, f's{i}')

  writers = [array_record_module.ArrayRecordWriter(p, 'group_size:1') for p in paths]
  for i in tqdm.trange(examples, desc='synthetic records'):
    writers[i % SHARDS].write(example(i))
  for w in writers:
    w.close()
  writer = array_record_module.ArrayRecordWriter(val, 'group_size:1')
  for i in range(4):
    writer.write(example(examples + i))
  writer.close()
  return data_dir


def bench_loop(batch, size, steps, warmup=5):
  """Images/s of the jitted step on one batch kept on the device (no input pipeline)."""
  config = models.ModelConfig(name='seed', loss='mse', image_size=size, dtype='bfloat16')
  model = models.create_model(config)
  tx = train_step.make_optimizer(1e-3)
  step, _, _ = train_step.bind(model, tx, config, augment.AugmentConfig())
  step = jax.jit(step, donate_argnums=0)
  state = train_step.create_train_state(jax.random.key(0), model, tx, size)
  rng = np.random.default_rng(0)
  data = {
    'L': jnp.asarray(rng.integers(0, 256, (batch, size, size, 1), np.uint8)),
    'ab': jnp.asarray(rng.integers(-80, 80, (batch, size, size, 2), np.int8)),
    'index': jnp.arange(batch, dtype=jnp.int32),
  }
  key = jax.random.key(1)
  for _ in range(warmup):
    state, _ = step(state, data, key)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, data, key)
  jax.block_until_ready(state)
  return steps * batch / (time.perf_counter() - start)


def launch_train(batch, size, steps, workers, data_dir, work):
  """Images/s of trainer.train_and_evaluate's last logged window: `steps` steps after `steps`
  warm-up steps (compilation and the workers' start-up fall in the first window)."""
  workdir = os.path.join(work, f'run_b{batch}_w{workers}')
  shutil.rmtree(workdir, ignore_errors=True)
  config = dataclasses.replace(
    train_config.TrainConfig(),
    data_dir=data_dir,
    worker_count=workers,
    dtype='bfloat16',
    image_size=size,
    batch_size=batch,
    num_train_steps=2 * steps,
    log_every=steps,
    eval_every=2 * steps,
    eval_batches=1,
    num_samples=0,
    checkpoint_every=2 * steps,
  )
  result = trainer.train_and_evaluate(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  logged = [r['images_per_sec'] for r in rows if 'images_per_sec' in r]
  assert len(logged) == 2 and result.step == 2 * steps, (logged, result.step)
  return logged[-1]


def main():
  env = os.environ
  batches = [int(b) for b in env['BATCH'].split(',')]
  steps, examples, size = int(env['STEPS']), int(env['EXAMPLES']), int(env['SIZE'])
  workers = [int(w) for w in env['WORKERS'].split(',')]
  work = env['WORK']
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
  flop = 3 * FWD_FLOP_256 * (size / 256) ** 2
  mfu = lambda ips: f'{100 * ips * flop / peak:.1f}%' if peak else 'unknown peak'
  data_dir = write_records(work, size, examples)
  rows, best = [], None
  for batch in batches:
    try:
      synthetic = bench_loop(batch, size, steps)
      real = {w: launch_train(batch, size, steps, w, data_dir, work) for w in workers}
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      print(f'batch {batch} does not fit: {str(e)[:200]}')
      rows.append(f'| synthetic (one batch on the device) | {batch} | does not fit | |')
      continue
    print(f'batch {batch}: synthetic {synthetic:.1f} images/s, launch.train {real}', flush=True)
    rows.append(
      f'| synthetic (one batch on the device) | {batch} | {synthetic:.1f} | {mfu(synthetic)} |'
    )
    rows += [
      f'| Grain + array_record via launch.train, {w} workers | {batch} | {ips:.1f} | {mfu(ips)} |'
      for w, ips in real.items()
    ]
    if best is None or synthetic > best[1]:
      best = (batch, synthetic, max(real.values()))
  if best is None:
    raise SystemExit('no batch fits')
  lines = [
    f'machine: {report.machine()}',
    f'device: {kind} ({jax.device_count()}), jax {jax.__version__}; seed model, {size}x{size}, '
    f'bfloat16, Adam + MSE with the report augmentation on the device; {steps} timed steps '
    f'after {steps} warm-up steps; launch.train = trainer.train_and_evaluate with device prefetch',
    '',
    f'| input | batch | images/s | model FLOP utilization ({flop / 1e9:.1f} GFLOP / image) |',
    '|---|---|---|---|',
    *rows,
    '',
    f'real pipeline (launch.train, best worker count) / synthetic at batch {best[0]}: '
    f'{best[2] / best[1]:.3f}',
  ]
  text = '\n'.join(lines)
  print(text)
  with open(env['RESULT'], 'w') as f:
    f.write(text + '\n')


if __name__ == '__main__':
  main()
