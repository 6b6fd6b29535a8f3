"""Thin command-line entry points over the colorjax and data_prep libraries."""

from absl import flags, logging


def quiet_library_logs():
  """Warnings and errors only (Orbax logs each checkpoint at INFO), unless --verbosity is given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
