"""Builds sharded ArrayRecord files of colorjax records from images, resumable and deterministic.

Output layout of OUT for a split S with M shards:
  S-00000-of-0000M.array_record ...  the records (colorjax/records.py), WRITER_OPTIONS.
  .shards/S-0000k-of-0000M.json      per-shard stats (record count, skipped ids, ab histogram,
                                     settings fingerprint), written before the shard is renamed
                                     from its temporary name: a shard is complete iff both exist
                                     and the shard's record count equals the stats' one.
  manifest.json                      {'splits': {S: {...}}}: one entry per split, replaced when that
                                     split finishes (settings, shards with record counts, totals,
                                     skipped ids by reason, ignored symlinked and unreadable
                                     folders, ab histogram on the AB_GRID_* grid).
  .colorjax.lock                     held (flock) by the build writing into OUT: one build at a
                                     time, a second one fails at once naming the first.
Every file is written under a temporary name from mkstemp ('.NAME.XXXXXXXX.tmp') and renamed into
place, so no file is ever seen half written and no planted symlink is followed.
Input i (in the source's sorted order) goes to shard i * M // n, whatever the number of workers,
so shards are byte-identical for any --workers and a rerun after a kill rebuilds only the shards
that are missing or incomplete.
"""

import errno
import json
import math
import multiprocessing
import os
import re
import sys
import time

import numpy as np
import tqdm
from array_record.python import array_record_module

from colorjax import constants, fileutil
from data_prep import images, sources

MANIFEST = 'manifest.json'
# One record per chunk for fast random access, uncompressed: zstd:3 (the default) costs 2.8 ms
# per 256x256 record in the single writing process (capping a build at ~360 images/s) and 0.4 ms
# per read, to save 1/3 of the disk; uncompressed costs 0.14 ms to write, 0.08 ms to read.
WRITER_OPTIONS = 'group_size:1,uncompressed'
# Test hook: seconds each worker sleeps per image, so a kill lands mid-run.
DELAY_ENV = 'COLORJAX_DATA_PREP_DELAY_S'

_WORKER = {}


class SplitExistsError(FileExistsError):
  """OUT holds this split already (complete, or from other inputs or settings)."""


class OutputDirError(OSError):
  """OUT cannot be created or written (read-only, a file in its place, disk full, ...)."""

  def __init__(self, output_dir, error):
    super().__init__(error.errno, f'cannot write to {output_dir}: {error.strerror or error}')
    self.filename = error.filename  # the file the error was about

  def __str__(self):
    return self.strerror


def shard_name(split, k, num_shards):
  return f'{split}-{k:05d}-of-{num_shards:05d}.array_record'


