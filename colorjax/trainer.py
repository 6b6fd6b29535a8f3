"""The training loop: train_and_evaluate(config, workdir) with eval, logging and checkpoints.

Workdir layout (docs: the training contract): model.json, train_config.json, checkpoints/
(Orbax: 'state' = {'step', 'params', 'opt_state'} and 'data' = the Grain iterator),
metrics.jsonl, tensorboard/, samples/step_NNNNNNN.png. A run resumes from the newest checkpoint;
SIGTERM saves one and returns; a non-finite loss or gradient raises FloatingPointError without
saving. Batches are placed on the device(s) ahead of the step, in a background thread.
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from typing import Any

import flax
import jax
import numpy as np
import tqdm

from colorjax import (
  checkpoint,
  fileutil,
  input_pipeline,
  models,
  parallel,
  quantize,
  summaries,
  train_step,
)
from colorjax.train_config import TrainConfig


class _SigtermFlag:
  """Records SIGTERM (preemption) instead of dying, so the loop can save first."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step, metrics, manager):
  values = {k: float(v) for k, v in metrics.items()}
  if not all(math.isfinite(v) for v in values.values()):
    manager.wait_until_finished()
    raise FloatingPointError(
      f'non-finite training metrics at step {step}: {values}; stopping. The last good '
      f'checkpoint (step {manager.latest_step()}) is under {manager.directory}.'
    )
  return values


def _due(step, every, last):
  """Whether something done every `every` steps (and at the last step) is due after `step`."""
  return step % every == 0 or step == last


