"""The quality experiment: every model family trained alike and scored on the same val photos.

python -m bench.quality --data_dir=../shared/data --workdir=W [--steps=N] [--image_size=128]
    [--models=seed,vivid,effnet,effnet_none,effnet_hints,vivid_hints]
    [--hint_points=0,1,2,5,10,20,50,100]

Builds records from coco/train2017 + photos/ (train, less the held-out photos/imagenet_det) and
coco/val2017 (val) under W/records, trains each of --models (RUNS: its checked-in flagfile) for
the same steps at the same size and batch, picks vivid's decoding on the coco/val2017 photos with
launch.calibrate, evaluates every model with launch.evaluate on the same photos (W/eval; the
hint-taking ones also at each of --hint_points simulated hints), and writes docs/quality.md:
the table, the targets of each comparison present, vivid's calibration sweep, the hint curve, a
figure per model and one of a photo with 0, 3 and 10 hints.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import app, flags

from bench import report
from colorjax import (
  calibration,  # its grid and targets (no JAX work in this process)
  hint_curve,  # the counts and ideepcolor's published curve (no JAX work)
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / 'docs' / 'quality.md'
FIGURE_NAME = 'quality_figure.png'  # written beside the doc

# Each run of the experiment: its flagfile and the flags that set it apart.
RUNS = {
  'seed': ('seed_coco.flags', ()),
  'vivid': ('vivid.flags', ()),
  'effnet': ('effnet.flags', ()),
  'effnet_none': ('effnet.flags', ('--encoder_init=none',)),
  'effnet_hints': ('effnet_hints.flags', ()),
  'vivid_hints': ('vivid.flags', ('--hints=true',)),  # the U-Net with hints (quicker to build)
}
# Each hint-taking run and the same architecture without hints, for the 0-hint comparison.
HINT_RUNS = {'effnet_hints': 'effnet', 'vivid_hints': 'vivid'}
CLASSIFICATION_RUNS = ('vivid', 'effnet', 'effnet_none', 'effnet_hints', 'vivid_hints')

_DATA_DIR = flags.DEFINE_string('data_dir', '../shared/data', 'the shared photo folder')
_WORKDIR = flags.DEFINE_string('workdir', None, 'where records, runs and the evaluation go')
_STEPS = flags.DEFINE_integer('steps', 600, 'training steps of each model')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 128, 'training and evaluation size')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'training batch of both models')
_TEMPERATURES = flags.DEFINE_list(
  'temperatures',
  [f'{t:g}' for t in calibration.TEMPERATURES],
  "vivid's decoding temperatures that launch.calibrate sweeps on val",
)
_CORRECTIONS = flags.DEFINE_list(
  'prior_corrections',
  [f'{c:g}' for c in calibration.CORRECTIONS],
  "vivid's decoding prior corrections that launch.calibrate sweeps on val (with each "
  'temperature; each pair below the target colorfulness also gets the chroma gain that '
  'reaches it)',
)
# The targets: vivid's colorfulness ratio and tint; its PSNR and AuC drops from seed.
MIN_CF_RATIO, MAX_TINT = calibration.TARGET_COLORFULNESS, calibration.MAX_TINT
MAX_PSNR_DROP, MAX_AUC_DROP = 1.0, 2.0
_MODELS = flags.DEFINE_list('models', list(RUNS), 'which runs to train and evaluate')
_HINT_POINTS = flags.DEFINE_list(
  'hint_points', [str(n) for n in hint_curve.COUNTS], 'the hint counts of the hint curve'
)
HINT_FIGURE_NAME = 'quality_hints.png'  # a photo with 0, 3 and 10 hints, beside the doc
HINT_CURVE_NAME = 'quality_hint_curve.png'
# The hint targets (issue: ideepcolor's published gains over its own automatic output).
HINT_GAINS = {1: 0.94, 5: 2.96, 10: 3.99}
MAX_HINT_COST_PSNR, MAX_HINT_COST_AUC = 0.2, 1.0
_DOC = flags.DEFINE_string('doc', str(DOC), f'the report to write ({FIGURE_NAME} goes beside it)')


# The training photos: coco/train2017 and photos/, less the calibration set, which is held out
# from training and from the report so that the decodings picked on it generalize.
TRAIN_SOURCES = ('coco/train2017', 'photos')
CALIBRATION_SET = 'photos/imagenet_det'


def _stage_train_photos(data_dir, staging):
  """One folder of symlinks to the training photos (data_prep reads one folder)."""
  if staging.exists():
    return
  held_out = (data_dir / CALIBRATION_SET).resolve()
  for sub in TRAIN_SOURCES:
    src = data_dir / sub
    if not src.is_dir():
      raise FileNotFoundError(f'{src} is missing: --data_dir must be the shared photo folder')
    for path in sorted(src.rglob('*')):
      if path.is_file() and held_out not in path.resolve().parents:
        link = staging / sub.replace('/', '_') / path.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())


def build(data_dir, workdir, image_size):
  """Train and val records (resumable: finished splits are kept)."""
  from data_prep import builder  # pylint: disable=g-import-not-at-top

  records = workdir / 'records'
  staging = workdir / 'train_photos'
  _stage_train_photos(data_dir, staging)
  manifest = records / 'manifest.json'
  done = json.loads(manifest.read_text())['splits'] if manifest.exists() else {}
  for split, src in (('train', staging), ('val', data_dir / 'coco' / 'val2017')):
    if split not in done:
      entry = builder.build_records(str(src), str(records), split, image_size=image_size)
      print(builder.summary(entry))
  return records


def latest_checkpoint(run_dir):
  """The step of the newest checkpoint under run_dir/checkpoints (0 when there is none)."""
  steps = [int(p.name) for p in (run_dir / 'checkpoints').glob('*') if p.name.isdigit()]
  return max(steps, default=0)


def add_train_seconds(run_dir, seconds):
  """Adds seconds to the training time this command recorded in run_dir; returns the total, so a
  run resumed by a later invocation still reports the time it took."""
  path = run_dir / 'bench_train_seconds.json'
  total = seconds + (json.loads(path.read_text())['seconds'] if path.exists() else 0.0)
  path.write_text(json.dumps({'seconds': total}))
  return total


def train(name, records, workdir, steps, image_size, batch_size):
  """python -m launch.train with the run's checked-in flagfile; resumes if interrupted."""
  flagfile, extra = RUNS[name]
  cmd = [
    sys.executable,
    '-m',
    'launch.train',
    f'--flagfile=launch/configs/{flagfile}',
    f'--workdir={workdir / name}',
    f'--data_dir={records}',
    f'--image_size={image_size}',
    f'--batch_size={batch_size}',
    f'--num_train_steps={steps}',
    '--worker_count=0',
    f'--eval_every={max(steps // 4, 1)}',
    f'--checkpoint_every={max(steps // 4, 1)}',
    f'--log_every={max(steps // 50, 1)}',
    '--eval_batches=4',
    '--parallel=single',
    *extra,
  ]
  if name in CLASSIFICATION_RUNS:
    cmd.append(f'--warmup_steps={steps // 10}')  # the flagfile's warmup is sized for long runs
    cmd.append('--calibrate=false')  # calibrated below, on the held-out calibration photos
  if latest_checkpoint(workdir / name) >= steps:
    return 0.0  # trained by an earlier invocation
  print(' '.join(cmd), flush=True)
  start = time.time()
  subprocess.run(cmd, check=True, cwd=ROOT)
  return time.time() - start