def shard_bounds(n, num_shards):
  """Input index ranges: shard k holds inputs [bounds[k], bounds[k + 1])."""
  return [k * n // num_shards for k in range(num_shards + 1)]


def _init_worker(source, options):
  _WORKER.update(source=source, options=options, delay=float(os.environ.get(DELAY_ENV, 0) or 0))


def _process(i):
  """Input index -> ('ok', id, record, histogram) or ('skip', id, reason, message)."""
  if _WORKER['delay']:
    time.sleep(_WORKER['delay'])
  try:
    id_, payload = _WORKER['source'].read(i)
  except Exception as e:  # pylint: disable=broad-except
    return ('skip', f'#{i}', 'unreadable', f'{type(e).__name__}: {e}')
  try:
    record, hist = images.make_record(payload, id_, **_WORKER['options'])
  except images.Skip as e:
    return ('skip', id_, e.reason, e.message)
  except Exception as e:  # pylint: disable=broad-except  (skip, never crash the whole build)
    return ('skip', id_, 'unreadable', f'{type(e).__name__}: {e}')
  return ('ok', id_, record, hist)


def _write_json(path, obj):
  fileutil.atomic_write_text(path, json.dumps(obj, indent=1))


def _warn(message):
  print(f'data_prep: warning: {message}', file=sys.stderr, flush=True)


def _read_json(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _existing_shards(output_dir, split):
  """Shard files of a split in OUT, and temporary ones ('.NAME.XXXXXXXX.tmp', '.NAME.tmp')."""
  name = rf'{re.escape(split)}-\d{{5}}-of-\d{{5}}\.array_record'
  pattern = re.compile(rf'^(?:{name}|\.{name}(?:\.[A-Za-z0-9_]+)?\.tmp)$')
  return sorted(f for f in os.listdir(output_dir) if pattern.match(f))


def _remove_temp_files(output_dir, split):
  """Temporary stats and manifest files a killed run left (no run is writing: OUT is locked)."""
  stats = re.compile(
    rf'^\.?{re.escape(split)}-\d{{5}}-of-\d{{5}}\.array_record\.json(?:\.[A-Za-z0-9_]+)?\.tmp$'
  )
  stats_dir = os.path.join(output_dir, '.shards')
  for f in os.listdir(stats_dir):
    if stats.match(f):
      os.remove(os.path.join(stats_dir, f))
  manifest = re.compile(rf'^\.?{re.escape(MANIFEST)}(?:\.[A-Za-z0-9_]+)?\.tmp$')
  for f in os.listdir(output_dir):
    if manifest.match(f):
      os.remove(os.path.join(output_dir, f))


def shard_records(path):
  """The number of records in an ArrayRecord file, or None when it is missing or unreadable."""
  try:
    reader = array_record_module.ArrayRecordReader(os.fspath(path))
  except Exception:  # pylint: disable=broad-except  (missing, too short, corrupt)
    return None
  try:
    return reader.num_records() if reader.ok() else None
  finally:
    try:
      reader.close()
    except Exception:  # pylint: disable=broad-except  (a corrupt file may fail to close too)
      pass


def _shard_problem(output_dir, name, stats):
  """Why the shard `name` with these stats is not complete, or None when it is."""
  found = shard_records(os.path.join(output_dir, name))
  if found is None:
    return 'is unreadable (missing, empty or truncated)'
  if found != stats['records']:
    return f'holds {found} records where its stats say {stats["records"]}'
  return None


def _write_shard(output_dir, split, k, num_shards, results, fingerprint):
  """Writes one shard from an iterator of _process results; returns its stats.

  The shard is written under a temporary name and renamed into place after its stats: killed
  anywhere, the run leaves either no shard or a complete one.
  """
  name = shard_name(split, k, num_shards)
  with fileutil.replacing(os.path.join(output_dir, name)) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
    hist = np.zeros((constants.AB_GRID_SIZE,) * 2, np.int64)
    count, skipped, details = 0, {r: [] for r in images.SKIP_REASONS}, {}
    for status, id_, a, b in results:
      if status == 'ok':
        writer.write(a)
        hist += b
        count += 1
      else:
        skipped[a].append(id_)
        details[id_] = b
    writer.close()
    written = shard_records(tmp)
    if written != count:  # e.g. a file system that lost the data: never mark it complete
      raise OSError(errno.EIO, f'the shard written holds {written} records, not {count}', tmp)
    stats = {
      'file': name,
      'records': count,
      'skipped': skipped,
      'skip_details': details,
      'ab_histogram': hist.tolist(),
      'fingerprint': fingerprint,
    }
    _write_json(os.path.join(output_dir, '.shards', f'{name}.json'), stats)
  return stats


def _update_manifest(output_dir, split, entry):
  """Replaces the split's entry (the caller holds OUT's lock, so no other build writes it)."""
  path = os.path.join(output_dir, MANIFEST)
  manifest = _read_json(path) or {}
  manifest.setdefault('splits', {})[split] = entry
  manifest['record_format'] = 'colorjax/records.py (CJX1)'
  _write_json(path, manifest)


def _remove_split(output_dir, split):
  for f in _existing_shards(output_dir, split):
    os.remove(os.path.join(output_dir, f))
  stats_dir = os.path.join(output_dir, '.shards')
  for f in os.listdir(stats_dir):
    if f.startswith(f'{split}-'):
      os.remove(os.path.join(stats_dir, f))


def _plan(output_dir, split, num_shards, settings, fingerprint, overwrite):
  """Indices of the shards still to write, after checking what a previous run left."""
  if overwrite:
    _remove_split(output_dir, split)
  names = [shard_name(split, k, num_shards) for k in range(num_shards)]
  _remove_temp_files(output_dir, split)
  done, foreign = [], []
  for f in _existing_shards(output_dir, split):
    if f.startswith('.'):
      os.remove(os.path.join(output_dir, f))  # a temporary shard of an interrupted run
    elif f not in names:
      foreign.append(f)
    else:
      stats = _read_json(os.path.join(output_dir, '.shards', f'{f}.json'))
      if not (stats and stats['fingerprint'] == fingerprint):
        foreign.append(f)
      elif problem := _shard_problem(output_dir, f, stats):
        _warn(f'{os.path.join(output_dir, f)} {problem}: rebuilding it')
      else:
        done.append(f)
  if foreign:
    raise SplitExistsError(
      f'{output_dir} holds {split} shards built from other inputs or settings '
      f'(e.g. {foreign[0]}); pass overwrite=True (--overwrite) to replace them'
    )
  manifest = _read_json(os.path.join(output_dir, MANIFEST)) or {}
  recorded = manifest.get('splits', {}).get(split, {}).get('settings')
  if len(done) == num_shards and recorded == settings:  # else only the manifest is missing
    raise SplitExistsError(
      f'{output_dir} already holds a complete {split} split ({num_shards} shards); '
      'pass overwrite=True (--overwrite) to rebuild it'
    )
  return [k for k, name in enumerate(names) if name not in done]


def _pool_context():
  """fork (fast start, the Lab code table shared) unless this process has started JAX's backend,
  whose threads can deadlock a forked child; spawn then. Importing jax starts no thread."""
  started = 'jax' in sys.modules
  if started:
    try:
      from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

      started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # a jax without this function: stay on the safe side
      pass
  return multiprocessing.get_context('spawn' if started else 'fork')


def build_records(
  input_dir,
  output_dir,
  split,
  *,
  image_size=constants.IMAGE_SIZE,
  num_shards=None,
  workers=None,
  resize='crop',
  min_size=64,
  overwrite=False,
  tfds_name=None,
  tfds_data_dir=None,
  progress=True,
):
  """Writes OUT/{split}-NNNNN-of-MMMMM.array_record shards and the split's manifest entry.

  Args:
    input_dir: folder read recursively, or 'samples' for scikit-image's color photos (ignored
      when tfds_name is given).
    output_dir: created if missing; see the module docstring for its layout.
    split: the split name ('train', 'val', ...); with tfds_name also the TFDS split ('val'
      falls back to 'validation').
    image_size: side of the square records.
    num_shards: default ceil(inputs / 1000).
    workers: processes decoding images (default os.cpu_count()); shards do not depend on it.
    resize: 'crop' (shorter side to image_size, center crop) or 'squash'.
    min_size: inputs with a shorter side below it are skipped.
    overwrite: replace an existing split; without it a complete split raises SplitExistsError
      and a partial one (same inputs and settings) is completed: missing shards, and shards
      whose record count differs from their stats (truncated, 0-byte), are rebuilt.
    tfds_name, tfds_data_dir: read a TFDS array_record dataset instead of a folder.
    progress: show a tqdm bar.
  Returns:
    The split's manifest entry (a dict; also in OUT/manifest.json under ['splits'][split]).
  Raises:
    ValueError on bad settings or no input; FileNotFoundError when input_dir is no folder;
    SplitExistsError (a FileExistsError) as above; fileutil.LockedError when another build
    writes into output_dir (its message names that process); OutputDirError (an OSError) when
    output_dir cannot be created or written; RuntimeError when every input was skipped (the
    manifest then says why).
  """
  if image_size < 1 or min_size < 0 or resize not in images.RESIZE_MODES:
    raise ValueError(
      f'bad settings: image_size={image_size} min_size={min_size} '
      f'resize={resize!r} (one of {images.RESIZE_MODES})'
    )
  if not re.fullmatch(r'[A-Za-z0-9_]+', split):
    raise ValueError(f'split must be a plain name, got {split!r}')
  start = time.time()
  source = sources.open_source(input_dir, split, tfds_name, tfds_data_dir)
  _warn_ignored(source)
  n = len(source)
  if n == 0:
    raise ValueError(f'no image files in {source.description}')
  num_shards = num_shards or max(1, math.ceil(n / 1000))
  if not 1 <= num_shards <= n:
    raise ValueError(f'num_shards must be in [1, {n}] for {n} inputs, got {num_shards}')
  options = dict(image_size=image_size, resize=resize, min_size=min_size)
  settings = dict(
    source=source.description,
    split=split,
    num_shards=num_shards,
    **options,
    gray_chroma=images.GRAY_CHROMA,
    resample='jpeg: libjpeg-turbo M/8 scaling + opencv bicubic; else pil antialiased bicubic',
  )
  fingerprint = json.dumps([settings, n, source.fingerprint()])
  try:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
      raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), output_dir)
    os.makedirs(output_dir, exist_ok=True)
    with fileutil.exclusive_lock(output_dir):
      entry = _build_locked(
        source, output_dir, split, num_shards=num_shards, workers=workers, options=options,
        settings=settings, fingerprint=fingerprint, overwrite=overwrite, progress=progress,
      )  # fmt: skip
  except (SplitExistsError, fileutil.LockedError, OutputDirError):
    raise
  except OSError as e:
    raise OutputDirError(output_dir, e) from e
  entry['seconds'] = time.time() - start
  if entry['num_records'] == 0:
    raise RuntimeError(
      f'no image of {n} was written (all skipped): see {os.path.join(output_dir, MANIFEST)}'
    )
  return entry


