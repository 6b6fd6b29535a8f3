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


def expand_flagfiles(argv):
  """argv with each --flagfile=F replaced by F's flag lines, recursively, a nested --flagfile
  being resolved against the folder of the file that names it (absl resolves it against the
  working directory, so `vivid.flags` could only extend `seed_coco.flags` from the repository
  root). Comments and blank lines are dropped; the order, and so which flag wins, is kept."""

  def lines(path, seen):
    if path in seen:
      raise flags.Error(f'flagfile {path} includes itself')
    try:
      text = open(path).read()
    except OSError as e:
      raise flags.Error(f'cannot read flagfile {path}: {e.strerror}') from None
    for line in text.splitlines():
      line = line.strip()
      if not line or line.startswith(('#', '//')):
        continue
      yield from expand(line, os.path.dirname(path), seen | {path})

  def expand(arg, base, seen):
    for prefix in ('--flagfile=', '-flagfile='):
      if arg.startswith(prefix):
        path = os.path.expanduser(arg[len(prefix) :])
        nested = os.path.join(base, path)
        if base and not os.path.isabs(path) and os.path.exists(nested):
          path = nested
        yield from lines(os.path.abspath(path), seen)
        return
    yield arg

  return argv[:1] + [a for arg in argv[1:] for a in expand(arg, '', frozenset())]


def define_decoding_flags():
  """--temperature, --prior_correction and --chroma_gain: a classification checkpoint's decoding
  (colorjax/decoding.py), for the commands that decode; None keeps each model's own."""
  return {
    'temperature': flags.DEFINE_float(
      'temperature',
      None,
      'classification models: annealed-mean temperature (lower: closer to the most likely '
      "color; default: the model's)",
    ),
    'prior_correction': flags.DEFINE_float(
      'prior_correction',
      None,
      'classification models: shift toward rarer, more saturated colors (0: off; < 0 toward '
      "common, duller ones, down to -1; default: the model's)",
    ),
    'chroma_gain': flags.DEFINE_float(
      'chroma_gain',
      None,
      "classification models: stretch of each photo's colors around its mean color (1: off; "
      "> 1 more colorful; default: the model's)",
    ),
  }


def decoding_values(holders):
  """{knob: value} of define_decoding_flags' holders, for with_decoding / evaluate."""
  return {name: holder.value for name, holder in holders.items()}
