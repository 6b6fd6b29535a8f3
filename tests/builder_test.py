"""data_prep: records vs PIL + skimage, skip reasons, determinism, kill/resume, samples, TFDS."""

import io
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import grain
import numpy as np
import pytest
import simplejpeg
from array_record.python import array_record_module
from image_fixtures import chelsea, jpeg, pattern, upright
from PIL import Image, ImageOps
from skimage import color as skcolor

from colorjax import constants, records
from data_prep import builder, images

REPO = pathlib.Path(__file__).resolve().parent.parent
S = 32  # record side in these tests


def _png16(arr, color_type, size=None):
  """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB); arr None -> header only."""

  def chunk(tag, data):
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))

  h, w = size or arr.shape[:2]
  png = b'\x89PNG\r\n\x1a\n' + chunk(
    b'IHDR', struct.pack('>IIBBBBB', w, h, 16, color_type, 0, 0, 0)
  )
  if arr is not None:
    rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in arr)
    png += chunk(b'IDAT', zlib.compress(rows))
  return png + chunk(b'IEND', b'')


def _make_folder(root):
  """Writes the test tree; returns {id: expected uint8 RGB before resizing, or None}."""
  files = {}
  for i, (h, w) in enumerate([(64, 96), (96, 64), (80, 80)]):
    files[f'good/nested/photo{i}.jpg'] = jpeg(pattern(h, w, i))
  files['good/photo3.png'] = _png_bytes(Image.fromarray(pattern(70, 90, 3)))
  good = jpeg(pattern(96, 96, 4))
  files['bad/truncated.jpg'] = good[: len(good) // 2]
  files['bad/text.jpg'] = b'this is not a JPEG\n' * 20
  gray = pattern(64, 80, 5).mean(-1).astype(np.uint8)
  files['gray/photo.jpg'] = jpeg(np.repeat(gray[..., None], 3, -1))
  files['gray/gray16.png'] = _png16(gray.astype(np.uint16) * 257, 0)
  files['modes/cmyk.jpg'] = _save(Image.fromarray(pattern(72, 64, 6)).convert('CMYK'), 'JPEG')
  rgba = np.concatenate([pattern(64, 72, 7), np.full((64, 72, 1), 255, np.uint8)], -1)
  rgba[:20, :, 3] = 0  # binary alpha: compositing on white is exact
  files['modes/rgba.png'] = _png_bytes(Image.fromarray(rgba, 'RGBA'))
  rgb16 = pattern(64, 64, 8).astype(np.uint16) * 256 + 100  # PIL keeps the high byte
  files['modes/rgb16.png'] = _png16(rgb16, 2)
  files['modes/palette.gif'] = _save(Image.fromarray(pattern(64, 80, 9)).quantize(64), 'GIF')
  files['tiny.png'] = _png_bytes(Image.fromarray(pattern(10, 10, 10)))
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
  files['exif/rotated.jpg'] = jpeg(pattern(64, 96, 11), exif=exif.tobytes())
  files['bomb.png'] = _png16(None, 2, size=(20000, 20000))  # header claims 4e8 pixels
  files['notes.txt'] = b'not an image extension: ignored'
  for rel, data in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return files


def _save(img, fmt):
  buf = io.BytesIO()
  img.save(buf, fmt)
  return buf.getvalue()


def _png_bytes(img):
  return _save(img, 'PNG')


GOOD = [
  'exif/rotated.jpg',
  'good/nested/photo0.jpg',
  'good/nested/photo1.jpg',
  'good/nested/photo2.jpg',
  'good/photo3.png',
  'modes/cmyk.jpg',
  'modes/palette.gif',
  'modes/rgb16.png',
  'modes/rgba.png',
]
SKIPPED = {
  'not_an_image': ['bad/text.jpg'],
  'unreadable': ['bad/truncated.jpg'],
  'decompression_bomb': ['bomb.png'],
  'too_small': ['tiny.png'],
  'grayscale': ['gray/gray16.png', 'gray/photo.jpg'],
}


def _reference_lab(path):
  """Independent pipeline: PIL open, EXIF, mode by hand, the documented resize, skimage rgb2lab.

  The resize: 8-bit YCbCr/gray JPEGs are decoded by libjpeg-turbo at the smallest M/8 scale that
  keeps both sides >= S, center-cropped and resized by OpenCV's bicubic (data_prep's fast path);
  everything else by PIL (JPEG draft, then the centered box resized by antialiased bicubic).
  """
  img = Image.open(path)
  if img.format == 'JPEG' and img.mode in ('RGB', 'L'):
    x = simplejpeg.decode_jpeg(path.read_bytes(), 'RGB', min_height=S, min_width=S)
    h, w = x.shape[:2]
    m = min(h, w)
    x = x[(h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    fixed = Image.fromarray(cv2.resize(x, (S, S), interpolation=cv2.INTER_CUBIC))
    return skcolor.rgb2lab(upright(fixed, img.getexif().get(0x0112)))
  if img.format == 'JPEG':
    img.draft('RGB', (S, S))
  img = ImageOps.exif_transpose(img)
  if img.mode == 'RGBA':
    x = np.asarray(img)
    img = Image.fromarray(np.where(x[..., 3:] == 255, x[..., :3], 255).astype(np.uint8))
  img = img.convert('RGB')
  w, h = img.size
  m = min(w, h)
  box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
  img = img.resize((S, S), Image.Resampling.BICUBIC, box=box)
  return skcolor.rgb2lab(np.asarray(img))


def _read_all(files):
  source = grain.sources.ArrayRecordDataSource(files)
  return [records.decode_example(source[i]) for i in range(len(source))]


def _cli(*args, env=None, **kw):
  env = {**os.environ, 'PYTHONPATH': str(REPO), **(env or {})}
  return subprocess.run(
    [sys.executable, '-m', 'data_prep.build_records', *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    **kw,
  )


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('images')
  _make_folder(root)
  return root


def test_cli_builds_records_matching_skimage_and_lists_skips(folder, tmp_path):
  out = tmp_path / 'out'
  proc = _cli(
    f'--input_dir={folder}',
    f'--output_dir={out}',
    '--split=train',
    f'--image_size={S}',
    '--min_size=32',
    '--num_shards=2',
    '--workers=2',
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().startswith(f'train: {len(GOOD)} records of {len(GOOD) + 6} inputs')
  manifest = json.loads((out / 'manifest.json').read_text())['splits']['train']
  assert manifest['skipped'] == SKIPPED
  assert 'truncated' in manifest['skip_details']['bad/truncated.jpg']
  assert sorted(manifest['skip_details']) == sorted(sum(SKIPPED.values(), []))
  assert manifest['ignored_non_image_files'] == 1
  assert manifest['num_records'] == sum(s['records'] for s in manifest['shards']) == len(GOOD)
  assert sorted(os.listdir(out)) == [
    '.colorjax.lock',
    '.shards',
    'manifest.json',
    'train-00000-of-00002.array_record',
    'train-00001-of-00002.array_record',
  ]
  reader = array_record_module.ArrayRecordReader(str(out / manifest['shards'][0]['file']))
  assert reader.writer_options_string().startswith('group_size:1,')  # fast random access
  examples = _read_all([str(out / s['file']) for s in manifest['shards']])
  assert [ex['id'] for ex in examples] == GOOD  # sorted input order
  for ex in examples:
    ref = _reference_lab(folder / ex['id'])
    assert ex['L'].shape == (S, S, 1) and ex['ab'].shape == (S, S, 2)
    np.testing.assert_allclose(
      ex['L'][..., 0], ref[..., 0], atol=records.L_MAX_ERROR + 1e-3, rtol=0, err_msg=ex['id']
    )
    np.testing.assert_allclose(
      ex['ab'], ref[..., 1:], atol=records.AB_MAX_ERROR + 1e-3, rtol=0, err_msg=ex['id']
    )
  # The color prior: a histogram of every stored ab value on the AB_GRID_* grid.
  ab = np.concatenate([ex['ab'].reshape(-1, 2) for ex in examples])
  edges = constants.AB_GRID_MIN + constants.AB_GRID_STEP * np.arange(constants.AB_GRID_SIZE + 1)
  clipped = np.clip(ab, edges[0], edges[-1] - 1e-3)
  expected, _, _ = np.histogram2d(clipped[:, 0], clipped[:, 1], bins=[edges, edges])
  np.testing.assert_array_equal(manifest['ab_histogram']['counts'], expected)


def test_exif_rotation_changes_the_record(folder):
  rotated, _ = images.make_record(folder / 'exif/rotated.jpg', 'r', S, min_size=32)
  plain, _ = images.make_record(jpeg(pattern(64, 96, 11)), 'r', S, min_size=32)
  upright = records.decode_example(rotated)['L']
  unrotated = records.decode_example(plain)['L']
  assert np.abs(upright - unrotated).mean() > 5  # the rotation is visible
  np.testing.assert_allclose(upright[..., 0], np.rot90(unrotated[..., 0], -1), atol=3)


@pytest.fixture(scope='module')
def many(tmp_path_factory):
  """24 small photos and a reference build with one worker."""
  root = tmp_path_factory.mktemp('many')
  for i in range(24):
    (root / f'img{i:02d}.jpg').write_bytes(jpeg(pattern(24 + i % 5, 24, 100 + i)))
  ref = tmp_path_factory.mktemp('ref')
  entry = builder.build_records(
    str(root), str(ref), 'train', image_size=16, min_size=8, num_shards=6, workers=1, progress=False
  )
  assert entry['num_records'] == 24
  return root, ref


def _shard_bytes(out):
  return {f: (out / f).read_bytes() for f in sorted(os.listdir(out)) if f.endswith('.array_record')}


def _temp_files(out):
  return [f for d in (out, out / '.shards') for f in os.listdir(d) if f.endswith('.tmp')]


def _comparable(out):
  """Shards, their stats and the manifest of OUT, with OUT's own path taken out."""
  files = _shard_bytes(out)
  for f in sorted(os.listdir(out / '.shards')):
    files[f] = (out / '.shards' / f).read_bytes()
  files['manifest.json'] = (out / 'manifest.json').read_text().replace(str(out), 'OUT')
  return files


def test_two_workers_give_byte_identical_shards(many, tmp_path):
  root, ref = many
  builder.build_records(
    str(root),
    str(tmp_path),
    'train',
    image_size=16,
    min_size=8,
    num_shards=6,
    workers=2,
    progress=False,
  )
  assert _shard_bytes(tmp_path) == _shard_bytes(ref) and len(_shard_bytes(ref)) == 6


def test_sigkill_then_rerun_equals_uninterrupted_run(many, tmp_path):
  root, ref = many
  args = [
    f'--input_dir={root}',
    f'--output_dir={tmp_path}',
    '--image_size=16',
    '--min_size=8',
    '--num_shards=6',
    '--workers=2',
  ]
  env = {**os.environ, 'PYTHONPATH': str(REPO), builder.DELAY_ENV: '0.1'}
  proc = subprocess.Popen(
    [sys.executable, '-m', 'data_prep.build_records', *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )
  deadline = time.time() + 60
  while (
    not any(f.endswith('.array_record') and not f.startswith('.') for f in os.listdir(tmp_path))
    and time.time() < deadline
  ):
    time.sleep(0.02)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  done = _shard_bytes(tmp_path)
  assert 1 <= len(done) < 6  # killed mid-run, after at least one complete shard
  for name, data in done.items():
    assert data == _shard_bytes(ref)[name]
  rerun = _cli(*args)
  assert rerun.returncode == 0, rerun.stderr
  assert _shard_bytes(tmp_path) == _shard_bytes(ref)
  assert not _temp_files(tmp_path)  # whatever the kill left was removed
  manifest = json.loads((tmp_path / 'manifest.json').read_text())['splits']['train']
  assert manifest['num_records'] == 24
  assert [s['records'] for s in manifest['shards']] == [4] * 6


def test_existing_output_needs_overwrite(many, tmp_path):
  root, ref = many
  kw = dict(image_size=16, min_size=8, num_shards=6, workers=1, progress=False)
  builder.build_records(str(root), str(tmp_path), 'train', **kw)
  before = _shard_bytes(tmp_path)
  with pytest.raises(FileExistsError, match='complete train split.*overwrite'):
    builder.build_records(str(root), str(tmp_path), 'train', **kw)
  (tmp_path / 'manifest.json').unlink()  # as if killed after the last shard
  mtime = os.path.getmtime(tmp_path / 'train-00000-of-00006.array_record')
  assert builder.build_records(str(root), str(tmp_path), 'train', **kw)['num_records'] == 24
  assert os.path.getmtime(tmp_path / 'train-00000-of-00006.array_record') == mtime
  with pytest.raises(FileExistsError, match='other inputs or settings'):
    builder.build_records(str(root), str(tmp_path), 'train', **{**kw, 'image_size': 8})
  assert _shard_bytes(tmp_path) == before
  with pytest.raises(FileExistsError, match='other images'):
    builder.ensure_sample_records(str(tmp_path), 16)
  proc = _cli(
    f'--input_dir={root}',
    f'--output_dir={tmp_path}',
    '--image_size=16',
    '--min_size=8',
    '--num_shards=6',
  )
  assert proc.returncode == 1 and '--overwrite' in proc.stderr
  entry = builder.build_records(
    str(root), str(tmp_path), 'train', overwrite=True, **{**kw, 'image_size': 8, 'num_shards': 3}
  )
  assert entry['num_records'] == 24
  assert sorted(_shard_bytes(tmp_path)) == [
    f'train-0000{k}-of-00003.array_record' for k in range(3)
  ]
  assert _read_all(entry['files'])[0]['L'].shape == (8, 8, 1)


def test_bad_input_fails_clearly(tmp_path):
  (tmp_path / 'empty').mkdir()
  proc = _cli(f'--input_dir={tmp_path / "empty"}', f'--output_dir={tmp_path / "out"}')
  assert proc.returncode == 1 and 'no image files' in proc.stderr
  (tmp_path / 'junk').mkdir()
  (tmp_path / 'junk' / 'a.png').write_bytes(b'junk')
  with pytest.raises(RuntimeError, match='no image of 1 was written'):
    builder.build_records(
      str(tmp_path / 'junk'), str(tmp_path / 'out'), 'train', workers=1, progress=False
    )
  with pytest.raises(ValueError, match='resize'):
    builder.build_records(str(tmp_path / 'junk'), str(tmp_path / 'out'), 'x', resize='bogus')
  with pytest.raises(FileNotFoundError, match='not a directory'):
    builder.build_records(str(tmp_path / 'nope'), str(tmp_path / 'out'), 'train')


def test_workers_fork_until_jax_starts_its_backend():
  code = (
    'import jax\n'
    'from data_prep import builder\n'
    'print(builder._pool_context().get_start_method())\n'
    'jax.devices()\n'
    'print(builder._pool_context().get_start_method())\n'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == ['fork', 'spawn']


def test_sample_records(tmp_path):
  files = builder.ensure_sample_records(str(tmp_path), 16)
  val = _read_all(files['val'])
  assert [ex['id'] for ex in val] == ['samples/chelsea', 'samples/rocket']
  train_ids = {ex['id'] for ex in _read_all(files['train'])}
  assert {'samples/astronaut', 'samples/coffee', 'samples/logo'} <= train_ids
  assert not train_ids & {'samples/chelsea', 'samples/rocket'}
  ref = skcolor.rgb2lab(images.load_rgb8(chelsea(), 16))
  np.testing.assert_allclose(val[0]['L'][..., 0], ref[..., 0], atol=records.L_MAX_ERROR + 1e-3)
  np.testing.assert_allclose(val[0]['ab'], ref[..., 1:], atol=records.AB_MAX_ERROR + 1e-3)
  mtime = os.path.getmtime(files['train'][0])
  assert builder.ensure_sample_records(str(tmp_path), 16) == files  # present: not rebuilt
  assert os.path.getmtime(files['train'][0]) == mtime


def test_tfds_array_record_dataset(tmp_path):
  data_dir = tmp_path / 'tfds'
  script = f"""
import io, numpy as np, tensorflow_datasets as tfds
from PIL import Image
import sys; sys.path.insert(0, {str(REPO / 'tests')!r})
from image_fixtures import jpeg, pattern

class TinyCoco(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')
  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({{
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
        'image/filename': tfds.features.Text()}}))
  def _split_generators(self, dl_manager):
    return {{'train': self._generate_examples(0, 3), 'validation': self._generate_examples(3, 2)}}
  def _generate_examples(self, start, n):
    for i in range(start, start + n):
      yield str(i), {{'image': jpeg(pattern(40, 56, i)), 'image/filename': f'{{i:012d}}.jpg'}}

TinyCoco(data_dir={str(data_dir)!r}, file_format='array_record').download_and_prepare(
    download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
"""
  prep = subprocess.run(
    [sys.executable, '-c', script],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={**os.environ, 'PYTHONPATH': str(REPO)},
  )
  assert prep.returncode == 0, prep.stderr[-2000:]
  # Read in another process, where the builder class is unknown: as for a prepared coco/2017.
  out = tmp_path / 'out'
  proc = _cli(
    '--tfds_name=tiny_coco',
    f'--tfds_data_dir={data_dir}',
    '--split=val',
    f'--output_dir={out}',
    '--image_size=16',
    '--min_size=16',
    '--workers=2',
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  entry = json.loads((out / 'manifest.json').read_text())['splits']['val']
  assert entry['settings']['source'] == 'tfds:tiny_coco[validation]'
  examples = _read_all([str(out / s['file']) for s in entry['shards']])
  assert sorted(ex['id'] for ex in examples) == ['000000000003.jpg', '000000000004.jpg']
  for ex in examples:
    i = int(ex['id'][:-4])
    expected = images.load_rgb8(jpeg(pattern(40, 56, i)), 16, min_size=16)
    np.testing.assert_allclose(
      ex['L'][..., 0], skcolor.rgb2lab(expected)[..., 0], atol=records.L_MAX_ERROR + 1e-3
    )


MANY_ARGS = ['--image_size=16', '--min_size=8', '--num_shards=6']
MANY_KW = dict(image_size=16, min_size=8, num_shards=6, workers=1, progress=False)


def _wait_for_first_shard(out, proc, timeout=60):
  deadline = time.time() + timeout
  while not _shard_bytes(out) and time.time() < deadline:
    assert proc.poll() is None, 'the first build ended before its first shard'
    time.sleep(0.02)


def test_a_second_build_into_the_same_folder_exits_2_naming_the_first(many, tmp_path):
  # Without the lock the second run removed the first one's temporary shard and both renamed
  # each other's files: the first could report a complete split holding a 0-byte shard.
  root, ref = many
  args = [f'--input_dir={root}', f'--output_dir={tmp_path}', *MANY_ARGS, '--workers=1']
  env = {**os.environ, 'PYTHONPATH': str(REPO), builder.DELAY_ENV: '0.2'}
  first = subprocess.Popen(
    [sys.executable, '-m', 'data_prep.build_records', *args],
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    _wait_for_first_shard(tmp_path, first)  # well inside the first build
    second = _cli(*args, env={builder.DELAY_ENV: '0.2'})
    assert first.poll() is None, 'the runs did not overlap'
  finally:
    out, err = first.communicate(timeout=120)
  assert second.returncode == 2, second.stderr
  assert second.stderr.count('\n') == 1  # one line, no traceback
  assert second.stderr.startswith(
    f'data_prep: {tmp_path} is in use by process {first.pid} ({os.path.basename(sys.executable)} '
    '-m data_prep.build_records'
  )
  assert second.stderr.rstrip().endswith('wait for it or choose another folder')
  assert first.returncode == 0, err
  assert _comparable(tmp_path) == _comparable(ref)
  again = _cli(*args)  # the lock went with the first process
  assert again.returncode == 1 and 'already holds a complete train split' in again.stderr


@pytest.mark.parametrize('size', [0, 70000])
def test_a_truncated_shard_is_rebuilt_not_reported_complete(many, tmp_path, capsys, size):
  root, ref = many
  out = tmp_path / 'out'
  builder.build_records(str(root), str(out), 'train', **MANY_KW)
  broken = out / 'train-00002-of-00006.array_record'
  os.truncate(broken, size)  # 0 bytes, or cut inside its chunks
  mtime = os.path.getmtime(out / 'train-00001-of-00006.array_record')
  capsys.readouterr()
  entry = builder.build_records(str(root), str(out), 'train', **MANY_KW)  # no overwrite
  assert f'{broken} is unreadable (missing, empty or truncated): rebuilding it' in (
    capsys.readouterr().err
  )
  assert entry['written_now'] == 4  # that shard's 4 images only
  assert os.path.getmtime(out / 'train-00001-of-00006.array_record') == mtime
  assert _comparable(out) == _comparable(ref)  # byte for byte


def test_a_shard_with_fewer_records_than_its_stats_is_rebuilt(many, tmp_path, capsys):
  root, ref = many
  builder.build_records(str(root), str(tmp_path), 'train', **MANY_KW)
  # A valid ArrayRecord file of 1 record where the stats say 4 (e.g. another build's file).
  writer = array_record_module.ArrayRecordWriter(
    str(tmp_path / 'train-00003-of-00006.array_record'), builder.WRITER_OPTIONS
  )
  writer.write(b'x')
  writer.close()
  capsys.readouterr()
  builder.build_records(str(root), str(tmp_path), 'train', **MANY_KW)
  assert 'holds 1 records where its stats say 4: rebuilding it' in capsys.readouterr().err
  assert _shard_bytes(tmp_path) == _shard_bytes(ref)


def test_temporary_files_of_a_killed_run_are_removed(many, tmp_path):
  root, ref = many
  builder.build_records(str(root), str(tmp_path), 'train', **MANY_KW)
  (tmp_path / 'train-00001-of-00006.array_record').unlink()  # as if killed while writing it
  left = [
    tmp_path / '.train-00001-of-00006.array_record.k3j_h5g6.tmp',  # mkstemp's names
    tmp_path / '.train-00001-of-00006.array_record.tmp',  # older data_prep's name
    tmp_path / '.shards' / '.train-00001-of-00006.array_record.json.a1b2c3d4.tmp',
    tmp_path / '.manifest.json.zz9_8y7x.tmp',
  ]
  for path in left:
    path.write_bytes(b'half written')
  builder.build_records(str(root), str(tmp_path), 'train', **MANY_KW)
  assert not _temp_files(tmp_path)
  assert _shard_bytes(tmp_path) == _shard_bytes(ref)


def test_symlinked_and_unreadable_folders_are_listed_not_silently_omitted(
  tmp_path, capsys, monkeypatch
):
  root = tmp_path / 'photos'
  for rel in ('a/p0.jpg', 'secret/p1.jpg', 'secret/deeper/p2.jpg'):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(jpeg(pattern(24, 24, 7)))
  outside = tmp_path / 'elsewhere'
  outside.mkdir()
  (outside / 'p3.jpg').write_bytes(jpeg(pattern(24, 24, 8)))
  os.symlink(outside, root / 'ext')
  os.symlink(root, root / 'a' / 'loop')  # a loop if followed
  secret = root / 'secret'
  if os.geteuid() == 0:  # root reads a chmod 000 folder: make listing it fail as it would
    real_scandir = os.scandir

    def scandir(path='.'):
      if os.fspath(path) == str(secret):
        raise PermissionError(13, 'Permission denied', os.fspath(path))
      return real_scandir(path)

    monkeypatch.setattr(os, 'scandir', scandir)
  else:
    os.chmod(secret, 0)
  try:
    entry = builder.build_records(
      str(root), str(tmp_path / 'out'), 'train', image_size=16, min_size=8, workers=1,
      progress=False,
    )  # fmt: skip
  finally:
    os.chmod(secret, 0o755)
  assert entry['num_records'] == 1 and entry['files']
  manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())['splits']['train']
  assert manifest['ignored_symlinked_folders'] == ['a/loop', 'ext']
  assert manifest['unreadable_folders'] == ['secret']
  err = capsys.readouterr().err
  assert f'2 symlinked folders not followed under {root}: a/loop, ext' in err
  assert f'1 unreadable folders skipped under {root}: secret' in err


def test_an_output_folder_that_cannot_be_written_exits_2_in_one_line(many, tmp_path):
  root, _ = many
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  link_target = tmp_path / 'target.txt'
  link_target.write_text('keep')
  linked = tmp_path / 'linked'
  linked.mkdir()
  os.symlink(link_target, linked / '.colorjax.lock')  # a planted link is never written through
  cases = {
    a_file: 'Not a directory',
    a_file / 'sub': 'Not a directory',
    linked: 'the lock file is a symbolic link; refusing to use it',
  }
  if os.geteuid() != 0:  # root writes into a read-only folder
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o555)
    cases[read_only / 'out'] = 'Permission denied'
  for out, reason in cases.items():
    proc = _cli(f'--input_dir={root}', f'--output_dir={out}', *MANY_ARGS, '--workers=1')
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f'data_prep: cannot write to {out}: {reason}\n'
  assert a_file.read_text() == 'not a folder' and link_target.read_text() == 'keep'
  with pytest.raises(builder.OutputDirError, match='cannot write to') as e:
    builder.build_records(str(root), str(a_file), 'train', **MANY_KW)
  assert isinstance(e.value, OSError)


def test_sample_records_rebuild_a_truncated_shard(tmp_path):
  files = builder.ensure_sample_records(str(tmp_path), 16)
  before = {f: open(f, 'rb').read() for f in files['train']}
  os.truncate(files['train'][0], 0)
  assert builder.ensure_sample_records(str(tmp_path), 16) == files
  assert {f: open(f, 'rb').read() for f in files['train']} == before
