"""Shared by bench scripts: the machine description and one section of docs/benchmarks.md."""

import os
import pathlib
import platform
import re
import subprocess

DOC = pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'benchmarks.md'
_TITLE = '# Benchmarks\n\nEach section is written by the script it names; rerun it to refresh.\n'


def machine():
  """One line naming the CPU, its core count and the accelerator JAX sees."""
  cpu = platform.processor() or platform.machine()
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  try:
    import jax  # pylint: disable=g-import-not-at-top

    d = jax.devices()[0]
    dev = f'{d.device_kind} x{jax.device_count()} ({jax.default_backend()}), jax {jax.__version__}'
  except Exception:  # pylint: disable=broad-except
    dev = 'no jax'
  return f'{cpu}, {os.cpu_count()} cores; {dev}'


def table(header, rows):
  """A Markdown table from a header list and rows of values (floats get 3 significant digits)."""
  fmt = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def write_section(name, command, body, machine_line=None):
  """Replaces (or appends) section `name` of docs/benchmarks.md, with command and machine
  (machine_line: where the numbers were measured, when not on this machine)."""
  try:
    commit = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'],
      capture_output=True,
      text=True,
      cwd=DOC.parent,
      check=False,
    ).stdout.strip()
  except OSError:
    commit = ''
  section = (
    f'<!-- begin {name} -->\n## {name}\n\nCommand: `{command}`  \n'
    f'Machine: {machine_line or machine()}  \nCommit: {commit or "unknown"}\n\n{body.strip()}\n'
    f'<!-- end {name} -->\n'
  )
  DOC.parent.mkdir(parents=True, exist_ok=True)
  text = DOC.read_text() if DOC.exists() else _TITLE
  pattern = re.compile(
    rf'<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->\n', re.S
  )
  text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + '\n' + section
  DOC.write_text(text)
  print(body)
  print(f'wrote section {name!r} of {DOC}')