def calibrate_vivid(vivid_dir, val_dir, image_size, temperatures, corrections):
  """python -m launch.calibrate on the val photos: writes the sweep into vivid_dir/calibration.json,
  which it returns, and the chosen decoding into vivid_dir/model.json (unchanged when no
  decoding keeps the tint <= MAX_TINT: then 'chosen' is None)."""
  result = vivid_dir / 'calibration.json'
  result.unlink(missing_ok=True)  # never report an earlier invocation's sweep
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.calibrate',
      f'--checkpoint={vivid_dir}',
      f'--input={val_dir}',
      f'--image_size={image_size}',
      f'--target_colorfulness={MIN_CF_RATIO}',
      f'--max_tint={MAX_TINT}',
      f'--temperatures={",".join(temperatures)}',
      f'--prior_corrections={",".join(corrections)}',
    ],
    check=False,
    cwd=ROOT,
  )
  if not result.exists():  # it failed before sweeping (a tint failure still writes the sweep)
    raise RuntimeError(f'launch.calibrate exited with {proc.returncode} and wrote no {result}')
  return json.loads(result.read_text())


def device_description():
  """What trained the models: 'CPU, N cores' or the accelerator (this process's JAX backend;
  called after training, so that it never holds a GPU the training subprocesses need)."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.default_backend() == 'cpu':
    return f'CPU, {os.cpu_count()} cores'
  return f'{jax.devices()[0].device_kind} x{jax.device_count()}'


def meets_targets(psnr, auc, tint, seed):
  """The issue's constraints besides colorfulness: tint, and PSNR / AuC against the seed model."""
  accurate = psnr >= seed['psnr'] - MAX_PSNR_DROP and auc >= seed['auc'] - MAX_AUC_DROP
  return tint <= MAX_TINT and accurate


