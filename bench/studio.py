"""The studio's latency on this CPU, request to response over HTTP on localhost: the preview after
a new hint (or, for a model without hints, the automatic one) and a 12-megapixel download.

python3 -m bench.studio                           # a random tiny hint model (U-Net, 64 px)
python3 -m bench.studio --checkpoint=random --checkpoint=/work/runs/e1 [--checkpoint=DIR ...]
"""

import http.client
import io
import json
import socket
import statistics
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from bench import report
from colorjax import colorize_files, inference, models, studio

_CHECKPOINT = flags.DEFINE_multi_string(
  'checkpoint', [], "workdirs or exports to time; 'random': a random tiny hint model (default)"
)
_BACKEND = flags.DEFINE_enum('backend', 'auto', colorize_files.BACKENDS, 'as launch.serve')
_PHOTO = flags.DEFINE_string(
  'photo',
  '/work/shared/data/coco/originals/000000000139.jpg',
  'photo upscaled to the 12-megapixel upload (skimage astronaut if absent)',
)
_REPEATS = flags.DEFINE_integer('repeats', 7, 'timed requests per row after a warm-up; median')
_UPLOADS = flags.DEFINE_integer('uploads', 3, 'timed 12-megapixel uploads (each also times the '
                                'first, automatic preview)')  # fmt: skip
TARGETS = {'preview': 300.0, '12 MP download': 2000.0}  # ms, for the cases that start so


def random_hint_model(image_size=64):
  """A U-Net classification model that takes hints, width 8, Flax's init (timing only)."""
  config = models.ModelConfig(
    name='unet', width=8, loss='classification', hints=True, image_size=image_size
  )
  L = jnp.zeros((1, image_size, image_size, 1))
  params = jax.jit(models.create_model(config).init)(jax.random.key(0), L)
  return inference.Colorizer(params=params, config=config)


def photo_12mp(path):
  try:
    image = Image.open(path).convert('RGB')
  except OSError:
    import skimage.data  # pylint: disable=g-import-not-at-top

    image = Image.fromarray(skimage.data.astronaut())
  big = image.resize((4240, 2832), Image.BICUBIC)  # 12.0 megapixels
  buffer = io.BytesIO()
  big.save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def serve(engine):
  """The studio app on a free localhost port in a thread; returns (port, stop)."""
  import uvicorn  # pylint: disable=g-import-not-at-top

  sock = socket.socket()
  sock.bind(('127.0.0.1', 0))
  sock.listen(64)
  server = uvicorn.Server(
    uvicorn.Config(studio.create_app(engine), log_level='warning', lifespan='off')
  )
  thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  while not server.started:
    time.sleep(0.05)

  def stop():
    server.should_exit = True
    thread.join(30)

  return sock.getsockname()[1], stop


class Client:
  """One keep-alive HTTP connection; request() -> (body, seconds from send to the last byte)."""

  def __init__(self, port):
    self.conn = http.client.HTTPConnection('127.0.0.1', port, timeout=600)

  def request(self, path, body=None, json_body=None):
    headers = {'X-Colorjax-Studio': '1'}
    if json_body is not None:
      body, headers['Content-Type'] = json.dumps(json_body).encode(), 'application/json'
    start = time.perf_counter()
    self.conn.request('POST', path, body=body, headers=headers)
    response = self.conn.getresponse()
    data = response.read()
    seconds = time.perf_counter() - start
    if response.status >= 300:
      raise RuntimeError(f'{path}: {response.status} {data[:300]!r}')
    return data, seconds


