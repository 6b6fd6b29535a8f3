"""launch.train end to end (subprocesses, tiny.flags): workdir files, kill -9 + resume, SIGTERM,
NaN stop, and 2 processes on localhost agreeing with 1 process."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image
from record_fixtures import write_shards

from colorjax import checkpoint, lab, models

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'launch', 'configs', 'tiny.flags')
STEPS = 12
# eps=1e-3: see parallel_test (Adam turns summation-order noise into whole steps).
RUN = [f'--num_train_steps={STEPS}', '--checkpoint_every=2', '--eval_every=6', '--eps=1e-3']
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('records')
  images = []
  for name in PHOTOS:
    rgb = skimage.transform.resize(
      getattr(skimage.data, name)()[..., :3], (32, 32), anti_aliasing=True
    ).astype(np.float32)
    Lab = lab.rgb_to_lab(rgb)
    images.append((Lab[..., 0], Lab[..., 1:], name))
  write_shards(str(path), 'train', images, 2)
  write_shards(str(path), 'val', images[:3], 1)
  return str(path)


@pytest.fixture(scope='module')
def env():
  # The test run's compilation cache (conftest), for every compile: only the first run compiles.
  return dict(
    os.environ,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
    XLA_FLAGS='--xla_force_host_platform_device_count=1',
  )


def _cmd(workdir, data_dir, *extra):
  return [
    sys.executable,
    '-m',
    'launch.train',
    f'--flagfile={TINY}',
    f'--data_dir={data_dir}',
    f'--workdir={workdir}',
    *RUN,
    *extra,
  ]


def _run(cmd, env, check=True):
  proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  if check and proc.returncode:
    raise AssertionError(f'{cmd} failed:\n{proc.stderr[-3000:]}')
  return proc


def _steps(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) if os.path.isdir(ckpt) else []


def _start_and_wait_for_checkpoint(cmd, env, log):
  proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while not _steps(cmd[5].split('=', 1)[1]) and time.time() < deadline:
    assert proc.poll() is None, 'the run ended before its first checkpoint'
    time.sleep(0.05)
  assert proc.poll() is None, 'the run ended before it could be interrupted'
  return proc


def _rows(workdir):
  """metrics.jsonl rows without the timing fields."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [{k: v for k, v in r.items() if k != 'images_per_sec'} for r in rows]


def _assert_params_equal(a, b, rtol=0.0, atol=0.0):
  import jax  # pylint: disable=g-import-not-at-top

  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b) > 0
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir, env):
  workdir = str(tmp_path_factory.mktemp('reference'))
  proc = _run(_cmd(workdir, data_dir), env)
  return workdir, proc.stdout


def test_uninterrupted_run_writes_the_workdir(reference):
  workdir, stdout = reference
  config = models.ModelConfig.from_json(open(os.path.join(workdir, 'model.json')).read())
  assert config == models.ModelConfig(image_size=32)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'loss' in r]
  assert [r['step'] for r in train_rows] == list(range(2, STEPS + 1, 2))
  assert all(r['loss'] > 0 and r['images_per_sec'] > 0 and r['grad_norm'] > 0 for r in train_rows)
  assert [r['step'] for r in rows if 'val_loss' in r] == [6, 12]
  assert os.listdir(os.path.join(workdir, 'tensorboard'))[0].startswith('events.out.tfevents')
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', 'step_0000012.png')))
  assert grid.shape == (18 + 2 * (32 + 4) + 4, 4 * 4 + 3 * 32, 3)  # 2 rows x 3 columns, titled
  assert os.path.join(workdir, 'samples', 'step_0000012.png') in stdout
  assert _steps(workdir) == [10, 12]  # tiny.flags keeps 2
  params = checkpoint.restore_params(workdir)
  assert set(params) == {'params'} and len(params['params']) == 12