def class_weights(data_dir, lam=quantize.LAMBDA):
  """The classification loss' rebalancing weights (Q,) from the train split's ab histogram.

  data_prep records it in DATA/manifest.json; quantize turns it into the smoothed color prior.
  """
  path = os.path.join(data_dir, 'manifest.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'the classification loss needs {path} (data_prep) for its prior')
  with open(path) as f:
    counts = json.load(f)['splits']['train']['ab_histogram']['counts']
  prior = quantize.prior_from_histogram(np.asarray(counts, np.float32))
  return np.asarray(quantize.rebalance_weights(prior, lam=lam))


def load_samples(data_dir, count, batch_size):
  """The first `count` validation examples (fixed across evals) as uint8/int8 codes."""
  if count == 0:
    return None
  L, ab = [], []
  for batch in input_pipeline.eval_dataset(
    data_dir, batch_size=batch_size, shard_index=0, shard_count=1
  ):
    keep = np.asarray(batch['mask'])
    L.append(np.asarray(batch['L'])[keep])
    ab.append(np.asarray(batch['ab'])[keep])
    if sum(len(x) for x in L) >= count:
      break
  return {'L': np.concatenate(L)[:count], 'ab': np.concatenate(ab)[:count]}


def validation_loss(eval_fn, params, config):
  """Mean validation loss over this process' val slice, summed over processes."""
  totals = np.zeros(2, np.float64)
  for i, batch in enumerate(
    input_pipeline.eval_dataset(config.data_dir, batch_size=config.batch_size)
  ):
    if config.eval_batches and i >= config.eval_batches:
      break
    out = eval_fn(params, batch)
    totals += [float(out['loss_sum']), float(out['count'])]
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    totals = np.asarray(multihost_utils.process_allgather(totals)).sum(axis=0)
  return totals[0] / max(totals[1], 1.0)


def _write_samples(writer, workdir, step, predict_fn, params, samples):
  from colorjax import records  # pylint: disable=g-import-not-at-top

  L, ab = records.dequantize(samples['L'], samples['ab'])
  pred = np.asarray(predict_fn(params, L))
  grid = summaries.sample_grid(L, ab, pred)
  path = os.path.join(workdir, 'samples', f'step_{step:07d}.png')
  if writer.enabled:
    from colorjax import visualize  # pylint: disable=g-import-not-at-top

    os.makedirs(os.path.dirname(path), exist_ok=True)
    visualize.save_png(path, grid)
    writer.image(step, 'samples', grid)
  return path


def calibrate_decoding(workdir, data_dir, max_images, max_tint):
  """calibration.calibrate on the val split of data_dir's records: the chosen row, or None (and
  model.json unchanged) when no decoding keeps the tint <= max_tint."""
  from colorjax import calibration  # pylint: disable=g-import-not-at-top

  try:
    _, best = calibration.calibrate(
      workdir, data_dir, split='val', max_images=max_images or None, max_tint=max_tint, lock=False
    )
  except ValueError as e:
    print(f'calibration kept the training decoding: {e}')
    return None
  return best


@dataclasses.dataclass
class TrainResult:
  """What train_and_evaluate returns."""

  state: Any  # the final TrainState, as host NumPy arrays
  step: int  # its step
  loss: float | None = None  # the last logged training loss
  val_loss: float | None = None  # the last validation loss
  images_per_sec: float | None = None  # of the last logged window
  preempted: bool = False  # SIGTERM stopped the run (after saving)
  samples: str | None = None  # the last sample grid's path
  last_checkpoint: int = 0  # the step of the last checkpoint saved
  calibration: dict | None = None  # calibrate_decoding's row (config.calibrate only)


def _model_config(config):
  """The run's ModelConfig and the classification loss' weights (None for MSE)."""
  model_config = config.model_config()
  if config.loss != 'classification':
    return model_config, None
  weights_Q = class_weights(config.data_dir, config.rebalance_lambda)
  # Saved with the model: decoding with prior_correction needs them (see colorjax.decoding).
  log_w = tuple(round(float(x), 6) for x in np.log(weights_Q))
  return dataclasses.replace(model_config, bin_log_weights=log_w), weights_Q


def init_params(source, model_config):
  """The params of `source` (see TrainConfig.init_from) for a run of model_config; ValueError
  (one line) when its architecture differs."""
  from colorjax import inference  # pylint: disable=g-import-not-at-top

  colorizer = inference.load(source)
  fields = [f for f in ARCHITECTURE_FIELDS if f != 'image_size']  # fully convolutional
  differ = [
    f'{f} {getattr(colorizer.config, f)!r} (this run: {getattr(model_config, f)!r})'
    for f in fields
    if getattr(colorizer.config, f) != getattr(model_config, f)
  ]
  if differ:
    raise ValueError(f'--init_from={source} is another architecture: {"; ".join(differ)}')
  return colorizer.params


def merge_params(initialized, source):
  """`initialized` with every layer that `source` also has replaced by source's: a model that
  grew new layers (e.g. effnet_unet's hint pyramid) starts from an older run, the new layers
  keeping their initialization (logged). ValueError (one line) when a shared layer's shape
  differs or source has layers this model lacks."""
  flat_init = flax.traverse_util.flatten_dict(initialized, sep='/')
  flat_source = flax.traverse_util.flatten_dict(source, sep='/')
  unknown = sorted(set(flat_source) - set(flat_init))
  if unknown:
    raise ValueError(f'--init_from has layers this model lacks: {", ".join(unknown[:5])}')
  merged, new = {}, []
  for name, value in flat_init.items():
    if name not in flat_source:
      merged[name] = value
      new.append(name)
      continue
    if np.shape(flat_source[name]) != np.shape(value):
      raise ValueError(
        f'--init_from: {name} has shape {np.shape(flat_source[name])}, this model {np.shape(value)}'
      )
    merged[name] = np.asarray(flat_source[name], np.asarray(value).dtype)
  if new:
    print(f'--init_from: {len(new)} new layers keep their initialization: {", ".join(new)}')
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def _initial_state(config, model_config, model, tx, rng):
  """The step-0 TrainState: initialized params, with the ImageNet encoder where asked."""
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, config.image_size))(rng)
  if config.init_from:
    params = merge_params(jax.device_get(state.params), init_params(config.init_from, model_config))
    return state.replace(params=params, opt_state=tx.init(params))
  if model_config.name != 'effnet_unet' or config.encoder_init != 'imagenet':
    return state
  from colorjax import effnet_unet  # pylint: disable=g-import-not-at-top

  params = effnet_unet.with_imagenet_encoder(jax.device_get(state.params))
  return state.replace(params=params, opt_state=tx.init(params))


# The ModelConfig fields whose change makes a workdir's checkpoints another model's.
ARCHITECTURE_FIELDS = ('name', 'loss', 'image_size', 'width', 'head_stride', 'hints')


