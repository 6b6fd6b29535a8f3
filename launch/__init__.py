"""Thin command-line entry points over the colorjax and data_prep libraries.

Importing this package (every `python -m launch.X` does, before any JAX computation) makes
glibc's malloc keep freed host memory for reuse (colorjax.host_memory): a CPU training step then
stops faulting its temporaries in again each time. COLORJAX_RETAIN_HOST_MEMORY=0 leaves malloc
as it is.
"""

import os

from absl import flags, logging

from colorjax import host_memory

if os.environ.get('COLORJAX_RETAIN_HOST_MEMORY', '1') != '0':
  host_memory.retain_freed_memory()


def quiet_library_logs():
  """Warnings and errors only (Orbax logs each checkpoint at INFO), unless --verbosity is given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
