"""colorjax.pth: legacy and zip .pth files written here by hand (no torch), and refused pickles."""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from colorjax import pth

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_TYPES = {np.float32: 'FloatStorage', np.float64: 'DoubleStorage', np.int64: 'LongStorage'}


class Global:
  """Pickles as the global `module.name` without importing it (torch is not needed)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce wants a callable
    raise AssertionError('never called')


class Storage:
  def __init__(self, key, values, view=None):
    self.key, self.values, self.view = key, np.asarray(values), view


class Tensor:
  """What torch pickles for a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

  def __init__(self, storage, offset, size, stride, parameter=False):
    self.args = (storage, offset, tuple(size), tuple(stride))
    self.parameter = parameter

  def __reduce__(self):
    args = (*self.args, False, collections.OrderedDict())
    rebuilt = (Global('torch._utils', '_rebuild_tensor_v2'), args)
    if not self.parameter:
      return rebuilt
    return Global('torch._utils', '_rebuild_parameter'), (_Reduced(*rebuilt), True, {})

  def expected(self):
    storage, offset, size, stride = self.args
    flat = storage.values
    if storage.view is not None:
      flat = flat[storage.view[1] : storage.view[1] + storage.view[2]]
    itemsize = flat.itemsize
    return np.lib.stride_tricks.as_strided(
      flat[offset:], size, [s * itemsize for s in stride], writeable=False
    ).copy()


class _Reduced:
  def __init__(self, func, args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


class TorchLikePickler(pickle._Pickler):
  """Protocol 2 pickler that writes `Global`s as GLOBAL opcodes and storages as persistent ids."""

  def __init__(self, file, legacy):
    super().__init__(file, protocol=2)
    self.legacy = legacy

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Global):
      self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode('ascii'))
      return
    super().save(obj, save_persistent_id)

  def persistent_id(self, obj):
    if not isinstance(obj, Storage):
      return None
    storage_type = Global('torch', STORAGE_TYPES[obj.values.dtype.type])
    pid = ('storage', storage_type, obj.key, 'cpu', obj.values.size)
    return pid + (obj.view,) if self.legacy else pid


def _storages(obj):
  found = {}
  for value in obj.values():
    if isinstance(value, Tensor):
      found[value.args[0].key] = value.args[0]
    elif isinstance(value, dict):
      found.update(_storages(value))
  return found


def write_legacy(path, obj):
  f = io.BytesIO()
  pickle.dump(LEGACY_MAGIC, f, protocol=2)
  pickle.dump(1001, f, protocol=2)
  sys_info = {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'int': 4}}
  pickle.dump(sys_info, f, protocol=2)
  TorchLikePickler(f, legacy=True).dump(obj)
  storages = _storages(obj)
  pickle.dump(list(storages), f, protocol=2)
  for storage in storages.values():
    f.write(np.int64(storage.values.size).astype('<i8').tobytes())
    f.write(storage.values.astype(storage.values.dtype.newbyteorder('<')).tobytes())
  path.write_bytes(f.getvalue())


def write_zip(path, obj, prefix='archive'):
  f = io.BytesIO()
  TorchLikePickler(f, legacy=False).dump(obj)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{prefix}/data.pkl', f.getvalue())
    archive.writestr(f'{prefix}/byteorder', 'little')
    for key, storage in _storages(obj).items():
      archive.writestr(f'{prefix}/data/{key}', storage.values.tobytes())
    archive.writestr(f'{prefix}/version', '3\n')


def _sample():
  base = Storage('0', np.arange(13, dtype=np.float64) * 1.5)
  weights = Storage('1', np.random.default_rng(0).normal(size=24).astype(np.float32))
  return collections.OrderedDict(
    [
      ('conv.weight', Tensor(weights, 0, (2, 3, 2, 2), (12, 4, 2, 1), parameter=True)),
      # A transposed view with an offset: 4x3 read down the columns of a 3x4 block at element 1.
      ('transposed', Tensor(base, 1, (4, 3), (1, 4))),
      ('every_other', Tensor(base, 0, (3, 2), (4, 2))),  # same storage, a strided slice
      ('broadcast', Tensor(weights, 5, (2, 3), (0, 1))),
      ('num_batches_tracked', Tensor(Storage('2', np.array([7], np.int64)), 0, (), ())),
    ]
  )


