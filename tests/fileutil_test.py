"""colorjax.fileutil: the folder lock across real processes (SIGKILL too), atomic writes."""

import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys

import pytest

from colorjax import fileutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A process that takes the lock, says so, and holds it until killed.
HOLD = (
  'import sys, time\n'
  'from colorjax import fileutil\n'
  'with fileutil.exclusive_lock(sys.argv[1]):\n'
  '  print("locked", flush=True)\n'
  '  time.sleep(600)\n'
)
# A process that tries the lock once: exit 0 if it got it, 3 and the message if not.
TRY = (
  'import sys\n'
  'from colorjax import fileutil\n'
  'try:\n'
  '  with fileutil.exclusive_lock(sys.argv[1]):\n'
  '    pass\n'
  'except fileutil.LockedError as e:\n'
  '  print(e)\n'
  '  sys.exit(3)\n'
)


def _python(code, *args, **kw):
  env = {**os.environ, 'PYTHONPATH': REPO}
  return [sys.executable, '-c', code, *args], dict(env=env, cwd=REPO, text=True, **kw)


@pytest.fixture
def holder(tmp_path, tmp_path_factory):
  script = tmp_path_factory.mktemp('scripts') / 'hold.py'
  script.write_text(HOLD)
  env = {**os.environ, 'PYTHONPATH': REPO}
  cmd = [sys.executable, str(script), str(tmp_path), 'marker-arg']
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=REPO, text=True)
  assert proc.stdout.readline().strip() == 'locked'
  yield proc
  if proc.poll() is None:
    proc.kill()
  proc.wait()


def _try_lock(folder):
  cmd, kw = _python(TRY, str(folder))
  return subprocess.run(cmd, capture_output=True, timeout=60, **kw)


def test_a_second_process_is_refused_with_the_holders_pid_until_it_is_killed(tmp_path, holder):
  proc = _try_lock(tmp_path)
  assert proc.returncode == 3, proc.stderr
  message = proc.stdout.strip()
  assert '\n' not in message
  assert message.startswith(f'{tmp_path} is in use by process {holder.pid} (')
  assert 'hold.py' in message and 'marker-arg' in message
  assert f'on {socket.gethostname()};' in message
  assert message.endswith('wait for it or choose another folder')
  # The holder's details are in the lock file while it runs.
  details = json.loads((tmp_path / fileutil.LOCK_NAME).read_text())
  assert details['pid'] == holder.pid and details['host'] == socket.gethostname()
  holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
  holder.wait()
  assert _try_lock(tmp_path).returncode == 0
  with fileutil.exclusive_lock(tmp_path):
    pass


def test_the_same_process_cannot_take_it_twice_and_release_frees_it(tmp_path):
  with fileutil.exclusive_lock(tmp_path) as path:
    assert path == str(tmp_path / fileutil.LOCK_NAME)
    with pytest.raises(fileutil.LockedError, match=f'in use by process {os.getpid()} ') as e:
      with fileutil.exclusive_lock(tmp_path):
        pass
    assert isinstance(e.value, RuntimeError) and e.value.holder['pid'] == os.getpid()
    assert _try_lock(tmp_path).returncode == 3
  assert _try_lock(tmp_path).returncode == 0
  assert (tmp_path / fileutil.LOCK_NAME).exists()  # kept: deleting it would race


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
  target = tmp_path / 'precious.txt'
  target.write_text('family scans index')
  os.symlink(target, tmp_path / fileutil.LOCK_NAME)
  with pytest.raises(OSError, match='symbolic link') as e:
    with fileutil.exclusive_lock(tmp_path):
      pass
  assert e.value.errno == errno.ELOOP
  assert target.read_text() == 'family scans index'


def _listing(folder):
  return sorted(os.listdir(folder))


def test_atomic_write_keeps_the_old_file_when_fsync_fails(tmp_path, monkeypatch):
  path = tmp_path / 'manifest.json'
  path.write_text('old')

  def broken_fsync(fd):
    raise OSError(errno.EIO, 'simulated I/O error')

  monkeypatch.setattr(os, 'fsync', broken_fsync)
  with pytest.raises(OSError, match='simulated'):
    fileutil.atomic_write_text(path, 'new and longer')
  assert path.read_text() == 'old'
  assert _listing(tmp_path) == ['manifest.json']  # no temp file left


def test_atomic_write_keeps_the_old_file_when_encoding_fails(tmp_path):
  class Unencodable(str):
    def encode(self, *args, **kw):
      raise UnicodeError('simulated')

  path = tmp_path / 'a.json'
  path.write_text('old')
  with pytest.raises(UnicodeError):
    fileutil.atomic_write_text(path, Unencodable('x'))
  assert path.read_text() == 'old' and _listing(tmp_path) == ['a.json']


def test_atomic_write_modes_and_symlinks(tmp_path):
  umask = os.umask(0o027)  # this test's own umask; restored below
  try:
    new = tmp_path / 'new.txt'
    fileutil.atomic_write_text(new, 'é')
    assert new.read_bytes() == 'é'.encode()
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o640  # 0o644 less the umask
    old = tmp_path / 'old.bin'
    old.write_bytes(b'x')
    os.chmod(old, 0o600)
    fileutil.atomic_write_bytes(old, b'\0\1')
    assert old.read_bytes() == b'\0\1' and stat.S_IMODE(os.stat(old).st_mode) == 0o600
  finally:
    os.umask(umask)
  # A symlink at the target is replaced by a file, never written through.
  outside = tmp_path / 'outside.txt'
  outside.write_text('keep')
  link = tmp_path / 'link.txt'
  os.symlink(outside, link)
  fileutil.atomic_write_text(link, 'new')
  assert not os.path.islink(link) and link.read_text() == 'new' and outside.read_text() == 'keep'


def test_replacing_names_and_failure(tmp_path):
  target = tmp_path / 'train-00000-of-00001.array_record'
  target.write_bytes(b'complete shard')
  pattern = re.compile(fileutil.temp_path_pattern(target.name))
  with pytest.raises(KeyError):
    with fileutil.replacing(target) as tmp:
      assert pattern.fullmatch(os.path.basename(tmp)) and os.path.dirname(tmp) == str(tmp_path)
      with open(tmp, 'wb') as f:
        f.write(b'half')
      raise KeyError('killed midway')
  assert target.read_bytes() == b'complete shard' and _listing(tmp_path) == [target.name]
  names = set()
  for _ in range(2):
    with fileutil.replacing(target) as tmp:
      names.add(tmp)
      with open(tmp, 'wb') as f:
        f.write(b'new shard')
  assert len(names) == 2  # a fresh unpredictable name each time
  assert target.read_bytes() == b'new shard' and _listing(tmp_path) == [target.name]
