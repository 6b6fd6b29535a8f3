"""Reads PyTorch .pth state dicts (legacy and zip formats) into NumPy arrays, without PyTorch."""

import collections
import dataclasses
import io
import pickle
import zipfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
  'FloatStorage': np.float32,
  'DoubleStorage': np.float64,
  'HalfStorage': np.float16,
  'BFloat16Storage': ml_dtypes.bfloat16,
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
  'ComplexFloatStorage': np.complex64,
  'ComplexDoubleStorage': np.complex128,
  'UntypedStorage': np.uint8,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for `torch.FloatStorage` etc.: only a dtype (and not callable, so a pickle cannot
  construct anything through it)."""

  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
  """A (view of a) storage: `numel` elements from element `offset` of the root storage `key`."""

  key: str
  dtype: np.dtype
  numel: int
  offset: int = 0


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor whose data may not be read yet (legacy files store it after the pickle)."""

  storage: _Storage
  storage_offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _check_ints(name, values):
  if not isinstance(values, tuple) or not all(type(v) is int and v >= 0 for v in values):
    raise pickle.UnpicklingError(f'bad tensor {name}: {values!r}')
  return values


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  # Serves torch._utils._rebuild_tensor and _rebuild_tensor_v2 (whose extra arguments are
  # requires_grad, backward hooks and metadata, none of which affects the values).
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError(f'tensor storage is not a storage: {type(storage).__name__}')
  (storage_offset,) = _check_ints('offset', (storage_offset,))
  size, stride = _check_ints('size', size), _check_ints('stride', stride)
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f'tensor size {size} and stride {stride} differ in rank')
  if 0 not in size:
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
      raise pickle.UnpicklingError(
        f'tensor (offset {storage_offset}, size {size}, stride {stride}) reaches past its '
        f'storage of {storage.numel} elements'
      )
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused_state):
  del requires_grad, backward_hooks
  if not isinstance(data, _TensorRef):
    raise pickle.UnpicklingError(f'parameter data is not a tensor: {type(data).__name__}')
  return data


