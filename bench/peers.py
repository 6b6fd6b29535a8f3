"""The seed network in colorjax (JAX, ONNX CPU runtimes), PyTorch and Keras, timed in one run.

  python -m bench.peers            # 256x256, batch 8: sections 'peers' and 'cpu_runtime'
  python -m bench.peers --quick    # 128x128, one repetition: a smoke run of every path

PyTorch and Keras are optional ([bench] extra); a missing one is reported and skipped. Results
are images/s (best of --reps timed runs, since the CPU is shared) and ratios to JAX float32 in the
same run. The 'cpu_runtime' section checks each ONNX setting's quality against fp32 on real photos
and times a 12-megapixel photo end to end.
"""

import glob
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import app, flags
from PIL import Image

from bench import report
from colorjax import (
  constants,
  cpu_runtime,
  decoding,
  fullsize,
  host_memory,
  inference,
  lab,
  metrics,
  models,
  onnx_export,
)

_QUICK = flags.DEFINE_bool('quick', False, '128x128, 1 repetition, fewer photos and steps.')
_SIZE = flags.DEFINE_integer('image_size', 256, 'Height and width of the timed images.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Images per step.')
_REPS = flags.DEFINE_integer('reps', 3, 'Timed runs per setting; the best counts.')
_THREADS = flags.DEFINE_integer('threads', os.cpu_count(), 'CPU threads for every framework.')
_PEERS = flags.DEFINE_list('peers', ['torch', 'keras'], 'Peers to time: torch, keras.')
_PHOTOS = flags.DEFINE_string(
  'photos', None, 'Folder with train2017/ and val2017/ JPEGs (for the quality check; required).'
)
_TRAIN_STEPS = flags.DEFINE_integer(
  'train_steps', 150, 'Adam steps at 64x64 before the quality check (0: random init).'
)
_ROUNDS = flags.DEFINE_integer(
  'rounds', 10, 'Rounds of the interleaved training comparison (one step of each per round).'
)
_WRITE = flags.DEFINE_bool('write', True, 'Write the tables into docs/benchmarks.md.')


def throughput(step, batch, reps, iters=2):
  """Images/s of step() (which must block until done): 1 warm-up call, best of reps timed runs."""
  step()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    for _ in range(iters):
      step()
    best = min(best, (time.perf_counter() - t) / iters)
  return batch / best


def duel(steps, rounds):
  """Seconds per step of each callable in steps (name -> step()), timed in alternation: one step
  of each per round (after one warm-up round), so a shared host's slow spells hit all alike.
  Returns (name -> median seconds, name -> the median over rounds of its step's seconds over the
  first's: the first's speed relative to it)."""
  names = list(steps)
  for name in names:
    steps[name]()
  seconds = {name: [] for name in names}
  for _ in tqdm.trange(rounds, desc='interleaved training steps'):
    for name in names:
      seconds[name].append(_seconds(steps[name]))
  first = np.asarray(seconds[names[0]])
  ratios = {name: float(np.median(np.asarray(seconds[name]) / first)) for name in names}
  return {name: float(np.median(v)) for name, v in seconds.items()}, ratios


