"""The quality experiment: the report's model (seed, MSE) against vivid, same data and steps.

python -m bench.quality --data_dir=../shared/data --workdir=W [--steps=N] [--image_size=128]

Builds records from coco/train2017 + photos/ (train) and coco/val2017 (val) under W/records, trains
W/seed (launch/configs/seed_coco.flags) and W/vivid (launch/configs/vivid.flags) for the same
steps at the same size and batch, picks vivid's decoding (temperature, prior correction, chroma
gain) on the coco/val2017 photos with launch.calibrate (what vivid.flags' --calibrate does on
the val records after training), evaluates both with launch.evaluate on the same photos
(W/eval), and writes docs/quality.md with the table, the targets, the calibration sweep and a
figure (Original, Grayscale, seed, vivid).
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
from colorjax import calibration  # its grid and targets (no JAX work in this process)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / 'docs' / 'quality.md'
FIGURE_NAME = 'quality_figure.png'  # written beside the doc

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
_MODELS = flags.DEFINE_list('models', ['seed', 'vivid'], 'which runs to train (both are evaluated)')
_DOC = flags.DEFINE_string('doc', str(DOC), f'the report to write ({FIGURE_NAME} goes beside it)')


def _stage_train_photos(data_dir, staging):
  """One folder of symlinks to coco/train2017 and photos/ (data_prep reads one folder)."""
  if staging.exists():
    return
  for sub in ('coco/train2017', 'photos'):
    src = data_dir / sub
    if not src.is_dir():
      raise FileNotFoundError(f'{src} is missing: --data_dir must be the shared photo folder')
    for path in sorted(src.rglob('*')):
      if path.is_file():
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
  """python -m launch.train with the checked-in flagfile; resumes if interrupted."""
  cmd = [
    sys.executable,
    '-m',
    'launch.train',
    f'--flagfile=launch/configs/{name}_coco.flags'
    if name == 'seed'
    else f'--flagfile=launch/configs/{name}.flags',
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
  ]
  if name == 'vivid':
    cmd.append(f'--warmup_steps={steps // 10}')  # the flagfile's warmup is sized for long runs
    cmd.append('--calibrate=false')  # calibrate_vivid picks the decoding on the val photos
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


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  data_dir = pathlib.Path(_DATA_DIR.value).resolve()
  workdir = pathlib.Path(_WORKDIR.value).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  size, steps, batch = _IMAGE_SIZE.value, _STEPS.value, _BATCH_SIZE.value
  records = build(data_dir, workdir, size)
  seconds, resumed = {}, {}
  for name in _MODELS.value:
    resumed[name] = latest_checkpoint(workdir / name)
    seconds[name] = add_train_seconds(
      workdir / name, train(name, records, workdir, steps, size, batch)
    )
  val_dir = data_dir / 'coco' / 'val2017'
  record = calibrate_vivid(
    workdir / 'vivid', val_dir, size, _TEMPERATURES.value, _CORRECTIONS.value
  )
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
  eval_dir = workdir / 'eval'
  if eval_dir.exists():
    shutil.rmtree(eval_dir)
  subprocess.run(
    [
      sys.executable,
      '-m',
      'launch.evaluate',
      f'--checkpoint={workdir / "seed"}',
      f'--checkpoint={workdir / "vivid"}',
      f'--input={val_dir}',
      f'--output_dir={eval_dir}',
      f'--image_size={size}',
    ],
    check=True,
    cwd=ROOT,
  )
  metrics = json.loads((eval_dir / 'metrics.json').read_text())
  seed, vivid = metrics[str(workdir / 'seed')], metrics[str(workdir / 'vivid')]
  tint = calibration.tint_length(vivid)
  targets = [
    (
      f'vivid colorfulness ratio >= {MIN_CF_RATIO}',
      vivid['colorfulness_ratio'],
      vivid['colorfulness_ratio'] >= MIN_CF_RATIO,
    ),
    (f'vivid tint length <= {MAX_TINT:g}', tint, tint <= MAX_TINT),
    (
      f'vivid PSNR >= seed PSNR - {MAX_PSNR_DROP} dB',
      vivid['psnr'] - seed['psnr'],
      vivid['psnr'] >= seed['psnr'] - MAX_PSNR_DROP,
    ),
    (
      f'vivid AuC >= seed AuC - {MAX_AUC_DROP:g} points',
      vivid['auc'] - seed['auc'],
      vivid['auc'] >= seed['auc'] - MAX_AUC_DROP,
    ),
  ]
  sweep = record['sweep']
  ok = [meets_targets(r['psnr'], r['auc'], r['tint'], seed) for r in sweep]
  sweep_rows = [
    (
      f"{r['temperature']:g}", f"{r['prior_correction']:g}", f"{r['chroma_gain']:.3g}",
      f"{r['psnr']:.2f}", f"{r['auc']:.1f}", f"{r['colorfulness_ratio']:.3f}", f"{r['tint']:.2f}",
      'yes' if good else 'no',
      'chosen' if r == chosen else '',
    )
    for r, good in zip(sweep, ok)
  ]  # fmt: skip
  doc = pathlib.Path(_DOC.value).resolve()
  trained_on = device_description()
  doc.parent.mkdir(parents=True, exist_ok=True)
  figures = sorted((eval_dir / 'figures').glob('*.png'))
  if figures:
    shutil.copyfile(figures[0], doc.parent / FIGURE_NAME)
  table = (eval_dir / 'report.md').read_text().replace(str(workdir) + os.sep, '')
  n_val = len(seed['per_image'])
  n_train = json.loads((records / 'manifest.json').read_text())['splits']['train']['num_records']
  command = 'python -m bench.quality ' + ' '.join(
    f'--{k}={v}'
    for k, v in (
      ('data_dir', _DATA_DIR.value),
      ('workdir', _WORKDIR.value),
      ('steps', steps),
      ('image_size', size),
      ('batch_size', batch),
    )
  )
  text = f"""# Quality: the report's model against vivid