def _allowed_globals():
  allowed = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
  }
  for name, dtype in _STORAGE_DTYPES.items():
    allowed['torch', name] = _StorageType(name, np.dtype(dtype))
  return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the globals that rebuild tensors; storages come from `storage_for`."""

  def __init__(self, file, path, storage_for=None):
    super().__init__(file)
    self._path = path
    self._storage_for = storage_for

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[module, name]
    except KeyError:
      raise pickle.UnpicklingError(
        f'refusing to load {module}.{name} from {self._path}: only tensor data is allowed'
      ) from None

  def persistent_load(self, pid):
    if self._storage_for is None:
      raise pickle.UnpicklingError(f'unexpected persistent id in {self._path}: {pid!r}')
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id in {self._path}: {pid!r}')
    storage_type, key = pid[1], pid[2]
    if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
      raise pickle.UnpicklingError(f'bad storage id in {self._path}: {pid!r}')
    return self._storage_for(storage_type.dtype, key, *pid[4:])


def _load_pickle(file, path, storage_for=None):
  return _RestrictedUnpickler(file, path, storage_for).load()


def _materialize(ref, buffers):
  """The tensor's values, copied out of its root storage's flat array `buffers[key]`."""
  flat = buffers[ref.storage.key]
  start = ref.storage.offset + ref.storage_offset
  if 0 in ref.size:
    return np.zeros(ref.size, flat.dtype)
  # as_strided trusts its arguments; _rebuild_tensor checked the tensor stays inside its storage
  # view, and the view is checked against the root storage here.
  if ref.storage.offset + ref.storage.numel > flat.size:
    raise pickle.UnpicklingError(f'storage {ref.storage.key} view reaches past its data')
  strides = tuple(s * flat.itemsize for s in ref.stride)
  return np.lib.stride_tricks.as_strided(flat[start:], ref.size, strides, writeable=False).copy()


def _flatten(obj, buffers, path, prefix=''):
  """Flattens nested mappings of tensors into {'a.b': array}."""
  out = {}
  for key, value in obj.items():
    name = f'{prefix}{key}'
    if isinstance(value, _TensorRef):
      out[name] = _materialize(value, buffers)
    elif isinstance(value, Mapping):
      out.update(_flatten(value, buffers, path, name + '.'))
    else:
      raise ValueError(f'{path}: entry {name!r} is a {type(value).__name__}, not a tensor')
  return out


def _load_legacy(path, data):
  file = io.BytesIO(data)
  magic = _load_pickle(file, path)
  if magic != _LEGACY_MAGIC:
    raise pickle.UnpicklingError(f'{path} is neither a zip nor a legacy PyTorch file')
  protocol = _load_pickle(file, path)
  if protocol != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f'{path}: unsupported legacy protocol {protocol!r}')
  sys_info = _load_pickle(file, path)
  if not isinstance(sys_info, dict):
    raise pickle.UnpicklingError(f'{path}: bad legacy header {sys_info!r}')
  byteorder = '<' if sys_info.get('little_endian', True) else '>'

  roots = {}  # key -> (dtype, numel): the storages the data section holds

  def storage_for(dtype, key, numel, view_metadata=None):
    roots.setdefault(key, (dtype, numel))
    if view_metadata is None:
      return _Storage(key, dtype, numel)
    _, offset, view_numel = view_metadata
    return _Storage(key, dtype, view_numel, offset)

  obj = _load_pickle(file, path, storage_for)
  keys = _load_pickle(file, path)
  buffers = {}
  for key in keys:
    if key not in roots:
      raise pickle.UnpicklingError(f'{path}: storage {key!r} is not referenced')
    dtype, numel = roots[key]
    (count,) = np.frombuffer(file.read(8), '<i8')
    raw = file.read(int(count) * dtype.itemsize)
    if count != numel or len(raw) != numel * dtype.itemsize:
      raise pickle.UnpicklingError(f'{path}: storage {key!r} is truncated or mis-sized')
    buffers[key] = np.frombuffer(raw, dtype.newbyteorder(byteorder)).astype(dtype)
  missing = set(roots) - set(buffers)
  if missing:
    raise pickle.UnpicklingError(f'{path}: no data for storages {sorted(missing)}')
  return obj, buffers


def _load_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      raise pickle.UnpicklingError(f'{path}: expected one <archive>/data.pkl, found {pickles}')
    prefix = pickles[0][: -len('data.pkl')]
    byteorder = '<'
    if prefix + 'byteorder' in names and archive.read(prefix + 'byteorder') == b'big':
      byteorder = '>'
    buffers = {}

    def storage_for(dtype, key, numel, *unused):
      if key not in buffers:
        name = f'{prefix}data/{key}'
        if name not in names:
          raise pickle.UnpicklingError(f'{path}: no data for storage {key!r}')
        raw = archive.read(name)
        if len(raw) != numel * dtype.itemsize:
          raise pickle.UnpicklingError(f'{path}: storage {key!r} has {len(raw)} bytes')
        buffers[key] = np.frombuffer(raw, dtype.newbyteorder(byteorder)).astype(dtype)
      return _Storage(key, dtype, numel)

    obj = _load_pickle(io.BytesIO(archive.read(pickles[0])), path, storage_for)
  return obj, buffers


def load_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict without PyTorch and without running code from the file.

  Only the globals that rebuild tensors are resolved (to local NumPy stand-ins); any other global
  raises `pickle.UnpicklingError` naming it. Both the zip format (PyTorch >= 1.6) and the legacy
  one (a sequence of pickles followed by the raw storages) are read.

  Args:
    path: the .pth file.

  Returns:
    {name: array} with each tensor's dtype, shape and values (a copy, C-contiguous). Nested
    mappings are flattened with '.'; non-parameter buffers such as BatchNorm's
    `num_batches_tracked` are included.
  """
  path = str(path)
  with open(path, 'rb') as f:
    data = f.read()
  if data[:4] == b'PK\x03\x04':
    obj, buffers = _load_zip(path)
  else:
    obj, buffers = _load_legacy(path, data)
  if isinstance(obj, _TensorRef) or not isinstance(obj, Mapping):
    raise ValueError(f'{path} holds a {type(obj).__name__}, not a state dict')
  return _flatten(obj, buffers, path)
