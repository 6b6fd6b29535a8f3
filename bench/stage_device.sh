#!/usr/bin/env bash
# Stages what bench/gpu.sh needs on a GPU machine that has no network. Run it here, once, from
# any folder:
#   bash bench/stage_device.sh                         # wheels only (the throughput run)
#   bash bench/stage_device.sh ../shared/data          # and the photos (the quality run)
# It writes .whl/ (Python 3.12 x86-64 wheels of the packages the GPU image lacks: grain and its
# portpicker, array-record, simplejpeg, tensorboardX) and .device_data/ (a copy of the photo
# folder's coco/train2017, coco/val2017 and photos/, ~50 MB of the 64 MiB the device tool moves).
# Both are ignored by git: they travel as the call's `carry`, never as project files. Then:
#   device run, carry ['.whl', '.device_data'], command:
#   PHOTOS=.device_data QUALITY_STEPS=3000 bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  grain==0.2.18 portpicker==1.6.0 array-record==0.8.6 simplejpeg==1.9.0 tensorboardX==2.6.5
if [[ $# -gt 0 ]]; then
  rm -rf .device_data
  for sub in coco/train2017 coco/val2017 photos; do
    if [[ ! -d "$1/$sub" ]]; then
      echo "$1/$sub is missing: pass the shared photo folder (coco/train2017, coco/val2017, photos/)" >&2
      exit 2
    fi
    mkdir -p ".device_data/$sub"
    cp -r "$1/$sub/." ".device_data/$sub/"
  done
fi
du -sh .whl .device_data 2>/dev/null || true
