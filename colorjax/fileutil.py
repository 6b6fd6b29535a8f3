"""Safe file operations for folders people care about: an exclusive folder lock, atomic writes."""

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import socket
import stat
import sys
import tempfile
import time

LOCK_NAME = '.colorjax.lock'
TEMP_SUFFIX = '.tmp'
# A holder writes its details right after taking the lock: a second locker that finds the lock
# taken but the file still empty waits this long for them before naming no process.
_HOLDER_WAIT_S = 0.5


class LockedError(RuntimeError):
  """The folder is locked by another process (or another open of the lock in this one)."""

  def __init__(self, message, holder=None):
    super().__init__(message)
    self.holder = holder  # {'pid', 'host', 'command'} or None when unknown


def _command_line():
  argv = getattr(sys, 'orig_argv', None) or [sys.executable, *sys.argv]
  return shlex.join([os.path.basename(argv[0]), *argv[1:]])


def _holder_text():
  holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'command': _command_line()}
  return json.dumps(holder) + '\n'


def _read_holder(fd):
  """The holder's {'pid', 'host', 'command'} from the lock file, or None if it wrote none yet."""
  deadline = time.monotonic() + _HOLDER_WAIT_S
  while True:
    try:
      holder = json.loads(os.pread(fd, 65536, 0).decode('utf-8', 'replace'))
      if isinstance(holder, dict) and 'pid' in holder:
        return holder
    except (OSError, ValueError):
      pass
    if time.monotonic() >= deadline:
      return None
    time.sleep(0.02)


def _locked_message(folder, holder):
  if holder is None:
    return f'{folder} is in use by another process; wait for it or choose another folder'
  command = ' '.join(str(holder.get('command', '?')).split())  # one line
  if len(command) > 200:
    command = command[:197] + '...'
  return (
    f'{folder} is in use by process {holder.get("pid", "?")} ({command}) on '
    f'{holder.get("host", "?")}; wait for it or choose another folder'
  )


@contextlib.contextmanager
def exclusive_lock(folder, name=LOCK_NAME):
  """Holds an exclusive, non-blocking flock on FOLDER/NAME for the duration of the block.

  The lock file records the holder's pid, host name and command line (as one JSON line). The
  kernel releases the lock when the holder exits, however it dies (even SIGKILL), so a stale
  lock never blocks anyone; the file itself stays (deleting it would race with a next locker).
  flock is per open file: a second exclusive_lock of the same folder in the same process fails
  too. Over NFS flock is only as good as the server's locking.

  Args:
    folder: an existing folder.
    name: the lock file's name inside it.
  Yields:
    The lock file's path.
  Raises:
    LockedError: another process holds the lock; its message names that process.
    OSError: the lock file cannot be opened: e.g. it is a symbolic link (ELOOP; refused, so a
      planted link cannot redirect the write), not a regular file, or the folder is missing or
      not writable.
  """
  path = os.path.join(os.fspath(folder), name)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise OSError(e.errno, 'the lock file is a symbolic link; refusing to use it', path) from e
    raise
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      raise OSError(errno.EINVAL, 'the lock file is not a regular file', path)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      raise LockedError(_locked_message(folder, holder), holder) from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, _holder_text().encode(), 0)
      yield path
    finally:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # while still held: nobody reads a finished holder's details
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def _umask():
  """The process umask, read without setting it (os.umask would change it for every thread)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return 0o022


def _target_mode(path):
  """The permission bits a replacement of path gets: the old file's, else 0o644 less the umask."""
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    return 0o644 & ~_umask()
  return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o644 & ~_umask()


def temp_path_pattern(name):
  """A regular expression matching the names of temp files made for a target called `name`."""
  return rf'\.{re.escape(name)}\.[A-Za-z0-9_]+{re.escape(TEMP_SUFFIX)}'


def _fsync_folder(folder):
  with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


@contextlib.contextmanager
def replacing(path):
  """Yields a new temp path beside `path`; on success it replaces `path` atomically.

  The temp file is made by tempfile.mkstemp in path's folder (named '.NAME.XXXXXXXX.tmp':
  unpredictable, created with O_EXCL, so a planted file or symbolic link is never followed).
  The block writes it (e.g. by a library that opens the path itself); on a normal exit it is
  fsynced, given path's permission bits (the old file's, else 0o644 less the umask) and renamed
  onto path with os.replace. If the block raises, the temp file is removed and path is left
  as it was.

  Args:
    path: the file to (re)place; its folder must exist.
  Yields:
    The temp file's path (it exists, empty).
  """
  path = os.fspath(path)
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{name}.', suffix=TEMP_SUFFIX)
  os.close(fd)
  try:
    yield tmp
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
      os.fchmod(fd, _target_mode(path))
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  _fsync_folder(folder)


def atomic_write_bytes(path, data):
  """Writes `data` to `path` atomically: readers see the old file or the new one, never a part.

  Through a temp file beside path (see `replacing`): written, fsynced, renamed onto path. On any
  error the temp file is removed and path is unchanged. A symbolic link at path is replaced by
  the new file, never written through.

  Args:
    path: the target file; its folder must exist.
    data: bytes-like.
  """
  with replacing(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def atomic_write_text(path, text, encoding='utf-8'):
  """atomic_write_bytes of `text` encoded (utf-8 by default)."""
  atomic_write_bytes(path, text.encode(encoding))