def vivid_section(workdir, record, seed):
  """Markdown: vivid's decoding and launch.calibrate's sweep (record), each row judged against
  seed's metrics."""
  chosen = record['chosen']
  decoding = json.loads((workdir / 'vivid' / 'model.json').read_text())  # what evaluate uses
  how = (
    'the row `python -m launch.calibrate` chose on these coco/val2017 photos from the sweep '
    f'below (the best PSNR with colorfulness ratio >= {MIN_CF_RATIO} and tint <= {MAX_TINT:g}), '
    "as vivid.flags' `--calibrate` does on the val records when training ends"
    if chosen
    else 'the decoding in its model.json, since no decoding in the sweep below kept the tint '
    f'<= {MAX_TINT:g}'
  )
  ok = [meets_targets(r['psnr'], r['auc'], r['tint'], seed) for r in record['sweep']]
  rows = [
    (
      f"{r['temperature']:g}", f"{r['prior_correction']:g}", f"{r['chroma_gain']:.3g}",
      f"{r['psnr']:.2f}", f"{r['auc']:.1f}", f"{r['colorfulness_ratio']:.3f}", f"{r['tint']:.2f}",
      'yes' if good else 'no', 'chosen' if r == chosen else '',
    )
    for r, good in zip(record['sweep'], ok)
  ]  # fmt: skip
  header = ['T', 'prior correction', 'chroma gain', 'PSNR dB', 'AuC %', 'CF ratio',
            'tint length', 'other targets', 'note']  # fmt: skip
  text = f"""## Vivid's decoding, calibrated on val

Vivid is decoded with temperature {decoding['temperature']:g}, prior correction
{decoding['prior_correction']:g} and chroma gain {decoding.get('chroma_gain', 1.0):.4g}: {how}.

The network is unchanged; decoding adds prior_correction * log(rebalancing weight) to each bin's
logit (post-hoc logit adjustment: > 0 toward rarer colors, < 0 toward common ones), takes the
annealed mean at T, then stretches each image's ab around its mean ab by the chroma gain (the
image's mean color, hence the tint, stays). Rows with a gain other than 1 are the gains that bring
a (T, correction) pair to the target colorfulness. 'other targets' = tint <= 3, PSNR and AuC
within 1 dB and 2 points of seed.

{report.table(header, rows)}
"""
  return text


def vivid_targets(seed, vivid):
  tint = calibration.tint_length(vivid)
  return [
    (f'vivid colorfulness ratio >= {MIN_CF_RATIO}', vivid['colorfulness_ratio'],
     vivid['colorfulness_ratio'] >= MIN_CF_RATIO),
    (f'vivid tint length <= {MAX_TINT:g}', tint, tint <= MAX_TINT),
    (f'vivid PSNR >= seed PSNR - {MAX_PSNR_DROP} dB', vivid['psnr'] - seed['psnr'],
     vivid['psnr'] >= seed['psnr'] - MAX_PSNR_DROP),
    (f'vivid AuC >= seed AuC - {MAX_AUC_DROP:g} points', vivid['auc'] - seed['auc'],
     vivid['auc'] >= seed['auc'] - MAX_AUC_DROP),
  ]  # fmt: skip


def hint_targets(points, automatic=None, name='effnet_hints'):
  """The hint issue's targets from a hint model's curve ({count: metrics}) and, when trained,
  the same architecture without hints (its metrics)."""
  zero = points[0]
  rows = []
  if automatic is not None:
    plain = HINT_RUNS[name]
    cost = automatic['psnr'] - zero['psnr']
    rows.append((f'{name} at 0 hints loses <= {MAX_HINT_COST_PSNR} dB PSNR to {plain}', cost,
                 cost <= MAX_HINT_COST_PSNR))  # fmt: skip
    cost = automatic['auc'] - zero['auc']
    rows.append((f'{name} at 0 hints loses <= {MAX_HINT_COST_AUC:g} AuC point to {plain}',
                 cost, cost <= MAX_HINT_COST_AUC))  # fmt: skip
  for count, gain in HINT_GAINS.items():
    if count in points:
      got = points[count]['psnr'] - zero['psnr']
      rows.append((f'gain at {count} hints >= +{gain} dB (ideepcolor)', got, got >= gain))
  counts = sorted(points)
  psnrs = [points[c]['psnr'] for c in counts]
  monotone = all(b >= a for a, b in zip(psnrs, psnrs[1:]))
  rows.append(('PSNR monotone in the number of hints', float(len(counts)), monotone))
  return rows