def test_kill9_and_resume_equals_uninterrupted(reference, data_dir, env, tmp_path):
  workdir = str(tmp_path / 'killed')
  with open(tmp_path / 'log.txt', 'w') as log:
    proc = _start_and_wait_for_checkpoint(_cmd(workdir, data_dir), env, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert max(_steps(workdir)) < STEPS
  resumed = _run(_cmd(workdir, data_dir), env)
  assert 'resuming from the checkpoint at step' in resumed.stdout
  # metrics.jsonl holds no rows of the steps redone after the kill.
  assert _rows(workdir) == _rows(reference[0])
  _assert_params_equal(checkpoint.restore_params(workdir), checkpoint.restore_params(reference[0]))


def test_sigterm_saves_a_checkpoint_and_stops(data_dir, env, tmp_path):
  workdir = str(tmp_path / 'preempted')
  with open(tmp_path / 'log.txt', 'w') as log:
    proc = _start_and_wait_for_checkpoint(_cmd(workdir, data_dir), env, log)
    first = max(_steps(workdir))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143  # a preemption, as a scheduler should see it
  out = open(tmp_path / 'log.txt').read()
  assert 'SIGTERM: saved the checkpoint at step' in out
  step = int(out.split('SIGTERM: saved the checkpoint at step ')[1].split()[0])
  assert max(_steps(workdir)) == step and first <= step < STEPS


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, env, tmp_path):
  workdir = str(tmp_path / 'nan')
  proc = _run(
    _cmd(workdir, data_dir, '--learning_rate=1e30', '--checkpoint_every=1'), env, check=False
  )
  assert proc.returncode == 2
  assert 'launch.train: non-finite training metrics at step 2' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert _steps(workdir) == [1]
  params = checkpoint.restore_params(workdir)
  import jax  # pylint: disable=g-import-not-at-top

  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_two_processes_match_one_process(reference, data_dir, env, tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / 'two')
  procs = [
    subprocess.Popen(
      _cmd(
        workdir,
        data_dir,
        '--parallel=sharded',
        '--num_processes=2',
        f'--process_id={i}',
        f'--coordinator_address=127.0.0.1:{port}',
      ),
      env=env,
      cwd=ROOT,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  errors = [p.communicate(timeout=600)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints', str(STEPS), 'data'))) == [
    'commit_success.txt',
    'process_0-of-2.json',
    'process_1-of-2.json',
  ]
  _assert_params_equal(
    checkpoint.restore_params(workdir),
    checkpoint.restore_params(reference[0]),
    rtol=1e-4,
    atol=1e-6,
  )
  losses = lambda w: [
    json.loads(r)['loss'] for r in open(os.path.join(w, 'metrics.jsonl')) if '"loss"' in r
  ]
  np.testing.assert_allclose(losses(workdir), losses(reference[0]), rtol=1e-4)


def test_classification_run_saves_its_decoding_weights(env, tmp_path):
  """A U-Net classification run on data_prep's sample records stores log(rebalancing weights) in
  model.json, so that the prior correction decodes the loaded checkpoint."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import colorjax  # pylint: disable=g-import-not-at-top
  from colorjax import trainer  # pylint: disable=g-import-not-at-top

  data, workdir = str(tmp_path / 'records'), str(tmp_path / 'run')
  cmd = _cmd(workdir, data, '--sample_data=true', '--model=unet', '--loss=classification')
  _run(cmd + ['--width=8', '--prior_correction=0.5', '--num_train_steps=2'], env)
  config = models.ModelConfig.from_json(open(os.path.join(workdir, 'model.json')).read())
  assert config.prior_correction == 0.5
  np.testing.assert_allclose(
    config.bin_log_weights, np.log(trainer.class_weights(data)), rtol=0, atol=1e-5
  )
  colorizer = colorjax.load(workdir)
  L = jnp.asarray(np.linspace(0, 100, 32 * 32, dtype=np.float32).reshape(32, 32))
  ab = np.asarray(colorjax.colorize(colorizer, L))
  assert ab.shape == (32, 32, 2) and np.all(np.abs(ab) <= 110)
  plain = colorizer.replace(config=dataclasses.replace(config, prior_correction=0.0))
  assert np.abs(ab - np.asarray(colorjax.colorize(plain, L))).max() > 0.01


def test_classification_run_with_calibrate_picks_its_decoding_on_val(env, tmp_path):
  """--calibrate: after the last step the decoding is chosen on the val records and saved."""
  from colorjax import calibration  # pylint: disable=g-import-not-at-top

  data, workdir = str(tmp_path / 'records'), tmp_path / 'run'
  cmd = _cmd(str(workdir), data, '--sample_data=true', '--model=unet', '--loss=classification')
  extra = ['--width=8', '--prior_correction=0.5', '--chroma_gain=1.2', '--num_train_steps=2']
  extra.append('--calibrate=true')
  _run(cmd + extra + ['--calibrate_images=1', '--calibrate_max_tint=1000'], env)
  record = json.loads((workdir / 'calibration.json').read_text())
  assert record['num_images'] == 1 and record['max_tint'] == 1000  # of 2 val records
  assert record['chosen'] == calibration.choose(record['sweep'], max_tint=1000)
  config = models.ModelConfig.from_json((workdir / 'model.json').read_text())
  assert (config.temperature, config.prior_correction, config.chroma_gain) == (
    record['chosen']['temperature'],
    record['chosen']['prior_correction'],
    record['chosen']['chroma_gain'],
  )
  trained = models.ModelConfig.from_json((workdir / 'model.json.uncalibrated').read_text())
  assert (trained.prior_correction, trained.chroma_gain) == (0.5, 1.2)
  assert trained.bin_log_weights == config.bin_log_weights


def _error_line(proc):
  """The one line a failed launch command prints (nothing like a traceback)."""
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith('launch.train: ')]
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def test_another_model_in_a_trained_workdir_is_refused_before_writing(
  reference, data_dir, env, tmp_path
):
  import shutil  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  before = open(os.path.join(workdir, 'model.json')).read()
  line = _error_line(
    _run(
      _cmd(workdir, data_dir, '--model=unet', '--width=16', '--num_train_steps=20'),
      env,
      check=False,
    )
  )
  assert 'holds checkpoints of another model' in line
  assert "name 'seed' (asked: 'unet')" in line and 'width 32 (asked: 16)' in line
  # Nothing was written: the old model.json, and its checkpoints still load.
  assert open(os.path.join(workdir, 'model.json')).read() == before
  _assert_params_equal(checkpoint.restore_params(workdir), checkpoint.restore_params(reference[0]))
  assert not [f for f in os.listdir(workdir) if f.endswith('.tmp')]


def test_nothing_to_do_and_records_of_another_size_are_one_line(reference, data_dir, env, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / 'copy')
  shutil.copytree(reference[0], workdir)
  line = _error_line(_run(_cmd(workdir, data_dir), env, check=False))
  assert 'nothing to do' in line and f'step {STEPS}' in line
  line = _error_line(
    _run(_cmd(str(tmp_path / 'new'), data_dir, '--image_size=64'), env, check=False)
  )
  assert 'are 32x32, not --image_size=64' in line


def test_a_second_training_in_the_same_workdir_is_refused(data_dir, env, tmp_path):
  workdir = str(tmp_path / 'shared')
  with open(tmp_path / 'log.txt', 'w') as log:
    first = _start_and_wait_for_checkpoint(
      _cmd(workdir, data_dir, '--num_train_steps=400'), env, log
    )
    try:
      line = _error_line(_run(_cmd(workdir, data_dir), env, check=False))
      assert f'in use by process {first.pid}' in line and 'launch.train' in line
    finally:
      first.kill()
      first.wait()
  rows = [json.loads(r)['step'] for r in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert rows == sorted(rows)  # one run's rows only


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
  reference, data_dir, env, tmp_path
):
  import shutil  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / 'corrupt')
  shutil.copytree(reference[0], workdir)
  state = os.path.join(workdir, 'checkpoints', str(STEPS), 'state')
  files = [os.path.join(d, f) for d, _, fs in os.walk(state) for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 3)
  proc = _run(_cmd(workdir, data_dir, f'--num_train_steps={STEPS + 2}'), env)
  assert f'checkpoint at step {STEPS} is unreadable' in proc.stderr + proc.stdout
  assert f'falling back to step {STEPS - 2}' in proc.stderr + proc.stdout
  assert f'resuming from the checkpoint at step {STEPS - 2}' in proc.stdout
  assert max(_steps(workdir)) == STEPS + 2


def test_init_from_starts_at_step_0_from_those_params(reference, data_dir, env, tmp_path):
  """--init_from: the run starts from the source's params with a fresh optimizer at step 0
  (at a learning rate of 1e-30 its params stay the source's to 1e-20), and another
  architecture is one line."""
  workdir = str(tmp_path / 'tuned')
  run = ['--num_train_steps=2', '--checkpoint_every=2', '--learning_rate=1e-30']
  _run(_cmd(workdir, data_dir, f'--init_from={reference[0]}', *run), env)
  assert _steps(workdir) == [2]  # counted from 0, not from the source's step 12
  _assert_params_equal(
    checkpoint.restore_params(workdir), checkpoint.restore_params(reference[0]), atol=1e-20
  )
  line = _error_line(
    _run(
      _cmd(str(tmp_path / 'other'), data_dir, f'--init_from={reference[0]}', '--model=unet',
           '--width=16', *run),
      env,
      check=False,
    )
  )  # fmt: skip
  assert 'is another architecture' in line and "name 'seed' (this run: 'unet')" in line


def test_merge_params_keeps_new_layers_and_refuses_other_shapes():
  from colorjax import trainer  # pylint: disable=g-import-not-at-top

  initialized = {'a': {'kernel': np.zeros((3, 2))}, 'hint_0': {'kernel': np.ones((3, 4))}}
  source = {'a': {'kernel': np.full((3, 2), 7.0)}}
  merged = trainer.merge_params(initialized, source)
  np.testing.assert_array_equal(merged['a']['kernel'], source['a']['kernel'])
  np.testing.assert_array_equal(merged['hint_0']['kernel'], initialized['hint_0']['kernel'])
  with pytest.raises(ValueError, match='has shape'):
    trainer.merge_params(initialized, {'a': {'kernel': np.zeros((2, 2))}})
  with pytest.raises(ValueError, match='lacks'):
    trainer.merge_params(initialized, {'b': {'kernel': np.zeros((2, 2))}})
