"""Tests the Grain pipeline on tiny synthetic shards: order, coverage, slicing, resume, prefetch."""

import itertools

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import record_fixtures

from colorjax import constants, input_pipeline, records

NUM = 24  # examples; image i has L code i everywhere, so a batch names its examples


def _images(num=NUM, size=4):
  rs = np.random.RandomState(0)
  return [
    (
      np.full((size, size), i * constants.L_QUANT_STEP, np.float32),
      rs.uniform(-100, 100, (size, size, 2)).astype(np.float32),
      f'img-{i}',
    )
    for i in range(num)
  ]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('records')
  images = _images()
  record_fixtures.write_shards(d, 'train', images, num_shards=3)
  record_fixtures.write_shards(d, 'val', images[:11], num_shards=2)
  return str(d)


def _ids(batch):
  return batch['L'][:, 0, 0, 0].astype(int).tolist()


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_batches_have_codes_dtypes_and_the_record_values(data_dir):
  it = iter(input_pipeline.train_dataset(data_dir, batch_size=4, seed=0))
  batch = next(it)
  assert set(batch) == {'L', 'ab'}
  assert batch['L'].dtype == np.uint8 and batch['L'].shape == (4, 4, 4, 1)
  assert batch['ab'].dtype == np.int8 and batch['ab'].shape == (4, 4, 4, 2)
  images = _images()
  for i, L_q, ab_q in zip(_ids(batch), batch['L'], batch['ab']):
    np.testing.assert_array_equal(L_q[..., 0], records.quantize_L(images[i][0]))
    np.testing.assert_array_equal(ab_q, records.quantize_ab(images[i][1]))


def test_every_record_once_per_epoch_and_epochs_reshuffled(data_dir):
  it = iter(input_pipeline.train_dataset(data_dir, batch_size=4, seed=3))
  epoch0 = sum((_ids(b) for b in _take(it, NUM // 4)), [])
  epoch1 = sum((_ids(b) for b in _take(it, NUM // 4)), [])
  assert sorted(epoch0) == list(range(NUM)) and sorted(epoch1) == list(range(NUM))
  assert epoch0 != list(range(NUM)) and epoch0 != epoch1


def test_different_seeds_differ_and_same_seed_repeats(data_dir):
  def first(seed):
    return _ids(next(iter(input_pipeline.train_dataset(data_dir, batch_size=8, seed=seed))))

  assert first(1) == first(1)
  assert first(1) != first(2)


def test_process_slices_are_disjoint_and_cover_the_data(data_dir):
  epochs = []
  for index in range(2):
    ds = input_pipeline.train_dataset(
      data_dir, batch_size=3, seed=5, shard_index=index, shard_count=2
    )
    epochs.append(sum((_ids(b) for b in _take(iter(ds), NUM // 2 // 3)), []))
  assert not set(epochs[0]) & set(epochs[1])
  assert sorted(epochs[0] + epochs[1]) == list(range(NUM))


@pytest.mark.parametrize('worker_count', [0, 2])
def test_restored_state_continues_exactly(data_dir, worker_count):
  ds = input_pipeline.train_dataset(data_dir, batch_size=5, seed=7, worker_count=worker_count)
  it = iter(ds)
  _take(it, 3)
  state = it.get_state()
  want = [_ids(b) for b in _take(it, 6)]  # crosses an epoch boundary
  it.close()
  resumed = iter(ds)
  resumed.set_state(state)
  assert [_ids(b) for b in _take(resumed, 6)] == want
  resumed.close()


def test_orbax_saves_the_iterator_as_an_item(data_dir, tmp_path):
  ds = input_pipeline.train_dataset(data_dir, batch_size=4, seed=1)
  it = iter(ds)
  _take(it, 2)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  want = _ids(next(it))
  fresh = iter(ds)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    restored = mngr.restore(
      2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh))
    )
  assert _ids(next(restored['data'])) == want


def test_eval_sees_every_example_once_with_padding_mask(data_dir):
  batches = list(input_pipeline.eval_dataset(data_dir, batch_size=4))
  assert len(batches) == 3  # 11 examples -> 4 + 4 + 3 real and 1 padding
  assert all(b['L'].shape == (4, 4, 4, 1) for b in batches)
  mask = np.concatenate([b['mask'] for b in batches])
  ids = np.concatenate([_ids(b) for b in batches])
  np.testing.assert_array_equal(mask, [True] * 11 + [False])
  assert sorted(ids[mask].tolist()) == list(range(11))
  assert not batches[-1]['L'][-1].any() and not batches[-1]['ab'][-1].any()


def test_eval_process_slices_have_equal_batch_counts_and_cover(data_dir):
  per_process = [
    list(input_pipeline.eval_dataset(data_dir, batch_size=2, shard_index=i, shard_count=3))
    for i in range(3)
  ]
  assert [len(b) for b in per_process] == [2, 2, 2]  # ceil(ceil(11 / 3) / 2)
  seen = []
  for batches in per_process:
    for b in batches:
      seen += np.asarray(_ids(b))[b['mask']].tolist()
  assert sorted(seen) == list(range(11))


def test_device_prefetch_shards_batches_and_keeps_consumed_state(data_dir):
  mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  put = lambda batch: jax.device_put(batch, sharding)
  ds = input_pipeline.train_dataset(data_dir, batch_size=4, seed=2)
  host = [_ids(b) for b in itertools.islice(iter(ds), 5)]
  it = iter(input_pipeline.device_prefetch(ds, size=2, put=put))
  first = _take(it, 2)
  assert isinstance(first[0]['L'], jax.Array) and first[0]['L'].sharding == sharding
  assert len(first[0]['L'].addressable_shards) == 4
  state = it.get_state()  # two consumed even though more are already prefetched
  assert [_ids(jax.device_get(b)) for b in first] == host[:2]
  resumed = iter(input_pipeline.device_prefetch(ds, size=2, put=put))
  resumed.set_state(state)
  assert [_ids(jax.device_get(b)) for b in _take(resumed, 3)] == host[2:5]


def test_bad_inputs_raise(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match='test-'):
    input_pipeline.train_dataset(data_dir, split='test', batch_size=2, seed=0)
  record_fixtures.write_shards(tmp_path, 'train', _images(4), num_shards=2)
  (tmp_path / 'train-00001-of-00002.array_record').unlink()
  with pytest.raises(ValueError, match='incomplete'):
    input_pipeline.train_dataset(str(tmp_path), batch_size=2, seed=0)
  with pytest.raises(ValueError, match='shard_index'):
    input_pipeline.train_dataset(data_dir, batch_size=2, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match='fewer than batch_size'):
    input_pipeline.train_dataset(data_dir, batch_size=NUM + 1, seed=0)
  with pytest.raises(ValueError, match='worker_count'):
    input_pipeline.train_dataset(data_dir, batch_size=2, seed=0, worker_count=-1)
