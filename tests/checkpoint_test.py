"""colorjax.checkpoint: falling back past unreadable checkpoints, params-only restore."""

import json
import logging
import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts

from colorjax import checkpoint, train_step

STEPS = (2, 4)


def _state(step):
  """A small TrainState whose params, Adam moments and step all differ between steps."""
  rs = np.random.RandomState(step)
  params = {
    'params': {
      'conv': {'kernel': rs.normal(size=(3, 3, 16, 32)).astype(np.float32)},  # 18 kB
      'bias': rs.normal(size=(32,)).astype(np.float32),
    }
  }
  tx = train_step.make_optimizer(1e-3)
  grads = jax.tree.map(lambda x: np.full_like(x, step), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  return train_step.TrainState(step=np.int32(step), params=params, opt_state=opt_state)


def _iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


@pytest.fixture
def workdir(tmp_path):
  """Checkpoints of steps 2 and 4; the data iterator has yielded `step` elements at each."""
  manager = checkpoint.make_manager(tmp_path, keep=3, async_save=False)
  it = _iterator()
  for step in STEPS:
    while next(it) < step - 1:
      pass
    checkpoint.save(manager, step, _state(step), it)
  manager.close()
  return tmp_path


def _truncate_largest_file(workdir, step, which='array data'):
  """Cuts a file of a step's state to 10 bytes (a disk that filled up mid-copy): the largest
  array data file (OCDBT's d/ folders), or the tree metadata (_METADATA)."""
  folder = workdir / checkpoint.CHECKPOINT_DIR / str(step) / 'state'
  if which == '_METADATA':
    path = folder / '_METADATA'
  else:
    files = [p for p in folder.rglob('*') if p.is_file() and p.parent.name == 'd']
    path = max(files, key=lambda p: p.stat().st_size)
    assert path.stat().st_size > 16 * 1024  # the one holding the params
  os.truncate(path, 10)


def _corrupt_opt_state(workdir, step):
  """Overwrites every optimizer-state array of a step with garbage; params stay intact."""
  folder = workdir / checkpoint.CHECKPOINT_DIR / str(step) / 'state'
  kv = ts.KvStore.open({'driver': 'ocdbt', 'base': f'file://{folder}/'}).result()
  keys = [k for k in kv.list().result() if k.startswith(b'opt_state.') and b'/.z' not in k]
  assert keys
  for key in keys:
    kv.write(key, b'garbage').result()


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _restore_latest(workdir, it=None):
  manager = checkpoint.make_manager(workdir, keep=3, async_save=False)
  try:
    return checkpoint.restore_latest(manager, _state(0), it or _iterator()), manager
  except Exception:
    manager.close()
    raise


def test_restore_latest_reads_the_newest(workdir):
  restored, manager = _restore_latest(workdir)
  manager.close()
  state, it = restored  # callers that unpack two values keep working
  assert restored.step == 4 and restored.state is state and restored.data_iterator is it
  _assert_tree_equal(state.to_dict(), _state(4).to_dict())
  assert next(it) == 4


@pytest.mark.parametrize('which', ['array data', '_METADATA'])
def test_restore_latest_falls_back_past_a_truncated_newest_checkpoint(workdir, caplog, which):
  _truncate_largest_file(workdir, 4, which)
  with caplog.at_level(logging.WARNING):
    restored, manager = _restore_latest(workdir)
  assert restored.step == 2
  _assert_tree_equal(restored.state.to_dict(), _state(2).to_dict())  # step 2's exact state
  assert next(restored.data_iterator) == 2  # and its data position
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(
    m.startswith('checkpoint at step 4 is unreadable (') and m.endswith('falling back to step 2')
    for m in warnings
  ), warnings
  # Step 4 is kept aside, so the resumed run can save step 4 again.
  aside = workdir / checkpoint.UNREADABLE_DIR / '4'
  assert (aside / 'state').is_dir() and not (workdir / checkpoint.CHECKPOINT_DIR / '4').exists()
  assert manager.all_steps() == [2]
  checkpoint.save(manager, 4, _state(4), restored.data_iterator)
  manager.close()
  again, manager = _restore_latest(workdir)
  manager.close()
  assert again.step == 4
  _assert_tree_equal(again.state.params, _state(4).params)


def test_restore_latest_falls_back_when_only_the_data_position_is_unreadable(workdir):
  data = workdir / checkpoint.CHECKPOINT_DIR / '4' / 'data' / 'process_0-of-1.json'
  data.write_text('{"truncated')
  it = _iterator()
  restored, manager = _restore_latest(workdir, it)
  manager.close()
  assert restored.step == 2 and restored.data_iterator is it and next(it) == 2


@pytest.mark.parametrize('which', ['array data', '_METADATA'])
def test_restore_params_falls_back_and_an_explicit_step_is_strict(workdir, caplog, which):
  _truncate_largest_file(workdir, 4, which)
  with caplog.at_level(logging.WARNING):
    params = checkpoint.restore_params(workdir)
  assert checkpoint.available_steps(workdir) == [2, 4]
  _assert_tree_equal(params, _state(2).params)
  assert any('checkpoint at step 4 is unreadable' in r.getMessage() for r in caplog.records)
  _assert_tree_equal(checkpoint.restore_params(workdir, step=2), _state(2).params)
  with pytest.raises(checkpoint.CheckpointError, match='the checkpoint of step 4 under .* is') as e:
    checkpoint.restore_params(workdir, step=4)
  assert str(workdir) in str(e.value) and '\n' not in str(e.value)
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 3 .*\[2, 4\]'):
    checkpoint.restore_params(workdir, step=3)
  assert (workdir / checkpoint.CHECKPOINT_DIR / '4').is_dir()  # restore_params moves nothing


def test_every_checkpoint_unreadable_is_one_clear_error(workdir):
  for step in STEPS:
    _truncate_largest_file(workdir, step)
  it = _iterator()
  with pytest.raises(checkpoint.CheckpointError) as e:
    _restore_latest(workdir, it)
  message = str(e.value)
  folder = str(workdir / checkpoint.CHECKPOINT_DIR)
  assert message.startswith(f'every checkpoint under {folder} is unreadable: step 4: ')
  assert '; step 2: ' in message and '\n' not in message
  assert next(it) == 0  # the iterator was left as it was
  assert sorted(os.listdir(workdir / checkpoint.CHECKPOINT_DIR)) == ['2', '4']  # nothing moved
  with pytest.raises(checkpoint.CheckpointError, match=f'every checkpoint under {folder}'):
    checkpoint.restore_params(workdir)


def test_params_restore_reads_no_optimizer_state(workdir):
  _corrupt_opt_state(workdir, 4)
  # The corruption is real: a full restore of step 4 fails on the optimizer state ...
  manager = ocp.CheckpointManager(workdir / checkpoint.CHECKPOINT_DIR, item_names=('state', 'data'))
  with pytest.raises(Exception, match='opt_state'):
    manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  # ... while the params restore of step 4 never reads it.
  _assert_tree_equal(checkpoint.restore_params(workdir), _state(4).params)
  _assert_tree_equal(checkpoint.restore_params(workdir, step=4), _state(4).params)
  params = checkpoint.restore_params(workdir)
  assert set(params) == {'params'} and isinstance(params['params']['bias'], np.ndarray)


def test_no_checkpoint(tmp_path):
  assert checkpoint.available_steps(tmp_path / 'nothing') == []
  assert not (tmp_path / 'nothing').exists()  # reading creates nothing
  with pytest.raises(FileNotFoundError, match='no checkpoint under'):
    checkpoint.restore_params(tmp_path)
  manager = checkpoint.make_manager(tmp_path, keep=2, async_save=False)
  assert checkpoint.restore_latest(manager, _state(0), _iterator()) is None
  manager.close()


def test_the_saved_layout_is_the_documented_one(workdir):
  # WORKSPACE.md: checkpoints/<step>/{state,data}, state = {step, params, opt_state}.
  step_dir = workdir / checkpoint.CHECKPOINT_DIR / '4'
  assert {'state', 'data'} <= set(os.listdir(step_dir))
  assert json.loads((step_dir / 'data' / 'process_0-of-1.json').read_text())
