"""Orbax checkpoints of the train state and the Grain data iterator (the workdir contract).

A run keeps several checkpoints (make_manager's `keep`), so that one unreadable checkpoint (a
disk error, a file truncated by a full disk or a copy cut short) does not lose the run:
restore_latest and restore_params fall back from the newest checkpoint to the next one that
reads, with a warning naming both steps. restore_latest then moves the unreadable newer ones to
WORKDIR/unreadable_checkpoints/ (kept, not deleted), since the resumed run will save those steps
again and Orbax refuses to save over an existing step.
"""

import logging
import os
import sys
from typing import Any, NamedTuple

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from colorjax import parallel, train_step

CHECKPOINT_DIR = 'checkpoints'
# restore_latest moves checkpoints it fell back past here (WORKDIR/unreadable_checkpoints/STEP),
# out of the manager's way: the resumed run saves those steps again.
UNREADABLE_DIR = 'unreadable_checkpoints'


class Restored(NamedTuple):
  """restore_latest's result: `state, data_iterator = restored` (as before) and `restored.step`.

  step is a property, not a third field, so callers that unpack two values keep working.
  """

  state: Any  # a train_step.TrainState of host NumPy arrays
  data_iterator: Any  # the iterator passed in, its position restored in place

  @property
  def step(self):
    """The restored checkpoint's step (restore_latest checks it equals state.step)."""
    return int(self.state.step)


class CheckpointError(RuntimeError):
  """No kept checkpoint could be read (or the one asked for could not)."""


def _directory(workdir):
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def _short(error):
  """An exception as one short line (Orbax and TensorStore errors span many lines)."""
  text = ' '.join(str(error).split()) or type(error).__name__
  text = f'{type(error).__name__}: {text}'
  return text if len(text) <= 300 else text[:297] + '...'


def _is_closed_loop_callback(unraisable):
  exc = unraisable.exc_value
  return isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed'


def _quiet_closed_loop_callbacks():
  """After a failed restore, TensorStore reads still in flight finish into Orbax's closed event
  loop and print 'Event loop is closed' tracebacks (sys.unraisablehook) for seconds after the
  error was raised: noise about an error already reported. From the first failure on, drop just
  those; every other unraisable exception still reaches the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, '_colorjax_quiet', False):
    return

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)

  hook._colorjax_quiet = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


def _all_processes_agree(ok):
  """True iff `ok` on every process: all processes must fall back to the same step."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def make_manager(workdir, *, keep=3, async_save=True):
  """A CheckpointManager over WORKDIR/checkpoints with items 'state' and 'data', keeping `keep`."""
  if keep <= 0:
    raise ValueError(f'keep must be > 0, got {keep}')
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=True,
    enable_async_checkpointing=async_save,
    cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(_directory(workdir), options=options, item_names=('state', 'data'))


def save(manager, step, state, data_iterator):
  """Saves state (a TrainState whose step is `step`) and the iterator's position (async).

  The arrays are saved as host NumPy copies (this process' first replica), so the checkpoint
  carries no device sharding and restores without a target on any machine or topology.
  """
  host = parallel.host_copy(state.to_dict())
  args = ocp.args.Composite(
    state=ocp.args.StandardSave(host),
    data=grain.checkpoint.CheckpointSave(data_iterator),
  )
  manager.save(step, args=args, force=True)


def _restore_one(manager, step, target, data_iterator):
  """The TrainState of one step, and the iterator set to that step's position; raises on any
  failure, leaving the iterator where it was."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  state = train_step.TrainState.from_dict(restored['state'])
  if int(state.step) != step:
    raise ValueError(f'the checkpoint of step {step} holds state.step {int(state.step)}')
  # Only now the data position: Grain sets it in place, so undo a failed (partial) restore.
  before = data_iterator.get_state()
  try:
    data = grain.checkpoint.CheckpointRestore(data_iterator)
    manager.restore(step, args=ocp.args.Composite(data=data))
  except Exception:
    data_iterator.set_state(before)
    raise
  return state


def restore_latest(manager, target_state, data_iterator):
  """The newest checkpoint that reads, or None when there is none.

  Steps are tried newest first; one that fails to restore (state or data position) is skipped
  with the warning "checkpoint at step N is unreadable (ERROR); falling back to step M".

  Args:
    manager: from make_manager.
    target_state: a TrainState of the right structure (e.g. freshly initialized); the restored
      arrays come back as host NumPy arrays of its shapes and dtypes.
    data_iterator: a Grain iterator of the same pipeline (get_state / set_state); its position
      is restored in place, and left unchanged by a step that fails.
  Returns:
    Restored(state, data_iterator) with .step, or None when the manager has no checkpoint.
  Raises:
    CheckpointError: every kept checkpoint failed (one line naming the folder and each error).
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  target = jax.tree.map(
    lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), jax.device_get(target_state.to_dict())
  )
  errors = []
  for i, step in enumerate(steps):
    try:
      state, error = _restore_one(manager, step, target, data_iterator), None
    except Exception as e:  # pylint: disable=broad-except  (any corruption: try the next one)
      state, error = None, e
    if _all_processes_agree(error is None):
      if i:
        _set_aside(manager, steps[:i], step)
      return Restored(state, data_iterator)
    reason = _short(error) if error is not None else 'unreadable on another process'
    errors.append(_fail(step, reason, steps[i + 1 :]))
  raise CheckpointError(
    f'every checkpoint under {manager.directory} is unreadable: {"; ".join(errors)}'
  )


