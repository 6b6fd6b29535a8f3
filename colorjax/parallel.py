"""Data parallelism for the train step ('single', 'sharded', 'pmap') and multi-process start-up.

Modes (TrainConfig.parallel / --parallel):
  single   jax.jit on one device.
  sharded  jax.jit over a 1-D mesh of every device of every process: the batch is split along
           the mesh axis 'data', the train state is replicated; XLA inserts the all-reduce.
  pmap     the same step under jax.pmap over the local devices, gradients and metrics
           averaged with lax.pmean (the classic multi-GPU recipe).
All three compute the same update: the loss is a mean over the global batch and each example's
augmentation key depends only on its position in the global batch (TrainConfig docs).

Multi-process (multi-host) training: start one process per host (or per GPU group) with
  python -m launch.train ... --coordinator_address=HOST:PORT --num_processes=N --process_id=I
or let jax.distributed.initialize() read the cluster environment (SLURM, Open MPI, Kubernetes,
Cloud TPU) by passing --num_processes=0. initialize_distributed() must run before anything
touches a device. Process p reads examples p, p + N, p + 2N, ... of each epoch's shuffled order
(input_pipeline.train_dataset), so together N processes see the batches one process sees, and
the augmentation is keyed on each example's global index (global_example_index); only
process 0 writes logs, images and TensorBoard files; Orbax writes the checkpoint from every
process (each saves its own data-iterator state). On CPU the collectives go through gloo.
"""

import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PARALLEL_MODES = ('single', 'sharded', 'pmap')
AXIS = 'data'
_CLUSTER_ENV = (
  'SLURM_JOB_ID',
  'OMPI_COMM_WORLD_SIZE',
  'JAX_COORDINATOR_ADDRESS',
  'TPU_WORKER_HOSTNAMES',
)


def initialize_distributed(coordinator_address='', num_processes=1, process_id=0):
  """Starts jax.distributed when asked for several processes; returns (process_index, count).

  Args:
    coordinator_address: 'host:port' of process 0 ('' to let JAX find it in the cluster env).
    num_processes: total processes; 1 runs alone, 0 means 'read the cluster environment'.
    process_id: this process' index in [0, num_processes).
  """
  if num_processes < 0 or (num_processes > 0 and not 0 <= process_id < num_processes):
    raise ValueError(f'need 0 <= process_id < num_processes, got {process_id}, {num_processes}')
  if num_processes == 1:
    return 0, 1
  if num_processes == 0 and not any(k in os.environ for k in _CLUSTER_ENV):
    raise ValueError(
      'num_processes=0 asks for a cluster environment but none was found '
      f'(looked for {", ".join(_CLUSTER_ENV)})'
    )
  if num_processes > 1:
    jax.distributed.initialize(
      coordinator_address=coordinator_address or None,
      num_processes=num_processes,
      process_id=process_id,
    )
  else:
    jax.distributed.initialize()
  return jax.process_index(), jax.process_count()


def global_example_index(local_batch_size, process_index=0, process_count=1):
  """Each local example's position in the global batch one process would read (int32, (B,)).

  input_pipeline.train_dataset gives process p the examples p, p + n, p + 2n, ... of each
  epoch's permutation (n processes), so local example j of every batch is global example
  p + n * j; keying the augmentation on it makes n processes draw what one process draws.
  """
  return (process_index + process_count * np.arange(local_batch_size)).astype(np.int32)


class Runner(NamedTuple):
  """A train step and the state and batch placement that go with one parallel mode."""

  step: Callable  # (placed state, placed batch, rng) -> (placed state, metrics)
  put_state: Callable  # a TrainState of host or device arrays -> placed for `step`
  put_batch: Callable  # a process-local host batch -> placed for `step` (runs ahead of it)
  get_state: Callable  # placed -> a TrainState to checkpoint (the same on every process)
  local_params: Callable  # placed -> params on this process' first device, for eval
  num_devices: int  # devices the global batch is split over


def first_shard(x):
  """This process' first shard of a jax.Array (on one device); anything else unchanged."""
  return x.addressable_data(0) if isinstance(x, jax.Array) else x


def host_copy(tree):
  """NumPy copies of this process' first shard of each array of a pytree."""
  return jax.tree.map(lambda x: np.array(first_shard(x)), tree)


def _unstack_first(x):
  return np.array(first_shard(x)).reshape(x.shape[1:])


def make_runner(mode, train_step: Callable[..., Any], global_batch_size):
  """Wraps train_step(state, batch, rng, axis_name=None) for a parallel mode.

  Args:
    mode: one of PARALLEL_MODES.
    train_step: the step with its static settings bound (colorjax.train_step.bind).
    global_batch_size: the batch summed over all devices and processes (must split evenly).
  """
  if mode not in PARALLEL_MODES:
    raise ValueError(f'parallel must be one of {PARALLEL_MODES}, got {mode!r}')
  if mode == 'single':
    if jax.process_count() > 1:
      raise ValueError("parallel='single' cannot span several processes; use 'sharded' or 'pmap'")
    device = jax.local_devices()[0]
    put = lambda s: jax.device_put(s, device)
    step = jax.jit(train_step, donate_argnums=0)
    return Runner(step, put, put, lambda s: s, lambda s: s.params, 1)

  devices = jax.devices() if mode == 'sharded' else jax.local_devices()
  num = len(devices) * (1 if mode == 'sharded' else jax.process_count())
  if global_batch_size % num:
    raise ValueError(f'batch size {global_batch_size} does not split over {num} devices')

  if mode == 'sharded':
    mesh = Mesh(np.array(devices), (AXIS,))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    # The key travels as raw uint32 data so that it can be a global array across processes.
    jitted = jax.jit(
      lambda s, b, k: train_step(s, b, jax.random.wrap_key_data(k)),
      in_shardings=(replicated, split, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
    )

    def put_state(state):
      return jax.tree.map(
        lambda x: jax.make_array_from_callback(
          np.shape(x), replicated, lambda idx, x=x: np.asarray(x)[idx]
        ),
        state,
      )

    def put_batch(local_batch):
      return jax.tree.map(lambda x: jax.make_array_from_process_local_data(split, x), local_batch)

    def step(state, batch, rng):
      state, metrics = jitted(state, batch, put_state(jax.random.key_data(rng)))
      return state, jax.tree.map(first_shard, metrics)

    local = lambda s: jax.tree.map(first_shard, s.params)
    return Runner(step, put_state, put_batch, lambda s: s, local, num)

  n_local = len(devices)
  pmapped = jax.pmap(
    lambda s, b, r: train_step(s, b, r, axis_name=AXIS),
    axis_name=AXIS,
    in_axes=(0, 0, None),
    donate_argnums=0,
    devices=devices,
  )
  stacked = NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))

  def put_state(state):
    return jax.tree.map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n_local,) + np.shape(x)), stacked),
      state,
    )

  def put_batch(local_batch):
    split = lambda x: np.asarray(x).reshape((n_local, -1) + np.shape(x)[1:])
    return jax.tree.map(lambda x: jax.device_put(split(x), stacked), local_batch)

  def step(state, batch, rng):
    state, metrics = pmapped(state, batch, rng)
    return state, jax.tree.map(lambda x: first_shard(x)[0], metrics)

  get_state = lambda s: jax.tree.map(_unstack_first, s)
  local = lambda s: jax.tree.map(lambda x: first_shard(x)[0], s.params)
  return Runner(step, put_state, put_batch, get_state, local, num)
