#!/usr/bin/env bash
# GPU throughput of the seed model at 256x256 in bfloat16: images/s, model FLOP utilization, and
# the real input pipeline (Grain over array_record) against device-resident synthetic batches.
#
# With PHOTOS set, it then runs the quality experiment (bench/quality.py: seed against vivid at
# 128x128) for QUALITY_STEPS steps, more than a CPU session can afford.
#
# Run from the repository root on a GPU machine with a CUDA jax installed (it has no network):
#   bash bench/gpu.sh                  # batches 256 and 512, 2, 4 and 8 workers, 100 timed steps
#   BATCH=512 STEPS=50 WORKERS=8,12 bash bench/gpu.sh
#   PHOTOS=.device_data QUALITY_STEPS=3000 bash bench/gpu.sh
# bench/stage_device.sh stages, beforehand and on a machine with pip's index, the wheels that the
# GPU machine lacks (grain, array-record, ...) in .whl/ and the photos in .device_data/; both
# travel as the device tool's `carry` and are installed here without an index. Output: tables
# on stdout and in $OUT (gpu_result.md; quality.md and quality_figure.png with PHOTOS), or in
# $WORK when OUT is not set. ALLOW_CPU=1 runs it on a CPU (tests/bench_test.py does, tiny).
set -euo pipefail
cd "$(dirname "$0")/.."

BATCH="${BATCH:-256,512}"     # global batches tried (one GPU); the fastest one that fits counts
STEPS="${STEPS:-100}"         # timed steps per measurement, after 5 (+ 2 x workers) warm-up steps
WORKERS="${WORKERS:-2,4,8}"   # Grain worker process counts, each timed on the real pipeline
EXAMPLES="${EXAMPLES:-2048}"  # synthetic 256x256 records written (~400 MB)
SIZE="${SIZE:-256}"           # image side (the FLOP figures below are for 256)
WORK="${WORK:-/tmp/colorjax_gpu}"
PHOTOS="${PHOTOS:-}"          # a folder laid out like ../shared/data: the quality experiment
QUALITY_STEPS="${QUALITY_STEPS:-3000}"
THROUGHPUT="${THROUGHPUT:-1}" # 0: skip the throughput measurement (the quality run alone)
WHEELS="${WHEELS:-.whl}"      # the carried wheels (cp312, made by bench/stage_device.sh)

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # colorjax from this tree, no install
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  # Beside the image's packages, not over them (the device tool's recipe).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 - <<'EOF'
import os
import jax
print('jax', jax.__version__, jax.devices())
if jax.default_backend() != 'gpu' and not os.environ.get('ALLOW_CPU'):
  raise SystemExit('no GPU visible to JAX: install jax[cuda12] (ALLOW_CPU=1 for a smoke run)')
EOF

mkdir -p "$WORK"
RESULT="${OUT:-$WORK}/gpu_result.md"
# The driver is a file, not stdin: Grain's worker processes re-import __main__.
cat > "$WORK/gpu_driver.py" <<'EOF'
import os
import time

from absl import flags

flags.FLAGS.mark_as_parsed()  # Grain workers re-import __main__ and need parsed flags

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from array_record.python import array_record_module

from colorjax import augment, input_pipeline, models, records, train
from bench import report

BATCHES = [int(b) for b in os.environ['BATCH'].split(',')]  # tried in turn; the fastest is fed
STEPS, EXAMPLES = int(os.environ['STEPS']), int(os.environ['EXAMPLES'])
WORKERS = [int(w) for w in os.environ['WORKERS'].split(',')]  # Grain worker counts, each timed
WORK, SIZE, SHARDS = os.environ['WORK'], int(os.environ['SIZE']), 4
FWD_FLOP = 18.2e9 * (SIZE / 256) ** 2  # seed network forward FLOP per image; training ~3x
PEAK_BF16 = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12, 'B200': 2250e12}