def check_workdir(workdir, model_config):
  """Raises ValueError, before anything is written, when workdir holds checkpoints of a model
  whose architecture differs from model_config's (naming the fields); the decoding knobs and
  the computation dtype may change on resume."""
  path = os.path.join(workdir, 'model.json')
  if not checkpoint.available_steps(workdir):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{workdir} holds checkpoints but its model.json is unreadable: {e}') from e
  defaults = models.ModelConfig()
  differ = [
    f'{name} {saved.get(name, getattr(defaults, name))!r} (asked: {getattr(model_config, name)!r})'
    for name in ARCHITECTURE_FIELDS
    if saved.get(name, getattr(defaults, name)) != getattr(model_config, name)
  ]
  if differ:
    raise ValueError(
      f'{workdir} holds checkpoints of another model: {"; ".join(differ)}. Choose another '
      '--workdir, or resume with its settings'
    )


def check_records(config):
  """Raises ValueError when the records' image size is not config.image_size."""
  for split in ('train', 'val'):
    height, width = input_pipeline.example_size(config.data_dir, split)
    if (height, width) != (config.image_size, config.image_size):
      raise ValueError(
        f'the {split} records in {config.data_dir} are {height}x{width}, not --image_size='
        f'{config.image_size}; rebuild them at that size or pass --image_size={height}'
      )


def _write_configs(workdir, model_config, config):
  fileutil.atomic_write_text(os.path.join(workdir, 'model.json'), model_config.to_json())
  fileutil.atomic_write_text(
    os.path.join(workdir, 'train_config.json'),
    json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True),
  )


class _Loop:
  """The per-step bookkeeping of train_and_evaluate: the metrics window, logs, evals, saves."""

  def __init__(self, config, workdir, writer, manager, runner, fns, samples):
    self.config, self.workdir, self.writer = config, workdir, writer
    self.manager, self.runner, self.samples = manager, runner, samples
    self.eval_fn, self.predict_fn = fns
    self.window, self.window_start = [], time.perf_counter()

  def log(self, step, result, bar):
    config = self.config
    now = time.perf_counter()
    row = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[-1]}
    row['images_per_sec'] = len(self.window) * config.batch_size / (now - self.window_start)
    row['learning_rate'] = float(
      train_step.learning_rate_schedule(
        config.learning_rate, config.total_steps, config.warmup_steps, config.decay
      )(step)
    )
    self.writer.scalars(step, row)
    bar.set_postfix(loss=f'{row["loss"]:.4f}', img_s=f'{row["images_per_sec"]:.1f}')
    result.loss, result.images_per_sec = row['loss'], row['images_per_sec']
    self.window, self.window_start = [], now

  def checkpoint(self, step, placed, data_iter, result):
    checkpoint.save(self.manager, step, self.runner.get_state(placed), data_iter)
    result.last_checkpoint = step

  def evaluate(self, step, placed, result):
    params = self.runner.local_params(placed)
    result.val_loss = validation_loss(self.eval_fn, params, self.config)
    self.writer.scalars(step, {'val_loss': result.val_loss})
    if self.samples is not None:
      result.samples = _write_samples(
        self.writer, self.workdir, step, self.predict_fn, params, self.samples
      )
    self.window_start = time.perf_counter()  # the eval's time is not the window's


def train_and_evaluate(config: TrainConfig, workdir) -> TrainResult:
  """Trains in workdir, process 0 holding its lock (a second run there raises
  fileutil.LockedError before anything is written); see _train_and_evaluate."""
  pidx, pcount = parallel.initialize_distributed(
    config.coordinator_address, config.num_processes, config.process_id
  )
  os.makedirs(workdir, exist_ok=True)
  with fileutil.exclusive_lock(workdir) if pidx == 0 else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir, pidx, pcount)