def hint_figure(checkpoint, val_dir, size, path, counts=(0, 3, 10)):
  """Original | automatic | 3 hints | 10 hints (hints drawn as squares) of the first val photo
  whose automatic colors are furthest from the truth among the first 8, so hints have work."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top

  from colorjax import image_io, inference, lab, metrics, visualize  # pylint: disable=g-import-not-at-top

  colorizer = inference.load(checkpoint)
  photos = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
  Lab = np.stack([lab.rgb8_to_lab(image_io.load_rgb8(p, size)) for p in photos[:8]])
  L, ab = Lab[..., 0], Lab[..., 1:]
  auto = np.asarray(inference.colorize(colorizer, L[..., None]))
  pick = int(np.argmin([metrics.psnr(visualize.lab_to_uint8(l_, g), visualize.lab_to_uint8(l_, a))
                        for l_, g, a in zip(L, ab, auto)]))  # fmt: skip
  tiles = [visualize.lab_to_uint8(L[pick], ab[pick])]
  for count in counts:
    given = None
    if count:
      hint_ab, mask = hint_curve.eval_hints(ab[pick : pick + 1], count)
      given = (hint_ab, mask)
    pred = np.asarray(inference.colorize(colorizer, L[pick : pick + 1, ..., None], hints=given))
    tile = Image.fromarray(visualize.lab_to_uint8(L[pick], pred[0]))
    if count:
      draw = ImageDraw.Draw(tile)
      hinted = mask[0, ..., 0] > 0
      p = hint_curve.PATCH
      # A patch's top-left corner: hinted, with no hinted pixel above it or to its left.
      for y, x in zip(*np.nonzero(hinted)):
        if (y and hinted[y - 1, x]) or (x and hinted[y, x - 1]):
          continue
        draw.rectangle([x - 1, y - 1, x + p, y + p], outline=(255, 255, 255))
        draw.rectangle([x - 2, y - 2, x + p + 1, y + p + 1], outline=(0, 0, 0))
    tiles.append(np.asarray(tile))
  labels = ['Original'] + [f'{c} hints' if c else 'automatic' for c in counts]
  size = tiles[0].shape[0] * 2  # shown at twice the network's size
  visualize.save_png(path, visualize.comparison_grid([tiles], labels, tile_height=size, pad=0))


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  unknown = [m for m in _MODELS.value if m not in RUNS]
  if unknown:
    raise app.UsageError(f'unknown --models {unknown}; choose from {list(RUNS)}')
  data_dir = pathlib.Path(_DATA_DIR.value).resolve()
  workdir = pathlib.Path(_WORKDIR.value).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  size, steps, batch = _IMAGE_SIZE.value, _STEPS.value, _BATCH_SIZE.value
  models = list(_MODELS.value)
  records = build(data_dir, workdir, size)
  seconds, resumed = {}, {}
  for name in models:
    resumed[name] = latest_checkpoint(workdir / name)
    seconds[name] = add_train_seconds(
      workdir / name, train(name, records, workdir, steps, size, batch)
    )
  val_dir = data_dir / 'coco' / 'val2017'
  with_vivid = 'vivid' in models and 'seed' in models
  if with_vivid:  # before the evaluation, which decodes vivid as calibrated
    record = calibrate_vivid(
      workdir / 'vivid', val_dir, size, _TEMPERATURES.value, _CORRECTIONS.value
    )
  eval_dir = workdir / 'eval'
  if eval_dir.exists():
    shutil.rmtree(eval_dir)
  hint_models = [m for m in models if m in HINT_RUNS]
  subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.evaluate',
      *[f'--checkpoint={workdir / name}' for name in models],
      f'--input={val_dir}',
      f'--output_dir={eval_dir}',
      f'--image_size={size}',
      *([f'--hint_points={",".join(_HINT_POINTS.value)}'] if hint_models else []),
    ],
    check=True,
    cwd=ROOT,
  )
  metrics = json.loads((eval_dir / 'metrics.json').read_text())
  result = {name: metrics[str(workdir / name)] for name in models}
  targets, vivid_text = [], ''
  if with_vivid:
    targets += vivid_targets(result['seed'], result['vivid'])
    vivid_text = vivid_section(workdir, record, result['seed'])
  for name in models:
    if 'gray' in metrics and name.startswith('effnet'):
      gap = result[name]['psnr'] - metrics['gray']['psnr']
      targets.append((f'{name} PSNR above the all-gray output (dB)', gap, gap > 0))
  if 'effnet' in models and 'effnet_none' in models:
    gap = result['effnet']['psnr'] - result['effnet_none']['psnr']
    targets.append(
      ('the ImageNet encoder helps: effnet PSNR - effnet_none PSNR (dB)', gap, gap > 0)
    )

  for name in hint_models:
    points = {int(k): v for k, v in metrics['hint_curve'][str(workdir / name)].items()}

    targets += hint_targets(points, result.get(HINT_RUNS[name]), name)
  doc = pathlib.Path(_DOC.value).resolve()
  trained_on = device_description()
  doc.parent.mkdir(parents=True, exist_ok=True)
  figures = sorted((eval_dir / 'figures').glob('*.png'))
  if figures:
    shutil.copyfile(figures[0], doc.parent / FIGURE_NAME)
  hint_text = ''
  if hint_models:
    shutil.copyfile(eval_dir / 'hint_curve.png', doc.parent / HINT_CURVE_NAME)
    hint_figure(workdir / hint_models[0], val_dir, size, doc.parent / HINT_FIGURE_NAME)
    hint_text = f"""## Hints

