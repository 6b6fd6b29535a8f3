"""Orbax checkpoints of the train state and the Grain data iterator (the workdir contract)."""

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from colorjax import parallel, train_step

CHECKPOINT_DIR = 'checkpoints'


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
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
    options=options,
    item_names=('state', 'data'),
  )


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


def restore_latest(manager, target_state, data_iterator):
  """(state, data_iterator) from the newest checkpoint, or None when there is none.

  Args:
    manager: from make_manager.
    target_state: a TrainState of the right structure (e.g. freshly initialized); the restored
      arrays come back as host NumPy arrays of its shapes and dtypes.
    data_iterator: a Grain iterator of the same pipeline; its position is restored in place.
  """
  step = manager.latest_step()
  if step is None:
    return None
  target = jax.tree.map(
    lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), jax.device_get(target_state.to_dict())
  )
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), data=grain.checkpoint.CheckpointRestore(data_iterator)
    ),
  )
  state = train_step.TrainState.from_dict(restored['state'])
  if int(state.step) != step:
    raise ValueError(f'checkpoint {step} holds state.step {int(state.step)}')
  return state, restored['data']


def restore_params(workdir, step=None):
  """Just the params dict ({'params': ...}) of a workdir's latest (or given) checkpoint."""
  manager = ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), item_names=('state', 'data')
  )
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {workdir}/{CHECKPOINT_DIR}')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored['state']['params']
