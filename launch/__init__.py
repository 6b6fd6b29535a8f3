"""Thin command-line entry points over the colorjax and data_prep libraries.

Importing this package (every `python -m launch.X` does, before any JAX computation) makes
glibc's malloc keep freed host memory for reuse (colorjax.host_memory): a CPU training step then
stops faulting its temporaries in again each time. COLORJAX_RETAIN_HOST_MEMORY=0 leaves malloc
as it is.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging

from colorjax import host_memory

if os.environ.get('COLORJAX_RETAIN_HOST_MEMORY', '1') != '0':
  host_memory.retain_freed_memory()


_VERBOSE = flags.DEFINE_bool(
  'verbose', False, 'on an error, show the traceback (by default: one line saying what is wrong)'
)
# What a user can cause and fix (a wrong path, a bad value, a folder in use, a full disk, a
# diverged run): one line and exit code 2. Anything else is a bug and shows its traceback.
USER_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)


def one_line(error):
  """An exception's message on one line."""
  return ' '.join(str(error).split()) or type(error).__name__


def run(main, name, required=(), argv=None):
  """app.run for a launch command: flags parsed (flagfiles expanded), a bad or missing flag or a
  user error exits with 2 and one line naming the command; --verbose shows the traceback.
  main(argv) returns the exit code (None: 0)."""

  if argv:  # the `colorjax` command passes 'colorjax NAME' as the program's name
    name = argv[0]

  def parse(args):
    try:
      args = flags.FLAGS(expand_flagfiles(args))
    except flags.Error as e:
      print(f'{name}: {one_line(e)} (see --helpfull)', file=sys.stderr)
      sys.exit(2)
    missing = [f'--{f}' for f in required if flags.FLAGS[f].value is None]
    if missing:
      print(f'{name}: missing {", ".join(missing)} (see --helpfull)', file=sys.stderr)
      sys.exit(2)
    if len(args) > 1:
      print(f'{name}: unexpected arguments {args[1:]} (see --helpfull)', file=sys.stderr)
      sys.exit(2)
    return args

  def guarded(args):
    quiet_library_logs()
    try:
      return main(args)
    except USER_ERRORS as e:
      if _VERBOSE.value:
        raise
      print(f'{name}: {one_line(e)}', file=sys.stderr)
      return 2

  app.run(guarded, argv=argv, flags_parser=parse)


class _PlainFormatter(std_logging.Formatter):
  """'warning: message' instead of absl's 'W1202 11:07:48.123 123 file.py:12]' prefix: the
  messages a user reads (a skipped photo, a fallback) are sentences, not log records."""

  def format(self, record):
    return f'{record.levelname.lower()}: {record.getMessage()}'


def quiet_library_logs():
  """Warnings and errors only (Orbax logs each checkpoint at INFO), as plain 'warning: ...'
  lines; --verbosity (or --verbose) keeps absl's full log records."""
  if flags.FLAGS['verbosity'].present or _VERBOSE.value:
    return
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().setFormatter(_PlainFormatter())
  std_logging.getLogger('onnx_ir').setLevel(std_logging.ERROR)  # the ONNX export's per-node notes


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