def write_records():
  """Smooth random L and ab fields (16x16 noise upsampled x16), 8-bit codes in SHARDS shards."""
  data_dir = os.path.join(WORK, f'records{SIZE}')
  os.makedirs(data_dir, exist_ok=True)
  paths = [os.path.join(data_dir, f'train-{k:05d}-of-{SHARDS:05d}.array_record')
           for k in range(SHARDS)]
  if all(os.path.exists(p) for p in paths):
    return data_dir
  rng = np.random.default_rng(0)
  writers = [array_record_module.ArrayRecordWriter(p, 'group_size:1') for p in paths]
  for i in tqdm.trange(EXAMPLES, desc='synthetic records'):
    low = rng.uniform(size=(SIZE // 16, SIZE // 16, 3)).astype(np.float32)
    field = np.kron(low, np.ones((16, 16, 1), np.float32))
    L, ab = field[..., 0] * 100.0, (field[..., 1:] - 0.5) * 160.0
    writers[i % SHARDS].write(records.encode_example(L, ab, f'synthetic-{i}'))
  for w in writers:
    w.close()
  return data_dir


def timed(step_fn, next_batch, steps, batch, warmup=5):
  """Images/s over `steps` steps after `warmup` steps (compilation included there)."""
  for _ in range(warmup):
    step_fn(next_batch())
  jax.block_until_ready(STATE[0])
  t = time.perf_counter()
  for _ in range(steps):
    step_fn(next_batch())
  jax.block_until_ready(STATE[0])
  return steps * batch / (time.perf_counter() - t)


STATE = []  # the train state, replaced at each step (its buffers are donated)


def measure(batch, data_dir, workers):
  """Synthetic images/s at this batch, then the real pipeline's at each worker count."""
  config = models.ModelConfig(name='seed', loss='mse', image_size=SIZE, dtype='bfloat16')
  model = models.create_model(config)
  tx = train.make_optimizer(1e-3)
  STATE[:] = [train.create_train_state(jax.random.key(0), model, tx, SIZE)]
  step, _, _ = train.bind(model, tx, config, augment.AugmentConfig())
  step = jax.jit(step, donate_argnums=0)
  index, key = jnp.arange(batch, dtype=jnp.int32), jax.random.key(1)

  def run_step(b):
    STATE[0], metrics = step(STATE[0], dict(b, index=index), key)
    return metrics

  def pipeline(worker_count):
    ds = input_pipeline.train_dataset(
      data_dir, batch_size=batch, seed=0, worker_count=worker_count
    )
    return iter(input_pipeline.device_prefetch(ds, size=2))

  it = pipeline(workers[0])
  first = next(it)
  synthetic = jax.device_put({'L': first['L'], 'ab': first['ab']})
  ips_synthetic = timed(run_step, lambda: synthetic, STEPS, batch)
  real = {}
  for w in workers:
    it = it or pipeline(w)
    # Each worker delivers whole batches in turn: warm up until every one has started.
    real[w] = timed(run_step, lambda: next(it), STEPS, batch, warmup=5 + 2 * w)
    it.close()
    it = None
  return ips_synthetic, real


def main():
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
  mfu = lambda ips: f'{100 * ips * 3 * FWD_FLOP / peak:.1f}%' if peak else 'unknown peak'
  data_dir = write_records()
  rows, best = [], None
  for batch in BATCHES:
    try:
      ips_synthetic, real = measure(batch, data_dir, WORKERS)
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      print(f'batch {batch} does not fit: {str(e)[:200]}')
      rows.append(f'| synthetic (one batch on the device) | {batch} | does not fit | |')
      continue
    finally:
      STATE.clear()
    print(f'batch {batch}: synthetic {ips_synthetic:.1f} images/s, real {real}', flush=True)
    rows.append(
      f'| synthetic (one batch on the device) | {batch} | {ips_synthetic:.1f} '
      f'| {mfu(ips_synthetic)} |'
    )
    rows += [
      f'| Grain + array_record, {w} workers | {batch} | {ips:.1f} | {mfu(ips)} |'
      for w, ips in real.items()
    ]
    if best is None or ips_synthetic > best[1]:
      best = (batch, ips_synthetic, max(real.values()))
  if best is None:
    raise SystemExit('no batch fits')
  lines = [
    f'machine: {report.machine()}',
    f'device: {kind} ({jax.device_count()}), jax {jax.__version__}; seed model, {SIZE}x{SIZE}, '
    f'bfloat16, Adam + MSE with the report augmentation on the device; '
    f'{STEPS} timed steps after 5 warm-up steps (5 + 2 x workers on the real pipeline)',
    '',
    f'| input | batch | images/s | model FLOP utilization (3 x {FWD_FLOP / 1e9:.1f} GFLOP / image) |',
    '|---|---|---|---|',
    *rows,
    '',
    f'real pipeline (best worker count) / synthetic at batch {best[0]}: '
    f'{best[2] / best[1]:.3f}',
  ]
  text = '\n'.join(lines)
  print(text)
  with open(os.environ['RESULT'], 'w') as f:
    f.write(text + '\n')


if __name__ == '__main__':
  main()
EOF
# A failed stage does not stop the next one (a device lease is short): the exit status says.
status=0
if [[ "$THROUGHPUT" != 0 ]]; then
  if BATCH="$BATCH" STEPS="$STEPS" WORKERS="$WORKERS" EXAMPLES="$EXAMPLES" WORK="$WORK" \
    SIZE="$SIZE" RESULT="$RESULT" python3 "$WORK/gpu_driver.py"; then
    echo "wrote $RESULT"
  else
    echo "the throughput run failed" >&2
    status=1
  fi
fi

if [[ -n "$PHOTOS" ]]; then
  python3 -m bench.quality --data_dir="$PHOTOS" --workdir="$WORK/quality" \
    --steps="$QUALITY_STEPS" --image_size=128 --batch_size=16 --doc="${OUT:-$WORK}/quality.md" \
    || { echo "the quality run failed" >&2; status=1; }
fi
exit "$status"