def _seconds(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def fake_batch(batch, size, rng):

  L = rng.uniform(0, 100, (batch, size, size, 1)).astype(np.float32)
  ab = rng.uniform(-0.5, 0.5, (batch, size, size, 2)).astype(np.float32)
  return L, ab


def jax_train_step(model, learning_rate=1e-3):
  """A jitted Adam/MSE step (params, opt_state, L, ab/128) -> (params, opt_state, loss)."""

  tx = optax.adam(learning_rate)

  def loss_fn(params, L, target):
    return jnp.mean((model.apply({'params': params}, L) - target) ** 2)

  @jax.jit
  def step(params, opt_state, L, target):
    loss, grads = jax.value_and_grad(loss_fn)(params, L, target)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


def time_jax(size, batch, reps, rng):
  """JAX/XLA rows: train float32, inference float32 and bfloat16."""

  L, ab = fake_batch(batch, size, rng)
  model = models.SeedNet(conv='xla')
  params = model.init(jax.random.key(0), jnp.asarray(L[:1]))['params']
  n_params = sum(p.size for p in jax.tree.leaves(params))
  tx, step = jax_train_step(model)
  state = [params, tx.init(params)]

  def train():
    state[0], state[1], loss = step(state[0], state[1], L, ab)
    loss.block_until_ready()

  rows = {('train', 'f32'): throughput(train, batch, reps)}
  _, step_mm = jax_train_step(models.SeedNet(conv='matmul'))  # the CPU default (conv='auto')
  state_mm = [params, tx.init(params)]

  def train_mm():
    state_mm[0], state_mm[1], loss = step_mm(state_mm[0], state_mm[1], L, ab)
    loss.block_until_ready()

  rows[('train', 'f32, conv=matmul')] = throughput(train_mm, batch, reps)
  rows['train_fn'] = train_mm
  for dtype, conv in (('f32', 'xla'), ('f32', 'matmul'), ('bf16', 'xla')):
    net = models.SeedNet(dtype=jnp.bfloat16 if dtype == 'bf16' else jnp.float32, conv=conv)
    apply = jax.jit(lambda p, x, net=net: net.apply({'params': p}, x))
    rows[('infer', dtype if conv == 'xla' else f'{dtype}, conv=matmul')] = throughput(
      lambda a=apply: a(params, L).block_until_ready(), batch, reps
    )
  return n_params, rows


def time_torch(size, batch, reps, rng, threads):
  """PyTorch rows (channels_last): train float32, inference float32 and bfloat16 autocast."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  layers, cin = [], 1
  for feats, stride in models.SEED_ENCODER:
    layers += [torch.nn.Conv2d(cin, feats, 3, stride, padding=1), torch.nn.ReLU()]
    cin = feats
  for feats in (64, 32):
    layers += [torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(cin, feats, 3, padding=1)]
    layers += [torch.nn.ReLU()]
    cin = feats
  layers += [
    torch.nn.Conv2d(cin, 2, 3, padding=1),
    torch.nn.Tanh(),
    torch.nn.Upsample(scale_factor=2),
  ]
  net = torch.nn.Sequential(*layers).to(memory_format=torch.channels_last)
  L, ab = fake_batch(batch, size, rng)
  L = torch.from_numpy(L).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  ab = torch.from_numpy(ab).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  opt = torch.optim.Adam(net.parameters(), 1e-3)

  def train():
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(L), ab)
    loss.backward()
    opt.step()

  rows = {('train', 'f32'): throughput(train, batch, reps), 'train_fn': train}
  net.eval()
  with torch.inference_mode():
    rows[('infer', 'f32')] = throughput(lambda: net(L), batch, reps)
    with torch.autocast('cpu', dtype=torch.bfloat16):
      rows[('infer', 'bf16')] = throughput(lambda: net(L), batch, reps)
  n_params = sum(p.numel() for p in net.parameters())
  net.train()
  return n_params, rows


def time_keras(size, batch, reps, rng, threads):
  """Keras 3 on TensorFlow rows: train float32, inference float32 and mixed_bfloat16."""
  os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(1)

  def build(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    layers = [keras.Input((size, size, 1))]
    for feats, stride in models.SEED_ENCODER:
      layers.append(keras.layers.Conv2D(feats, 3, stride, 'same', activation='relu'))
    for feats in (64, 32):
      layers.append(keras.layers.UpSampling2D(2))
      layers.append(keras.layers.Conv2D(feats, 3, padding='same', activation='relu'))
    layers.append(keras.layers.Conv2D(2, 3, padding='same', activation='tanh', dtype='float32'))
    layers.append(keras.layers.UpSampling2D(2))
    net = keras.Sequential(layers)
    keras.mixed_precision.set_dtype_policy('float32')
    return net

  L, ab = fake_batch(batch, size, rng)
  net = build('float32')
  net.compile(keras.optimizers.Adam(1e-3), 'mse')
  train = lambda: net.train_on_batch(L, ab)
  rows = {('train', 'f32'): throughput(train, batch, reps), 'train_fn': train}
  rows[('infer', 'f32')] = throughput(lambda: net.predict_on_batch(L), batch, reps)
  net16 = build('mixed_bfloat16')
  rows[('infer', 'bf16')] = throughput(lambda: net16.predict_on_batch(L), batch, reps)
  return net.count_params(), rows


SETTINGS = (
  ('onnxruntime', 'fp32'), ('onnxruntime', 'int8'), ('openvino', 'fp32'), ('openvino', 'bf16'),
  ('openvino', 'int8'),
)  # fmt: skip
MAX_PSNR_DROP_DB = 0.2  # a setting may become the CPU default within these of fp32
MAX_COLORFULNESS_CHANGE = 0.02


def load_photos(paths, size):
  """RGB uint8 (N, size, size, 3) of photos squashed to size x size."""

  out = []
  for path in paths:
    with Image.open(path) as im:
      out.append(np.asarray(im.convert('RGB').resize((size, size), Image.BILINEAR)))
  return np.stack(out)


def colorfulness(rgb_NxHxWx3):
  """colorjax.metrics.colorfulness of each image, averaged."""
  return float(np.mean([metrics.colorfulness(x) for x in rgb_NxHxWx3]))


def psnr(a_NxHxWx3, b_NxHxWx3):
  """colorjax.metrics.psnr of each pair of images, averaged (identical images count 100 dB)."""
  return float(np.mean([min(metrics.psnr(a, b), 100.0) for a, b in zip(a_NxHxWx3, b_NxHxWx3)]))


def to_rgb8(L, ab):

  rgb = lab.lab_to_rgb(np.concatenate([L, ab], axis=-1))
  return np.round(np.asarray(rgb) * 255).astype(np.uint8)


def brief_params(train_rgb, steps, batch, rng):
  """Seed params after `steps` Adam steps on 64x64 photos (random init when steps is 0)."""

  lab_N = lab.rgb8_to_lab(train_rgb)
  L_N, target_N = lab_N[..., :1], lab_N[..., 1:] / constants.AB_SCALE
  model = models.SeedNet()
  params = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 1)))['params']
  tx, step = jax_train_step(model, learning_rate=1e-4)  # 1e-3 saturates the tanh for good
  opt_state = tx.init(params)
  for _ in tqdm.trange(steps, desc='brief training at 64x64'):
    idx = rng.choice(len(L_N), batch, replace=False)
    params, opt_state, _ = step(params, opt_state, L_N[idx], target_N[idx])
  return params


def cpu_settings(size, batch, reps, threads, val_paths, train_paths, train_steps):
  """Times and checks every cpu_runtime setting; picks the CPU default; times a 12 MP photo."""

  rng = np.random.default_rng(1)
  params = brief_params(load_photos(train_paths, 64), train_steps, batch, rng)
  config = models.ModelConfig(image_size=size)
  val_rgb = load_photos(val_paths, size)
  val_L = lab.rgb8_to_lab(val_rgb)[..., :1]
  calib_L = lab.rgb8_to_lab(load_photos(train_paths[:16], size))[..., :1]
  timed_L = np.resize(val_L, (batch,) + val_L.shape[1:])
  apply = jax.jit(lambda x: decoding.decode(config, models.SeedNet().apply({'params': params}, x)))
  ref_rgb = to_rgb8(val_L, np.asarray(apply(val_L)))
  ref_psnr, ref_color = psnr(ref_rgb, val_rgb), colorfulness(ref_rgb)
  rows, runs = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    path = onnx_export.export_onnx(config, params, os.path.join(tmp, 'seed.onnx'), size)
    for backend, precision in SETTINGS:
      run = cpu_runtime.cpu_runtime(path, backend, precision, threads, calibration=(calib_L,))
      rgb = to_rgb8(val_L, run(val_L))
      rows[f'{backend} {precision}'] = dict(
        precision=precision, ips=throughput(lambda r=run: r(timed_L), batch, reps),
        psnr=psnr(rgb, val_rgb), color=colorfulness(rgb), diff=psnr(rgb, ref_rgb),
      )  # fmt: skip
      runs[f'{backend} {precision}'] = run
  ok = lambda r: (
    ref_psnr - r['psnr'] <= MAX_PSNR_DROP_DB
    and abs(r['color'] / ref_color - 1) <= MAX_COLORFULNESS_CHANGE
  )
  best = max((k for k in rows if ok(rows[k])), key=lambda k: rows[k]['ips'])

  # 12 megapixels end to end: read, model input, the network at `size`, ab upsampled and joined.
  photo = load_photos(val_paths[:1], 64)[0]
  big = np.asarray(Image.fromarray(photo).resize((4000, 3000), Image.BILINEAR))
  colorizer = inference.Colorizer(params={'params': params}, config=config)
  predict = lambda L_BxSxS, r=runs[best]: r(L_BxSxS[..., None])
  parts = {'end to end': lambda: inference.colorize_images(colorizer, [big], predict=predict)}
  parts['full-res L (fullsize.lightness)'] = lambda: fullsize.lightness(big)
  parts[f'model input (fullsize.model_input, {size}x{size})'] = lambda: fullsize.model_input(
    big, size
  )
  parts[f'network, batch 1 ({best})'] = lambda: runs[best](val_L[:1])
  L_full, ab_small = fullsize.lightness(big), runs[best](val_L[:1])[0]
  parts['upsample ab and join (fullsize.join)'] = lambda: fullsize.join(L_full, ab_small)
  seconds = {}
  for name, fn in parts.items():
    fn()  # compiles jitted parts
    seconds[name] = min(_seconds(fn) for _ in range(max(reps, 2)))

  header = ['setting', 'images/s', 'PSNR dB', 'dPSNR vs JAX f32', 'colorfulness', 'd colorful',
            'PSNR vs JAX f32 output', 'within limits']  # fmt: skip
  table = [['JAX f32 (reference)', '-', ref_psnr, 0.0, ref_color, '0%', 'inf', '-']]
  for k, r in rows.items():
    table.append([k, r['ips'], r['psnr'], r['psnr'] - ref_psnr, r['color'],
                  f'{100 * (r["color"] / ref_color - 1):+.2f}%', r['diff'], ok(r)])  # fmt: skip
  body = (
    f'Seed model after {train_steps} Adam steps at 64x64 on {len(train_paths)} COCO train photos, '
    f'exported at {size}x{size}; quality on {len(val_paths)} COCO val photos (PSNR on RGB uint8 '
    f'against the photo, Hasler-Suesstrunk colorfulness); images/s at batch {batch}, {threads} '
    f'threads. Limits: PSNR within {MAX_PSNR_DROP_DB} dB and colorfulness within '
    f'{100 * MAX_COLORFULNESS_CHANGE:.0f}% of JAX fp32.\n\n'
    + report.table(header, table)
    + f'\n\nFastest setting within the limits (the CPU default): **{best}**.\n\n'
    f'12-megapixel photo (4000x3000) with inference.colorize_images and {best}, seconds:\n\n'
    + report.table(['part', 's'], list(seconds.items()))
  )
  return {'rows': rows, 'best': best, 'body': body}


def main(argv):
  del argv
  if not _PHOTOS.value or not os.path.isdir(os.path.join(_PHOTOS.value, 'val2017')):
    raise app.UsageError('--photos must name a folder with train2017/ and val2017/ JPEGs')

  # As `python -m launch.train` runs (launch/__init__.py), for every framework in this process.
  retained = host_memory.retain_freed_memory()
  size, reps = (128, 1) if _QUICK.value else (_SIZE.value, _REPS.value)
  batch, threads = _BATCH.value, _THREADS.value
  rng = np.random.default_rng(0)
  results = {}  # framework -> (params, {(mode, precision): images/s})
  results['JAX/XLA (colorjax)'] = time_jax(size, batch, reps, rng)
  print('jax', results['JAX/XLA (colorjax)'])
  timers = {'torch': ('PyTorch', time_torch), 'keras': ('Keras/TF', time_keras)}
  for peer in _PEERS.value:
    name, timer = timers[peer]
    try:
      results[name] = timer(size, batch, reps, rng, threads)
    except ImportError as e:
      print(f'skipping {name}: {e} (pip install "colorjax[bench]")')
      continue
    print(peer, results[name])
  train_fns = {name: timed.pop('train_fn') for name, (_, timed) in results.items()}
  rounds = 2 if _QUICK.value else _ROUNDS.value
  step_seconds, step_ratios = duel(train_fns, rounds)
  photos = sorted(glob.glob(os.path.join(_PHOTOS.value, 'val2017', '*.jpg')))
  train_photos = sorted(glob.glob(os.path.join(_PHOTOS.value, 'train2017', '*.jpg')))
  cpu = cpu_settings(
    size,
    batch,
    reps,
    threads,
    photos[: 4 if _QUICK.value else 16],
    train_photos[:64],
    train_steps=10 if _QUICK.value else _TRAIN_STEPS.value,
  )
  for setting, row in cpu['rows'].items():
    results[f'colorjax cpu_runtime {setting}'] = (None, {('infer', row['precision']): row['ips']})

  base_train = results['JAX/XLA (colorjax)'][1][('train', 'f32')]
  base_infer = results['JAX/XLA (colorjax)'][1][('infer', 'f32')]
  header = ['framework', 'params', 'mode', 'precision', 'images/s', 'x JAX f32 (same mode)']
  rows = []
  for name, (n_params, timed) in results.items():
    for (mode, precision), ips in timed.items():
      base = base_train if mode == 'train' else base_infer
      rows.append([name, n_params or '-', mode, precision, ips, ips / base])
  notes = (
    f'{size}x{size}, batch {batch}, {threads} threads, best of {reps}; train = Adam + MSE. '
    f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; glibc malloc keeps freed memory for every '
    f'framework (colorjax.host_memory, as launch.* sets it): {retained}.'
  )
  jax_rows = results['JAX/XLA (colorjax)'][1]
  for name in ('PyTorch', 'Keras/TF'):
    if name in results:
      peer = results[name][1][('train', 'f32')]
      notes += (
        f' Training, colorjax / {name} f32: {jax_rows[("train", "f32, conv=matmul")] / peer:.2f}x '
        f'with conv=matmul (the CPU default), {jax_rows[("train", "f32")] / peer:.2f}x with '
        'lax.conv.'
      )
  duel_rows = [
    [name, batch / step_seconds[name], step_ratios[name]] for name in step_seconds
  ]  # fmt: skip
  notes += (
    f'\n\nTraining interleaved, {rounds} rounds of one step each (colorjax conv=matmul, the CPU '
    "default; the peers float32), median images/s and the median of the rounds' ratios:\n\n"
    + report.table(['framework', 'images/s', 'colorjax / framework'], duel_rows)
  )
  command = 'python -m bench.peers' + (' --quick' if _QUICK.value else '')
  peers_body = notes + '\n\n' + report.table(header, rows)
  if _WRITE.value:
    report.write_section('peers', command, peers_body)
    report.write_section('cpu_runtime', command, cpu['body'])
  else:
    print(peers_body + '\n\n' + cpu['body'])


if __name__ == '__main__':
  app.run(main)
