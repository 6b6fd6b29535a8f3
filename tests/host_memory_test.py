"""host_memory.retain_freed_memory: XLA's freed temporaries are reused, not faulted in again."""

import os
import subprocess
import sys

import pytest

from colorjax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A fresh process (the setting must precede XLA's first allocation) runs the gradient of two
# convolutions, whose temporaries (tens of MB, one block) XLA allocates and frees on every call,
# and prints the minor page faults per call after a warm-up. Measured: ~8,200 by default
# (glibc's dynamic mmap threshold spares some blocks), 0 retained after ~100 calls, and an
# occasional ~8,000 in one call before that while the heap grows.
PROBE = """
import resource
import {module}
import jax, jax.numpy as jnp
x, k = jnp.ones((4, 128, 128, 64)), jnp.full((3, 3, 64, 64), 0.01)
conv = lambda x: jax.lax.conv_general_dilated(
  x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
f = jax.jit(jax.grad(lambda x: jnp.mean(jax.nn.relu(conv(jax.nn.relu(conv(x)))) ** 2)))
for _ in range(40):  # the retained heap grows to the step's peak, now and then, at first
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  f(x).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""
PAGES = (16 << 20) // os.sysconf('SC_PAGE_SIZE')  # of one activation


def _faults_per_call(module, retain='1'):
  env = dict(os.environ, COLORJAX_RETAIN_HOST_MEMORY=retain)
  out = subprocess.run(
    [sys.executable, '-c', PROBE.format(module=module)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  return float(out.stdout.split()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc')
def test_launch_import_retains_freed_memory():
  default = _faults_per_call('launch', retain='0')  # glibc's own: mmap and munmap each time
  retained = _faults_per_call('launch')
  assert default > PAGES, default
  assert retained < default / 4, (retained, default)


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc')
def test_retain_and_restore_report_success():
  try:
    assert host_memory.retain_freed_memory() is True
  finally:
    assert host_memory.retain_freed_memory(False) is True