Written by `{command}` on {report.machine()}.

Both models trained for {steps} steps of batch {batch} at {size}x{size} on coco/train2017 + photos/
({n_train} photos after
data_prep's filters), with the report's augmentation; evaluated by `launch.evaluate` on {n_val}
coco/val2017 photos at {size}x{size}. Training time: {
    ', '.join(f'{k} {v / 60:.1f} min' for k, v in seconds.items())
  } ({trained_on}){
    ''.join(
      f'; {k} resumed from its step-{v} checkpoint of an earlier run of this command (exact '
      'resume: same data order, optimizer state and schedule; the time adds up every invocation '
      'of this command that recorded one)'
      for k, v in resumed.items()
      if v
    )
  }. Settings: `launch/configs/seed_coco.flags` and
`launch/configs/vivid.flags`.

{table.strip()}

## Targets

{
    report.table(
      ['target', 'value', 'met'], [(n, float(v), 'yes' if ok else 'no') for n, v, ok in targets]
    )
  }

## Vivid's decoding, calibrated on val

Vivid is decoded with temperature {decoding['temperature']:g}, prior correction
{decoding['prior_correction']:g} and chroma gain {decoding.get('chroma_gain', 1.0):.4g}: {how}.

The network is unchanged; decoding adds prior_correction * log(rebalancing weight) to each bin's
logit (post-hoc logit adjustment: > 0 toward rarer colors, < 0 toward common ones), takes the
annealed mean at T, then stretches each image's ab around its mean ab by the chroma gain (the
image's mean color, hence the tint, stays). Rows with a gain other than 1 are the gains that bring
a (T, correction) pair to the target colorfulness. 'other targets' = tint <= 3, PSNR and AuC
within 1 dB and 2 points of seed.

{
    report.table(
      [
        'T',
        'prior correction',
        'chroma gain',
        'PSNR dB',
        'AuC %',
        'CF ratio',
        'tint length',
        'other targets',
        'note',
      ],
      sweep_rows,
    )
  }

## Figure

Original | Grayscale | seed | vivid (the first val photos).

![quality figure]({FIGURE_NAME})
"""
  doc.write_text(text)
  print(text)
  print(f'wrote {doc}')


if __name__ == '__main__':
  app.run(main)