def _train_and_evaluate(config: TrainConfig, workdir, pidx, pcount) -> TrainResult:
  """Trains (resuming from workdir's newest checkpoint), evaluates and logs; see module doc.

  Args:
    config: the run's TrainConfig; its data_dir must hold the records (launch.train builds the
      sample records first when config.sample_data is set).
    workdir: output folder (created if missing).

  Returns:
    A TrainResult; with config.calibrate on a classification run that finished, its calibration
    is calibrate_decoding's row.
  """
  is_main = pidx == 0
  check_records(config)
  model_config, weights_Q = _model_config(config)
  check_workdir(workdir, model_config)

  model = models.create_model(model_config)
  tx = config.optimizer()
  step_fn, eval_fn, predict_fn = train_step.bind(
    model, tx, model_config, config.augment_config(), weights_Q, config.hint_config()
  )
  runner = parallel.make_runner(config.parallel, step_fn, config.batch_size)
  num_steps = config.total_steps
  local_batch = config.batch_size // pcount
  if local_batch * pcount != config.batch_size:
    raise ValueError(f'batch_size {config.batch_size} does not split over {pcount} processes')

  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  state = _initial_state(config, model_config, model, tx, init_rng)
  index = parallel.global_example_index(local_batch, pidx, pcount)
  dataset = input_pipeline.train_dataset(
    config.data_dir, batch_size=local_batch, seed=config.seed, worker_count=config.worker_count
  ).map(lambda b: {'L': b['L'], 'ab': b['ab'], 'index': index})
  data_iter = iter(input_pipeline.device_prefetch(dataset, put=runner.put_batch))
  manager = checkpoint.make_manager(
    workdir, keep=config.keep_checkpoints, async_save=config.async_checkpoints
  )
  restored = checkpoint.restore_latest(manager, state, data_iter)
  if restored is not None:
    state, data_iter = restored
  start = int(parallel.host_copy(state.step))
  if start >= config.total_steps:
    raise ValueError(
      f'nothing to do: the checkpoint in {workdir} is at step {start}, and --num_train_steps asks '
      f'for {config.total_steps}; raise it to train further'
    )
  if is_main:
    _write_configs(workdir, model_config, config)
  placed = runner.put_state(state)
  del state
  samples = load_samples(config.data_dir, config.num_samples, config.batch_size)
  writer = summaries.MetricWriter(workdir, enabled=is_main, resume_step=start)
  loop = _Loop(
    config, workdir, writer, manager, runner, (jax.jit(eval_fn), jax.jit(predict_fn)), samples
  )
  result = TrainResult(state=None, step=start, last_checkpoint=start)
  if is_main and start:
    print(f'resuming from the checkpoint at step {start}')

  pending = None
  bar = tqdm.tqdm(
    total=num_steps, initial=start, desc='train', disable=not is_main, dynamic_ncols=True
  )
  try:
    with _SigtermFlag() as sigterm:
      for step in range(start, num_steps):
        placed, metrics = runner.step(placed, next(data_iter), jax.random.fold_in(train_rng, step))
        done = step + 1
        # Check the previous step while this one runs; sync on steps that log or save.
        if pending is not None:
          loop.window.append(_check_finite(*pending, manager))
        pending = (done, metrics)
        bar.update(1)
        is_log = _due(done, config.log_every, num_steps)
        is_eval = _due(done, config.eval_every, num_steps)
        is_ckpt = _due(done, config.checkpoint_every, num_steps) or sigterm.raised
        if not (is_log or is_eval or is_ckpt):
          continue
        loop.window.append(_check_finite(*pending, manager))
        pending = None
        if is_log:
          loop.log(done, result, bar)
        if is_ckpt:
          loop.checkpoint(done, placed, data_iter, result)
        if is_eval:
          loop.evaluate(done, placed, result)
        if sigterm.raised:
          result.preempted = True
          if is_main:
            print(f'\nSIGTERM: saved the checkpoint at step {done} and stopped')
          break
      if pending is not None:
        _check_finite(*pending, manager)
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  result.state = parallel.host_copy(runner.get_state(placed))
  result.step = int(result.state.step)
  finished = result.step == num_steps and not result.preempted
  if is_main and finished and config.calibrate and config.loss == 'classification':
    result.calibration = calibrate_decoding(
      workdir, config.data_dir, config.calibrate_images, config.calibrate_max_tint
    )
  if is_main and result.samples:
    print(f'sample colorizations: {os.path.abspath(result.samples)}')
  return result
