"""Shared test setup: absl flags parsed (Grain workers need it), one XLA compilation cache per
test run, and small synthetic inputs."""

import os
import shutil
import tempfile

# Multi-device code is tested on 4 fake CPU devices; set before JAX is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')

# Many tests (and the launch.* subprocesses they start, which inherit the environment) compile
# the same train steps and networks; one persistent cache shared by the xdist workers of this
# run compiles each once. The controller makes it empty and removes it at the end, so runs stay
# independent.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='colorjax-test-xla-cache-')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


def pytest_sessionfinish(session):
  if _OWN_CACHE and not hasattr(session.config, 'workerinput'):  # after every worker is done
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
