"""Puts bench/gpu.sh's results, measured on a lent GPU machine, into docs/benchmarks.md.

python -m bench.gpu_record --result=OUT/gpu_result.md [--result=...] --command='...'

bench/gpu.sh runs on the device machine, whose checkout's docs never come back; it writes
gpu_result.md into the device tool's $OUT. This writes those tables as the 'gpu' section, each
with the machine it names and the issue's targets: >= 3,000 images/s on one H100 for the seed
model, and the real input pipeline at >= 95% of synthetic-data throughput.
"""

import pathlib
import re

from absl import app, flags

from bench import report

MIN_IMAGES_PER_S, MIN_PIPELINE_RATIO = 3000.0, 0.95


def summarize(text):
  """(device, best synthetic images/s, pipeline ratio) from one gpu_result.md."""
  device = re.search(r'^device: ([^;(]+)', text, re.M)
  synthetic = [
    float(x) for x in re.findall(r'^\| synthetic [^|]*\| \d+ \| ([0-9.]+) \|', text, re.M)
  ]
  ratio = re.search(r'^real pipeline.*: ([0-9.]+)$', text, re.M)
  if not (device and synthetic and ratio):
    raise ValueError(f'not a bench/gpu.sh result:\n{text[:500]}')
  return device[1].strip(), max(synthetic), float(ratio[1])


def body(texts, note=''):
  """The section: each run's table, then a line per run against the targets."""
  parts, verdicts = [], []
  for text in texts:
    device, ips, ratio = summarize(text)
    parts.append(text.strip())
    verdicts.append(
      f'| {device} | {ips:.0f} | {ips / MIN_IMAGES_PER_S:.2f}x | {ratio:.3f} | '
      f'{"yes" if ratio >= MIN_PIPELINE_RATIO else "no"} |'
    )
  header = [
    'Targets: the seed model at >= 3,000 images/s on one H100, the real pipeline at >= 95% of '
    'synthetic throughput.',
    '',
    '| device | best images/s | x 3,000 | real / synthetic | pipeline >= 0.95 |',
    '|---|---|---|---|---|',
    *verdicts,
  ]
  return '\n\n'.join(['\n'.join(header), *parts, note.strip()])


def machine_line(texts):
  """The machine each result names (its 'machine:' line, else its 'device:' line)."""
  found = []
  for text in texts:
    m = re.search(r'^machine: (.+)$', text, re.M) or re.search(r'^device: ([^;]+)', text, re.M)
    found.append(m[1].strip() if m else 'unknown')
  return '; '.join(dict.fromkeys(found)) + ' (lent by the device tool)'


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.result:
    raise app.UsageError('pass --result=gpu_result.md (from bench/gpu.sh on a GPU machine)')
  texts = [pathlib.Path(p).read_text() for p in f.result]
  report.write_section('gpu', f.command, body(texts, f.note), machine_line(texts))


if __name__ == '__main__':
  # Defined here, not at import: tests import this module beside launch.train's flags.
  flags.DEFINE_multi_string('result', None, 'gpu_result.md files (one per run)')
  flags.DEFINE_string('command', 'bash bench/gpu.sh', 'the device command that produced them')
  flags.DEFINE_string('note', '', 'a paragraph after the tables (what differed per run)')
  app.run(main)