def measure(name, colorizer, data, repeats, uploads, bundled_onnx=None):
  """Rows (model, case, median ms, min ms, max ms, target) for one model."""
  t0 = time.perf_counter()
  engine = studio.make_engine(colorizer, _BACKEND.value, bundled_onnx=bundled_onnx)
  engine.warm_up()
  startup = time.perf_counter() - t0
  port, stop = serve(engine)
  client = Client(port)
  info = engine.info()
  times = {}
  add = lambda case, s: times.setdefault(case, []).append(s * 1e3)
  rs = np.random.RandomState(0)
  try:
    photo_id = None
    for i in range(uploads + 1):  # the first is the warm-up
      body, s_up = client.request('/api/photos?name=big.jpg', body=data)
      photo_id = json.loads(body)['id']
      _, s_first = client.request(f'/api/photos/{photo_id}/preview', json_body={})
      _, s_down = client.request(f'/api/photos/{photo_id}/download', json_body={'format': 'png'})
      if i:
        add('upload 12 MP JPEG (decode, network input, preview)', s_up)
        add('first preview after the upload (network + 800 px join)', s_first)
        add('first 12 MP download (PNG) after the upload', s_down)
    meta = json.loads(client.request('/api/photos?name=x', body=data)[0])
    photo_id, w, h = meta['id'], meta['width'], meta['height']
    hints = []
    body = lambda **kw: {'hints': hints, **kw}
    client.request(f'/api/photos/{photo_id}/preview', json_body=body())
    for i in range(repeats + 1):
      if info['hints']:
        hints.append({'x': float(rs.uniform(0, w - 1)), 'y': float(rs.uniform(0, h - 1)),
                      'color': '#%02x%02x%02x' % tuple(rs.randint(0, 256, 3))})  # fmt: skip
        _, s = client.request(f'/api/photos/{photo_id}/preview', json_body=body())
        if i:
          add('preview after a new hint (network + 800 px join)', s)
      if info['vividness']:
        _, s = client.request(
          f'/api/photos/{photo_id}/preview', json_body=body(vividness=1 + i / 10)
        )
        if i:
          add('preview after a vividness change (800 px join)', s)
      if info['suggest']:
        point = {'x': float(rs.uniform(0, w - 1)), 'y': float(rs.uniform(0, h - 1))}
        _, s = client.request(
          f'/api/photos/{photo_id}/suggest', json_body={**point, 'hints': hints}
        )
        if i:
          add('suggested colors at a point', s)
    for fmt in ('png', 'jpg'):
      for i in range(repeats + 1):
        _, s = client.request(f'/api/photos/{photo_id}/download', json_body=body(format=fmt))
        if i:
          add(f'12 MP download, {fmt.upper()} (full-size join + encoding)', s)
  finally:
    stop()
  rows = []
  for case, ms in times.items():
    target = next(
      (t for k, t in TARGETS.items() if case.removeprefix('first ').startswith(k)), None
    )
    target = '' if target is None else f'< {target:.0f}'
    rows.append((name, case, statistics.median(ms), min(ms), max(ms), target))
  c = colorizer.config
  label = (
    f'{name}: {c.name} {c.loss}, {c.image_size} px, hints {"yes" if c.hints else "no"}; '
    f'{engine.backend}; start-up with export and warm-up {startup:.1f} s'
  )
  return rows, label


def main(argv):
  del argv
  data = photo_12mp(_PHOTO.value)
  names = _CHECKPOINT.value or ['random']
  models_to_time = [
    ('random tiny hint model', (random_hint_model(), None))
    if c == 'random'
    else (c, colorize_files.load_checkpoint(c))  # as launch.serve: a bundled ONNX file if any
    for c in names
  ]
  rows, labels = [], []
  for name, (colorizer, bundled) in models_to_time:
    model_rows, label = measure(name, colorizer, data, _REPEATS.value, _UPLOADS.value, bundled)
    rows += model_rows
    labels.append(label)
  body = (
    "Request to response over HTTP on localhost (`launch.serve`'s app under uvicorn, one "
    f'keep-alive connection), {_REPEATS.value} timed requests per row after a warm-up '
    f'({_UPLOADS.value} for the upload rows), median with min and max. The photo: a 12-megapixel '
    '(4240x2832) JPEG; its preview is 800x534. The network runs at its own size on the photo '
    'squashed to it; previews join its ab to the 800 px preview, downloads the same ab to the '
    "full-size photo's own L (PNG at zlib level 1, JPEG at quality 95). A max far above its "
    'median is a one-off XLA compile: fullsize.join compiles per padded photo width (the first '
    'preview of a new size, about 0.9 s here; the upload compiles the full-size one in the '
    'background) and its gamut fit per power-of-two count of out-of-sRGB pixels.\n\n'
    + '\n'.join(f'- {label}' for label in labels)
    + '\n\n'
    + report.table(['model', 'case', 'median ms', 'min ms', 'max ms', 'target ms'], rows)
  )
  report.write_section('studio', ' '.join(['python3 -m bench.studio'] + sys.argv[1:]), body)


if __name__ == '__main__':
  app.run(main)