The curve is what `colorize` returns: the network's answer to its hint inputs with each hint's
color spread over the pixels alike (colorjax/propagation.py). The network alone, and the
decodings that beat the all-gray output: `bench.shipped_quality` (docs/shipped_quality.md).

![hint curve]({HINT_CURVE_NAME})

A val photo (the worst automatic PSNR among the first 8), its automatic colorization by
{hint_models[0]}, and the same with 3 and 10 hints (6x6 patches of the photo's own mean colors at
the protocol's positions, framed):

![hints]({HINT_FIGURE_NAME})
"""
  table = (eval_dir / 'report.md').read_text().replace(str(workdir) + os.sep, '')
  table = table.replace('![hint curve](hint_curve.png)\n', '')  # shown under Hints below
  table = table.split('\n', 1)[1] if table.startswith('# ') else table
  n_val = len(next(iter(result.values()))['per_image'])
  n_train = json.loads((records / 'manifest.json').read_text())['splits']['train']['num_records']
  command = 'python -m bench.quality ' + ' '.join(
    f'--{k}={v}'
    for k, v in (
      ('data_dir', _DATA_DIR.value),
      ('workdir', _WORKDIR.value),
      ('steps', steps),
      ('image_size', size),
      ('batch_size', batch),
      ('models', ','.join(models)),
    )
  )
  resumed_text = ''.join(
    f'; {k} resumed from its step-{v} checkpoint of an earlier run of this command (exact '
    'resume: same data order, optimizer state and schedule; the time adds up every invocation '
    'of this command that recorded one)'
    for k, v in resumed.items()
    if v
  )
  flagfiles = ', '.join(
    f'`launch/configs/{RUNS[m][0]}`' + ''.join(f' `{flag}`' for flag in RUNS[m][1]) for m in models
  )
  times = ', '.join(f'{k} {v / 60:.1f} min' for k, v in seconds.items())
  target_table = report.table(
    ['target', 'value', 'met'], [(n, float(v), 'yes' if ok else 'no') for n, v, ok in targets]
  )
  text = f"""# Quality: every model trained alike, on the same val photos

Written by `{command}` on {report.machine()}.

Each model trained for {steps} steps of batch {batch} at {size}x{size} on coco/train2017 + photos/
less {CALIBRATION_SET} ({n_train} photos after data_prep's filters), with the report's
augmentation; evaluated by `launch.evaluate` on {n_val}
coco/val2017 photos at {size}x{size}. Training time: {times} ({trained_on}){resumed_text}.
Settings: {flagfiles}.

{table.strip()}

## Targets

{target_table}

{hint_text}
{vivid_text}
## Figure

Original | Grayscale | {' | '.join(models)} (the first val photos).

![quality figure]({FIGURE_NAME})
"""
  doc.write_text(text)
  print(text)
  print(f'wrote {doc}')


if __name__ == '__main__':
  app.run(main)