@pytest.mark.parametrize('writer', [write_legacy, write_zip])
def test_round_trip(tmp_path, writer):
  obj = _sample()
  path = tmp_path / 'model.pth'
  writer(path, obj)
  got = pth.load_state_dict(path)
  assert list(got) == list(obj)
  for name, tensor in obj.items():
    want = tensor.expected()
    assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
    np.testing.assert_array_equal(got[name], want, err_msg=name)
  np.testing.assert_array_equal(got['transposed'], (np.arange(1, 13) * 1.5).reshape(3, 4).T)
  assert got['transposed'].flags.c_contiguous and got['num_batches_tracked'] == 7


def test_legacy_storage_view(tmp_path):
  # Pre-1.6 files keep views of a storage as (view key, element offset, element count).
  root = np.arange(10, dtype=np.float32)
  view = Storage('root', root, view=('view', 4, 5))
  write_legacy(tmp_path / 'v.pth', {'v': Tensor(view, 1, (2, 2), (2, 1))})
  np.testing.assert_array_equal(pth.load_state_dict(tmp_path / 'v.pth')['v'], [[5, 6], [7, 8]])


def test_zip_with_other_archive_name_and_nesting(tmp_path):
  storage = Storage('0', np.arange(6, dtype=np.float32))
  obj = {'model': {'w': Tensor(storage, 0, (2, 3), (3, 1))}}
  write_zip(tmp_path / 'm.pth', obj, prefix='my_checkpoint')
  got = pth.load_state_dict(tmp_path / 'm.pth')
  np.testing.assert_array_equal(got['model.w'], np.arange(6).reshape(2, 3))


def test_tensor_past_its_storage_is_refused(tmp_path):
  storage = Storage('0', np.arange(6, dtype=np.float32))
  write_zip(tmp_path / 'bad.pth', {'w': Tensor(storage, 2, (2, 3), (3, 1))})
  with pytest.raises(pickle.UnpicklingError, match='reaches past its storage'):
    pth.load_state_dict(tmp_path / 'bad.pth')


class RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


@pytest.mark.parametrize('writer', [write_legacy, write_zip])
def test_refuses_code(tmp_path, writer):
  marker = tmp_path / 'pwned'
  storage = Storage('0', np.zeros(2, np.float32))
  obj = {'w': Tensor(storage, 0, (2,), (1,)), 'evil': RunsCommand(f'touch {marker}')}
  path = tmp_path / 'evil.pth'
  writer(path, obj)
  module = os.system.__module__  # 'posix' on Linux: pickle records where it is defined
  with pytest.raises(pickle.UnpicklingError, match=f'refusing to load {module}.system from '):
    pth.load_state_dict(path)
  assert not marker.exists()
  # The same payload as a plain pickle, to be sure it would have run.
  pickle.loads(pickle.dumps(RunsCommand(f'touch {marker}')))
  assert marker.exists()


def test_refuses_os_system_by_its_public_name(tmp_path):
  f = io.BytesIO()
  TorchLikePickler(f, legacy=False).dump(_Reduced(Global('os', 'system'), ('echo pwned',)))
  with zipfile.ZipFile(tmp_path / 'evil.pth', 'w') as archive:
    archive.writestr('archive/data.pkl', f.getvalue())
  with pytest.raises(pickle.UnpicklingError, match='refusing to load os.system from .*evil.pth'):
    pth.load_state_dict(tmp_path / 'evil.pth')


def test_refuses_calling_a_storage_type(tmp_path):
  # Allowed names stand in for data, not for code: calling one fails inside the unpickler.
  f = io.BytesIO()
  TorchLikePickler(f, legacy=False).dump(_Reduced(Global('torch', 'FloatStorage'), (3,)))
  with zipfile.ZipFile(tmp_path / 'odd.pth', 'w') as archive:
    archive.writestr('archive/data.pkl', f.getvalue())
  with pytest.raises(TypeError, match='not callable'):
    pth.load_state_dict(tmp_path / 'odd.pth')


def test_not_a_state_dict(tmp_path):
  (tmp_path / 'junk.pth').write_bytes(pickle.dumps(123, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match='neither a zip nor a legacy'):
    pth.load_state_dict(tmp_path / 'junk.pth')
