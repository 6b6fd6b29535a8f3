#!/usr/bin/env bash
# GPU throughput of the seed model at 256x256 in bfloat16 (bench/gpu_throughput.py): images/s,
# model FLOP utilization, and launch.train's own loop (Grain over array_record, device prefetch)
# against a device-resident synthetic batch.
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
STEPS="${STEPS:-100}"         # timed steps per measurement, after as many warm-up steps
WORKERS="${WORKERS:-2,4,8}"   # Grain worker process counts, each timed on the real pipeline
EXAMPLES="${EXAMPLES:-2048}"  # synthetic 256x256 records written (~400 MB)
SIZE="${SIZE:-256}"           # image side (the FLOP figures below are for 256)
WORK="${WORK:-$(mktemp -d)}"  # records, runs and results (default: a new private folder)
PHOTOS="${PHOTOS:-}"          # a folder laid out like ../shared/data: the quality experiment
QUALITY_STEPS="${QUALITY_STEPS:-3000}"
THROUGHPUT="${THROUGHPUT:-1}" # 0: skip the throughput measurement (the quality run alone)
WHEELS="${WHEELS:-.whl}"      # the carried wheels (cp312, made by bench/stage_device.sh)

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # colorjax from this tree, no install
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  # Beside the image's packages, not over them (the device tool's recipe).
  SITE="$(mktemp -d)"  # private: no other user's files on the path
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
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
# A failed stage does not stop the next one (a device lease is short): the exit status says.
status=0
if [[ "$THROUGHPUT" != 0 ]]; then
  if BATCH="$BATCH" STEPS="$STEPS" WORKERS="$WORKERS" EXAMPLES="$EXAMPLES" WORK="$WORK" \
    SIZE="$SIZE" RESULT="$RESULT" python3 -m bench.gpu_throughput; then
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
