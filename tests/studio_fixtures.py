"""Test helpers for the studio: tiny models (random, or trained to follow hints) and a real
`launch.serve` subprocess on a free localhost port."""

import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from colorjax import lab, models

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / 'launch' / 'configs' / 'tiny.flags'
HINT_MODEL = dict(name='unet', width=8, loss='classification', hints=True)


def write_random_model(path, image_size=64, seed=0, **config_fields):
  """An exported checkpoint (model.json + params/) of a randomly initialized network: kernels
  LeCun-normal, norm scales 1 and biases 0 (so its output depends on its input and hints),
  drawn with NumPy from the shapes (no compiled init)."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  config = models.ModelConfig(image_size=image_size, **config_fields)
  L = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jnp.float32)
  shapes = jax.eval_shape(lambda x: models.create_model(config).init(jax.random.key(0), x), L)
  rng = np.random.RandomState(seed)

  def draw(key_path, leaf):
    name = str(key_path[-1])
    if 'scale' in name:
      return np.ones(leaf.shape, np.float32)
    if len(leaf.shape) < 2:
      return np.zeros(leaf.shape, np.float32)
    return (rng.normal(0, 1, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)

  params = jax.tree_util.tree_map_with_path(draw, shapes)
  (path / 'model.json').write_text(config.to_json())
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / 'params', params)
  return config


def _synthetic_photos(folder, count, seed, size=64):
  """Photos whose color is one random hue per photo, unrelated to their lightness pattern: a
  network can only color them right by following the hints."""
  folder.mkdir(parents=True, exist_ok=True)
  rs = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  for i in range(count):
    L = 50 + 20 * np.sin(2 * np.pi * (rs.uniform(0.5, 3) * xx + rs.uniform())) * np.cos(
      2 * np.pi * rs.uniform(0.5, 3) * yy
    )
    hue, chroma = rs.uniform(0, 2 * np.pi), rs.uniform(20, 60)
    Lab = np.stack(
      [L, np.full_like(L, chroma * np.cos(hue)), np.full_like(L, chroma * np.sin(hue))], -1
    )
    rgb = np.clip(lab.lab_to_rgb(Lab.astype(np.float32)), 0, 1)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(folder / f'{i:03d}.png')


def train_hint_model(workdir, image_size=32, steps=60):
  """Trains the tiny hint-taking U-Net (classification) on synthetic photos whose only color
  cue is the hints (about 20 CPU seconds): a real trained model for the studio's tests, which
  colorize follows through its spreading of the hints (colorjax.propagation)."""
  from data_prep import builder  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(workdir)
  data = workdir.parent / (workdir.name + '_records')
  for split, count, seed in (('train', 64, 0), ('val', 8, 1)):
    photos = workdir.parent / (workdir.name + f'_photos_{split}')
    _synthetic_photos(photos, count, seed)
    builder.build_records(
      str(photos), str(data), split, image_size=image_size, workers=1, progress=False
    )
  cmd = [
    sys.executable, '-m', 'launch.train', f'--flagfile={TINY}', f'--data_dir={data}',
    f'--workdir={workdir}', '--model=unet', '--width=8', '--loss=classification', '--hints=true',
    f'--image_size={image_size}', '--batch_size=16', f'--num_train_steps={steps}',
    '--learning_rate=3e-3', '--hint_continue_prob=0.95', '--rotation_deg=0', '--zoom=0',
    f'--log_every={steps}', f'--eval_every={steps}', f'--checkpoint_every={steps}',
    '--num_samples=0',
  ]  # fmt: skip
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  if proc.returncode:
    raise AssertionError(f'training the hint model failed:\n{proc.stderr[-3000:]}')
  return workdir


class Server:
  """`python -m launch.serve --port=0` in a subprocess: its URL (read from the line it prints),
  its pid, and its output so far."""

  def __init__(self, checkpoint, *extra, timeout=300):
    given = [] if checkpoint is None else [f'--checkpoint={checkpoint}']  # None: the default
    cmd = [sys.executable, '-m', 'launch.serve', *given, '--port=0', *extra]
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    self.proc = subprocess.Popen(
      cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    self.lines = []
    self.url = None
    found = threading.Event()

    def read():
      for line in self.proc.stdout:
        self.lines.append(line)
        match = re.search(r'colorjax studio: (http://\S+)', line)
        if match and self.url is None:
          self.url = match.group(1).rstrip('/')
          found.set()
      found.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(1) and time.monotonic() < deadline:
      pass
    if self.url is None:
      self.stop()
      raise AssertionError('launch.serve did not start:\n' + ''.join(self.lines)[-3000:])

  @property
  def pid(self):
    return self.proc.pid

  def peak_rss_bytes(self):
    """The server's peak resident memory (VmHWM of /proc/PID/status)."""
    for line in open(f'/proc/{self.pid}/status'):
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) * 1024
    raise AssertionError('no VmHWM in /proc status')

  def stop(self):
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait(30)
    return self.proc.returncode