def _set_aside(manager, unreadable, resumed):
  """Moves the checkpoints of the `unreadable` steps to WORKDIR/unreadable_checkpoints/."""
  directory = os.fspath(manager.directory)
  aside = os.path.join(os.path.dirname(directory), UNREADABLE_DIR)
  if jax.process_index() == 0:  # one process moves them (the folder is shared)
    os.makedirs(aside, exist_ok=True)
    for step in unreadable:
      target, n = os.path.join(aside, str(step)), 1
      while os.path.lexists(target):  # an earlier one of the same step is kept too
        target, n = os.path.join(aside, f'{step}.{n}'), n + 1
      os.rename(os.path.join(directory, str(step)), target)
      logging.warning(
        'moved the unreadable checkpoint of step %d to %s (delete it once you no longer need '
        'it); the run resumes from step %d',
        step,
        target,
        resumed,
      )
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices('colorjax checkpoint set aside')
  manager.reload()


def _fail(step, reason, rest):
  """Logs the fallback to the next step (if any); returns 'step N: reason' for a final error."""
  _quiet_closed_loop_callbacks()
  if rest:
    logging.warning(
      'checkpoint at step %d is unreadable (%s); falling back to step %d', step, reason, rest[0]
    )
  return f'step {step}: {reason}'


def _reader(workdir):
  """A manager of WORKDIR/checkpoints for reading (it is never asked to save or delete), whose
  'state' item restores partially."""
  options = ocp.CheckpointManagerOptions(create=False)
  handlers = {'state': ocp.PyTreeCheckpointHandler(), 'data': grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(_directory(workdir), options=options, item_handlers=handlers)


def available_steps(workdir):
  """The steps of WORKDIR/checkpoints' finished checkpoints, ascending ([] when none)."""
  if not os.path.isdir(_directory(workdir)):
    return []
  manager = _reader(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def _restore_params_of(manager, step):
  """{'params': ...} of one step as NumPy arrays, reading nothing of opt_state."""
  metadata = manager.item_metadata(step)['state']
  tree = None if metadata is None else metadata.tree
  if not isinstance(tree, dict) or 'params' not in tree:
    raise ValueError(f'the checkpoint of step {step} has no state/params')
  item = {'params': jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree['params'])}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray), item)
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    ),
  )
  return restored['state']['params']


def restore_params(workdir, step=None):
  """The params dict ({'params': ...}) of a workdir's newest readable (or given) checkpoint.

  Reads only the params (Orbax partial restore): the optimizer state, twice their size with
  Adam, is neither read nor needed, so a damaged optimizer state does not matter here.

  Args:
    workdir: a training workdir (holding checkpoints/).
    step: a checkpoint step; None tries the steps newest first, falling back past unreadable
      ones with the warning "checkpoint at step N is unreadable (ERROR); falling back to step M".
  Returns:
    {'params': {...}} of host NumPy arrays.
  Raises:
    FileNotFoundError: no checkpoint (or none of that step).
    CheckpointError: the given step, or with step=None every step, is unreadable (one line
      naming the folder, the step(s) and the error(s)).
  """
  directory = _directory(workdir)
  steps = available_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'no checkpoint under {directory}')
  if step is not None and step not in steps:
    raise FileNotFoundError(f'no checkpoint of step {step} under {directory} (it has {steps})')
  manager = _reader(workdir)
  try:
    if step is not None:
      try:
        return _restore_params_of(manager, step)
      except Exception as e:  # pylint: disable=broad-except  (one clear line instead)
        _quiet_closed_loop_callbacks()
        raise CheckpointError(
          f'the checkpoint of step {step} under {directory} is unreadable ({_short(e)})'
        ) from e
    newest_first = steps[::-1]
    errors = []
    for i, s in enumerate(newest_first):
      try:
        return _restore_params_of(manager, s)
      except Exception as e:  # pylint: disable=broad-except  (any corruption: try the next one)
        errors.append(_fail(s, _short(e), newest_first[i + 1 :]))
    raise CheckpointError(f'every checkpoint under {directory} is unreadable: {"; ".join(errors)}')
  finally:
    manager.close()