def _warn_ignored(source):
  for key, what in (
    ('ignored_symlinked_folders', 'symlinked folders not followed'),
    ('unreadable_folders', 'unreadable folders skipped'),
  ):
    folders = getattr(source, key, [])
    if folders:
      shown = ', '.join(folders[:3]) + (', ...' if len(folders) > 3 else '')
      _warn(f'{len(folders)} {what} under {source.description}: {shown} (see manifest {key})')


def _build_locked(
  source, output_dir, split, *, num_shards, workers, options, settings, fingerprint, overwrite,
  progress,
):  # fmt: skip
  """build_records' work, with OUT locked; returns the manifest entry."""
  n = len(source)
  os.makedirs(os.path.join(output_dir, '.shards'), exist_ok=True)
  todo = _plan(output_dir, split, num_shards, settings, fingerprint, overwrite)
  bounds = shard_bounds(n, num_shards)
  indices = [i for k in todo for i in range(bounds[k], bounds[k + 1])]
  workers = max(1, min(workers or os.cpu_count() or 1, len(indices)))
  bar = tqdm.tqdm(
    total=n, initial=n - len(indices), unit='img', desc=f'{split} records', disable=not progress
  )
  if workers == 1:
    _init_worker(source, options)
    results = map(_process, indices)
    pool = None
  else:
    context = _pool_context()
    if context.get_start_method() == 'fork':
      images.lab_code_table()  # built once here, shared by the forked workers
    pool = context.Pool(workers, _init_worker, (source, options))
    results = pool.imap(_process, indices, chunksize=max(1, min(8, len(indices) // (4 * workers))))
  try:
    for k in todo:
      shard_results = (next(results) for _ in range(bounds[k], bounds[k + 1]))
      _write_shard(output_dir, split, k, num_shards, _counting(shard_results, bar), fingerprint)
  finally:
    bar.close()
    if pool is not None:
      pool.terminate()
  entry = _manifest_entry(output_dir, split, num_shards, settings, source)
  _update_manifest(output_dir, split, entry)
  entry['written_now'] = len(indices)
  return entry


def _counting(results, bar):
  for r in results:
    bar.update(1)
    yield r


def _manifest_entry(output_dir, split, num_shards, settings, source):
  """The split's manifest entry from its shards' stats, each shard checked against its stats."""
  hist = np.zeros((constants.AB_GRID_SIZE,) * 2, np.int64)
  skipped, details = {r: [] for r in images.SKIP_REASONS}, {}
  shards = []
  for k in range(num_shards):
    name = shard_name(split, k, num_shards)
    stats = _read_json(os.path.join(output_dir, '.shards', f'{name}.json'))
    problem = 'has no stats' if stats is None else _shard_problem(output_dir, name, stats)
    if problem:  # changed under this build (OUT is locked): never report the split complete
      raise OSError(errno.EIO, f'the shard just written {problem}; rerun to rebuild it', name)
    shards.append({'file': name, 'records': stats['records']})
    hist += np.asarray(stats['ab_histogram'], np.int64)
    for reason, ids in stats['skipped'].items():
      skipped[reason] += ids
    details.update(stats['skip_details'])
  return {
    'settings': settings,
    'num_inputs': len(source),
    'num_records': sum(s['records'] for s in shards),
    'num_skipped': sum(len(v) for v in skipped.values()),
    'ignored_non_image_files': source.ignored,
    'ignored_symlinked_folders': list(getattr(source, 'ignored_symlinked_folders', [])),
    'unreadable_folders': list(getattr(source, 'unreadable_folders', [])),
    'shards': shards,
    'files': [os.path.abspath(os.path.join(output_dir, s['file'])) for s in shards],
    'skipped': skipped,
    'skip_details': details,
    'ab_histogram': {
      'a_min': constants.AB_GRID_MIN,
      'b_min': constants.AB_GRID_MIN,
      'step': constants.AB_GRID_STEP,
      'size': constants.AB_GRID_SIZE,
      'rows': 'a',
      'columns': 'b',
      'counts': hist.tolist(),
    },
  }


def summary(entry):
  """The one-line summary of a build_records result."""
  skipped = ', '.join(f'{r}={len(v)}' for r, v in entry['skipped'].items() if v) or 'none'
  s = entry['settings']
  rate = entry.get('written_now', 0) / max(entry.get('seconds', 0), 1e-9)
  return (
    f'{s["split"]}: {entry["num_records"]} records of {entry["num_inputs"]} inputs in '
    f'{len(entry["shards"])} shards ({s["image_size"]}px) in '
    f'{os.path.dirname(entry["files"][0])}; skipped {skipped}; '
    f'{entry.get("seconds", 0):.1f}s, {rate:.0f} images/s'
  )


def ensure_sample_records(output_dir, image_size, *, progress=False):
  """Builds train and val splits of scikit-image's sample photos in output_dir unless present.

  A samples split of another image_size is rebuilt, a shard whose record count differs from the
  manifest's (missing, truncated) too; a split built from other inputs raises FileExistsError
  rather than being replaced. Returns {split: list of shard paths}.
  """
  manifest = _read_json(os.path.join(output_dir, MANIFEST)) or {}
  out = {}
  for split in ('train', 'val'):
    entry = manifest.get('splits', {}).get(split)
    if entry and not entry['settings']['source'].startswith('samples'):
      raise FileExistsError(f'{output_dir} holds a {split} split of other images; use another dir')
    same_size = entry is not None and entry['settings']['image_size'] == image_size
    intact = same_size and all(
      shard_records(os.path.join(output_dir, s['file'])) == s['records'] for s in entry['shards']
    )
    if not intact:  # same size: only the broken shards are rebuilt
      entry = build_records(
        'samples', output_dir, split, image_size=image_size, workers=1,
        overwrite=entry is not None and not same_size, progress=progress,
      )  # fmt: skip
    out[split] = entry['files']
  return out
