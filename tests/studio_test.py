"""colorjax.studio through Starlette's test client (upload, previews, hints, suggestions,
full-size downloads, every refusal) and a bounded load test of the real `launch.serve`."""

import asyncio
import concurrent.futures
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image
from studio_fixtures import HINT_MODEL, ROOT, Server, write_random_model

import colorjax
from colorjax import decoding, fullsize, lab, studio
from colorjax import hints as hints_lib
from colorjax import suggest as suggest_lib

pytest.importorskip(
  'starlette', reason="the studio needs the [app] extra (pip install -e '.[app]')"
)
from starlette.testclient import TestClient  # noqa: E402

CSRF = {'X-Colorjax-Studio': '1'}
LIMITS = studio.Limits(max_upload_bytes=3 << 20, max_pixels=4_000_000, max_photos=4, max_hints=8)


def encode(image, fmt='PNG', **kw):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt, **kw)
  return buffer.getvalue()


def decode(data):
  return np.asarray(Image.open(io.BytesIO(data)))


def chunk(kind, payload):
  return (
    struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))
  )


def header_only_png(width, height):
  """A PNG whose header claims width x height RGB pixels and that holds no pixel data."""
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')


CHELSEA = skimage.data.chelsea()  # 451 x 300: its preview is the photo itself
BIG = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((1200, 900), Image.BICUBIC))


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('hint_model')
  write_random_model(path, image_size=64, **HINT_MODEL)
  return path


@pytest.fixture(scope='module')
def colorizer(model_dir):
  return colorjax.load(model_dir)


@pytest.fixture(scope='module')
def engine(colorizer):
  return studio.make_engine(colorizer, backend='jax', limits=LIMITS)


@pytest.fixture(scope='module')
def client(engine):
  with TestClient(studio.create_app(engine), headers=CSRF) as c:
    yield c


def upload(client, data, name='photo.png'):
  response = client.post('/api/photos', params={'name': name}, content=data)
  assert response.status_code == 201, response.text
  return response.json()


def error_of(response, status):
  assert response.status_code == status, response.text
  message = response.json()['error']
  assert message and '\n' not in message and message.strip() == message
  return message


def test_the_page_and_its_files_are_served_by_the_app_and_need_no_network(client):
  page = client.get('/')
  assert page.status_code == 200 and page.headers['content-type'].startswith('text/html')
  assert "default-src 'self'" in page.headers['content-security-policy']
  assert '/static/studio.js' in page.text and '/static/studio.css' in page.text
  for name, kind in (('studio.js', 'text/javascript'), ('studio.css', 'text/css')):
    response = client.get(f'/static/{name}')
    assert response.status_code == 200 and response.headers['content-type'].startswith(kind)
    assert not re.search(r'https?://', response.text), f'{name} names an outside address'
  assert not re.search(r'(src|href)="https?://', page.text)
  for name in ('engine.py', '..%2Fengine.py', 'index.html', '..%2F..%2F__init__.py'):
    assert client.get(f'/static/{name}').status_code == 404


def test_info_says_what_the_model_offers(client, colorizer):
  info = client.get('/api/info').json()
  assert info['hints'] and info['suggest'] and info['vividness']
  assert info['image_size'] == 64 and info['backend'] == 'jax fp32'
  assert info['limits']['max_upload_bytes'] == LIMITS.max_upload_bytes
  assert info['chroma_gain'] == colorizer.config.chroma_gain


def test_upload_preview_and_full_size_download_keep_the_photos_lightness(client, colorizer):
  meta = upload(client, encode(BIG), 'astronaut.png')
  assert (meta['width'], meta['height']) == (1200, 900)
  assert (meta['preview_width'], meta['preview_height']) == (800, 600)
  original = decode(client.get(f'/api/photos/{meta["id"]}/original').content)
  assert original.shape == (600, 800, 3)
  preview = client.post(f'/api/photos/{meta["id"]}/preview', json={'hints': []})
  assert preview.headers['content-type'] == 'image/jpeg'
  assert decode(preview.content).shape == (600, 800, 3)
  response = client.post(f'/api/photos/{meta["id"]}/download', json={'format': 'png'})
  assert response.headers['content-type'] == 'image/png'
  assert 'astronaut-color.png' in response.headers['content-disposition']
  rgb = decode(response.content)
  assert rgb.shape == BIG.shape
  diff = np.abs(fullsize.lightness(rgb) - fullsize.lightness(BIG))
  assert diff.max() < 1.0 and diff.mean() < 0.2, (diff.max(), diff.mean())
  assert np.abs(lab.rgb8_to_lab(rgb)[..., 1:]).mean() > 1  # colored, not gray
  # The library's own path to the same picture (an independent call chain).
  expected = colorjax.colorize_image(colorizer, BIG)
  assert np.abs(rgb.astype(int) - expected).max() <= 1
  jpeg = client.post(f'/api/photos/{meta["id"]}/download', json={'format': 'jpg'})
  assert jpeg.headers['content-type'] == 'image/jpeg' and decode(jpeg.content).shape == BIG.shape


def test_hints_change_the_colorization_as_the_library_applies_them(client, colorizer):
  meta = upload(client, encode(CHELSEA))
  url = f'/api/photos/{meta["id"]}'
  hint = {'x': 120.0, 'y': 140.0, 'color': '#ff0000', 'radius': 12}
  plain = decode(client.post(url + '/preview', json={'hints': []}).content)
  hinted = decode(client.post(url + '/preview', json={'hints': [hint]}).content)
  assert np.abs(plain.astype(int) - hinted).max() > 10
  rgb = decode(client.post(url + '/download', json={'hints': [hint]}).content)
  expected = colorjax.colorize_image(colorizer, CHELSEA, hints=[hints_lib.Hint(**hint)])
  assert np.abs(rgb.astype(int) - expected).max() <= 1


def test_vividness_is_the_chroma_gain_times_the_models(client, colorizer):
  meta = upload(client, encode(CHELSEA))
  url = f'/api/photos/{meta["id"]}/download'
  rgb = decode(client.post(url, json={'vividness': 2.0}).content)
  vivid = decoding.with_decoding(colorizer, chroma_gain=2.0 * colorizer.config.chroma_gain)
  assert np.abs(rgb.astype(int) - colorjax.colorize_image(vivid, CHELSEA)).max() <= 1
  chroma = lambda im: np.hypot(*np.moveaxis(lab.rgb8_to_lab(im)[..., 1:], -1, 0)).std()
  assert chroma(rgb) > chroma(decode(client.post(url, json={'vividness': 1.0}).content))


def test_suggested_colors_are_the_models_at_that_point(client, colorizer):
  meta = upload(client, encode(CHELSEA))
  other = {'x': 300, 'y': 50, 'color': '#2040c0'}
  response = client.post(
    f'/api/photos/{meta["id"]}/suggest', json={'x': 200, 'y': 150, 'hints': [other]}
  )
  colors = response.json()['colors']
  expected = suggest_lib.suggest_colors(
    colorizer, CHELSEA, 200, 150, k=LIMITS.suggestions, hints=[hints_lib.Hint(**other)]
  )
  assert [c['color'] for c in colors] == [c['color'] for c in expected]
  np.testing.assert_allclose(
    [c['probability'] for c in colors], [c['probability'] for c in expected]
  )
  assert all(re.fullmatch('#[0-9a-f]{6}', c['color']) for c in colors)


def test_a_hints_file_round_trips_in_the_clis_schema(client, tmp_path):
  meta = upload(client, encode(CHELSEA))
  given = [
    hints_lib.Hint(10, 20, color='#aa0000'),
    hints_lib.Hint(100.5, 200.25, ab=(30.0, -20.0), radius=4),
  ]
  document = hints_lib.dump_hints(given)
  answer = client.post(f'/api/photos/{meta["id"]}/hints', json=document).json()['hints']
  assert answer[0]['display'] == '#aa0000'
  L = fullsize.lightness(CHELSEA[200:201, 100:101])[0, 0]
  expected = lab.lab_to_rgb(np.array([L, 30.0, -20.0], np.float32))  # in gamut: no fitting
  shown = np.array([int(answer[1]['display'][i : i + 2], 16) for i in (1, 3, 5)]) / 255
  np.testing.assert_allclose(shown, expected, atol=1 / 255)
  path = tmp_path / 'photo.hints.json'
  path.write_text(
    json.dumps({'hints': [{k: v for k, v in h.items() if k != 'display'} for h in answer]})
  )
  assert hints_lib.load_hints(path, (CHELSEA.shape[1], CHELSEA.shape[0])) == given


@pytest.mark.parametrize(
  'data, status, words',
  [
    (b'hello, not an image', 415, 'not an image'),
    (encode(CHELSEA)[:2000], 415, 'could not be decoded'),
    (header_only_png(3000, 2000), 413, 'before decoding'),  # 6 MP > max_pixels = 4 MP
    (header_only_png(100_000, 100_000), 413, 'before decoding'),  # over PIL's own limit too
    (b'', 400, 'empty'),
  ],
)
def test_uploads_that_are_not_usable_photos_are_refused_in_one_sentence(
  client, data, status, words
):
  message = error_of(client.post('/api/photos', params={'name': 'x.png'}, content=data), status)
  assert words in message and 'x.png' in message


def test_too_many_bytes_are_refused_whether_declared_or_streamed(client):
  data = b'\0' * (LIMITS.max_upload_bytes + 1)
  assert 'MB' in error_of(client.post('/api/photos', content=data), 413)

  def chunks():  # no Content-Length: counted while it streams
    for start in range(0, len(data), 1 << 20):
      yield data[start : start + (1 << 20)]

  error_of(client.post('/api/photos', content=chunks()), 413)


BAD_BODIES = [
  ({'hints': [{'x': 1, 'y': 2, 'color': '#ff00'}]}, "hint 0: field 'color'"),
  ({'hints': [{'x': 1, 'color': '#ff0000'}]}, "missing field 'y'"),
  ({'hints': [{'x': 1, 'y': 2, 'color': '#ff0000', 'path': '/etc/passwd'}]}, "'path'"),
  ({'hints': [{'x': 451, 'y': 2, 'color': '#ff0000'}]}, 'outside the 451x300 photo'),
  ({'hints': [{'x': 1, 'y': 2, 'ab': [500, 0]}]}, "field 'ab'"),
  ({'hints': [{'x': 1, 'y': 2, 'color': '#ff0000', 'radius': 1e9}]}, 'radius'),
  ({'hints': [{'x': 1, 'y': 2, 'color': '#ff0000'}] * 9}, 'At most 8 hints'),
  ({'hints': {'x': 1}}, "'hints' must be a list"),
  ({'vividness': 100}, "'vividness' must lie in"),
  ({'vividness': True}, "'vividness' must be a finite number"),
  ({'vividness': 'high'}, "'vividness' must be a finite number"),
  ({'path': '/etc/passwd'}, "Unknown field(s) 'path'"),
  ({'format': '../../x.png'}, "'format' must be one of"),
  ({'format': ['png']}, "'format' must be one of"),
]


@pytest.mark.parametrize('body, words', BAD_BODIES)
def test_bad_request_bodies_are_refused_naming_the_field(client, body, words):
  meta = upload(client, encode(CHELSEA))
  route = 'download' if 'format' in body else 'preview'
  message = error_of(client.post(f'/api/photos/{meta["id"]}/{route}', json=body), 400)
  assert words in message


def test_bodies_that_are_not_json_objects_or_too_large_are_refused(client):
  meta = upload(client, encode(CHELSEA))
  url = f'/api/photos/{meta["id"]}/preview'
  assert 'not valid JSON' in error_of(client.post(url, content=b'{"hints": ['), 400)
  assert 'not valid JSON' in error_of(client.post(url, content=b'{"vividness": NaN'), 400)
  assert 'finite' in error_of(client.post(url, content=b'{"vividness": NaN}'), 400)
  assert 'JSON object' in error_of(client.post(url, json=[1, 2]), 400)
  assert 'not valid JSON' in error_of(client.post(url, content=b'[' * 200_000), 400)
  error_of(client.post(url, content=b' ' * (LIMITS.max_json_bytes + 1)), 413)
  hints_url = f'/api/photos/{meta["id"]}/hints'
  assert 'no other keys' in error_of(client.post(hints_url, json={'hints': [], 'x': 1}), 400)
  suggest_url = f'/api/photos/{meta["id"]}/suggest'
  assert "'x'" in error_of(client.post(suggest_url, json={'x': 1000, 'y': 5}), 400)


@pytest.mark.parametrize(
  'photo_id', ['nosuchphotoatall', '..', '..%2F..%2Fsetup.cfg', '%2Fetc%2Fpasswd', 'a']
)
def test_unknown_photo_ids_and_paths_are_not_found(client, photo_id):
  for method, route in (('get', ''), ('get', '/original'), ('post', '/preview'), ('delete', '')):
    kw = {'json': {}} if method == 'post' else {}
    response = getattr(client, method)(f'/api/photos/{photo_id}{route}', **kw)
    assert response.status_code == 404


def test_a_file_name_is_only_a_label_never_a_path(client, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  meta = upload(client, encode(CHELSEA), '../../etc/passwd.png')
  assert meta['name'] == 'passwd.png'
  meta = upload(client, encode(CHELSEA), 'C:\\Users\\x\\cat "1".png')
  assert meta['name'] == 'cat _1_.png'
  response = client.post(f'/api/photos/{meta["id"]}/download', json={})
  assert 'filename="cat _1_-color.png"' in response.headers['content-disposition']
  assert list(tmp_path.iterdir()) == []


def test_deleted_and_evicted_photos_are_gone_and_the_most_recently_used_stay(client):
  ids = [upload(client, encode(CHELSEA))['id'] for _ in range(LIMITS.max_photos)]
  assert client.delete(f'/api/photos/{ids[0]}').status_code == 200
  assert 'no longer in memory' in error_of(client.get(f'/api/photos/{ids[0]}'), 404)
  client.get(f'/api/photos/{ids[1]}')  # used: now the most recent
  new = [upload(client, encode(CHELSEA))['id'] for _ in range(2)]
  kept = {p['id'] for p in client.get('/api/photos').json()['photos']}
  assert kept == {ids[1], ids[3], *new}


def test_requests_without_the_studio_header_or_for_another_host_are_refused(engine):
  with TestClient(studio.create_app(engine)) as bare:
    assert 'studio' in error_of(bare.post('/api/photos', content=encode(CHELSEA)), 403)
    assert bare.get('/api/info').status_code == 200  # reading needs no header
  app = studio.create_app(engine, allowed_hosts=studio.LOOPBACK_HOSTS)
  with TestClient(app, base_url='http://attacker.example') as other:
    assert other.get('/').status_code == 421
  with TestClient(app, base_url='http://127.0.0.1:8765') as local:
    assert local.get('/').status_code == 200
  with TestClient(app, base_url='http://[::1]:8765') as local6:
    assert local6.get('/').status_code == 200


@pytest.mark.parametrize(
  'fmt, image, kw',
  [
    ('TIFF', (np.linspace(0, 65535, 200 * 160).reshape(160, 200)).astype(np.uint16), {}),
    ('WEBP', CHELSEA, {'lossless': True}),
    ('JPEG', CHELSEA, {'quality': 90}),
  ],
)
def test_tiff_16_bit_webp_and_jpeg_photos_keep_their_lightness(client, fmt, image, kw):
  data = encode(image, fmt, **kw)
  meta = upload(client, data, f'photo.{fmt.lower()}')
  rgb = decode(client.post(f'/api/photos/{meta["id"]}/download', json={}).content)
  photo = fullsize.read_image(data)  # 16-bit gray scaled to 8 bits, as the library reads it
  assert rgb.shape[:2] == photo.shape[:2]
  assert np.abs(fullsize.lightness(rgb) - fullsize.lightness(photo)).max() < 1.0


def test_a_burst_of_requests_queues_at_the_worker_limit(engine, monkeypatch):
  httpx = pytest.importorskip('httpx')
  meta_id = engine.add_photo(encode(CHELSEA), 'burst.png').id
  running, peak, lock = [0], [0], threading.Lock()
  original = engine.preview

  def counted(*args):
    with lock:
      running[0] += 1
      peak[0] = max(peak[0], running[0])
    time.sleep(0.05)
    try:
      return original(*args)
    finally:
      with lock:
        running[0] -= 1

  monkeypatch.setattr(engine, 'preview', counted)
  app = studio.create_app(engine)

  async def burst():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url='http://t', headers=CSRF) as c:
      calls = [c.post(f'/api/photos/{meta_id}/preview', json={'vividness': 1 + i / 20})
               for i in range(12)]  # fmt: skip
      return await asyncio.gather(*calls)

  responses = asyncio.run(burst())
  assert [r.status_code for r in responses] == [200] * 12
  assert peak[0] == LIMITS.workers


def test_a_model_without_hints_or_classes_says_so(tmp_path):
  write_random_model(tmp_path / 'mse', image_size=32, name='unet', width=8)
  engine = studio.make_engine(colorjax.load(tmp_path / 'mse'), backend='jax')
  with TestClient(studio.create_app(engine), headers=CSRF) as client:
    info = client.get('/api/info').json()
    assert not (info['hints'] or info['suggest'] or info['vividness'])
    meta = upload(client, encode(CHELSEA))
    url = f'/api/photos/{meta["id"]}'
    hint = {'x': 1, 'y': 1, 'color': '#ff0000'}
    assert 'takes none' in error_of(client.post(url + '/preview', json={'hints': [hint]}), 400)
    assert 'no vividness' in error_of(client.post(url + '/preview', json={'vividness': 2}), 400)
    assert 'cannot suggest' in error_of(client.post(url + '/suggest', json={'x': 1, 'y': 1}), 400)
    assert client.post(url + '/preview', json={'vividness': 1}).status_code == 200


def test_a_failing_model_is_reported_on_the_page(colorizer):
  def broken(L, hints=None):
    raise RuntimeError('out of memory\nin the runtime')

  engine = studio.Engine(colorizer, broken, 'broken', LIMITS)
  with TestClient(studio.create_app(engine), headers=CSRF) as client:
    meta = upload(client, encode(CHELSEA))
    message = error_of(client.post(f'/api/photos/{meta["id"]}/preview', json={}), 500)
    assert message == 'The model failed: out of memory in the runtime.'


def test_the_onnx_runtime_colors_as_jax_does(colorizer):
  pytest.importorskip('openvino', reason='the [cpu] extra is not installed')
  pytest.importorskip('jax2onnx', reason='the [cpu] extra is not installed')
  auto = studio.make_engine(colorizer, backend='openvino', precision='fp32')
  jax_engine = studio.make_engine(colorizer, backend='jax')
  assert auto.backend == 'openvino fp32'
  hint = [hints_lib.Hint(120, 140, color='#ff0000', radius=12)]
  a, b = (e.add_photo(encode(CHELSEA), 'x.png') for e in (auto, jax_engine))
  np.testing.assert_allclose(auto.small_ab(a, hint)[0], jax_engine.small_ab(b, hint)[0], atol=0.05)


# -- the real server ------------------------------------------------------------------------------


def _post(url, data, timeout=120):
  request = urllib.request.Request(url, data=data, method='POST', headers=CSRF)
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.read()


PEAK_RSS_BOUND = 1 << 30  # measured: ~0.7 GiB at the peak (JAX, the model, 12 photos kept)


@pytest.mark.slow
def test_the_server_answers_50_concurrent_uploads_within_its_memory_bound(model_dir):
  server = Server(model_dir, '--backend=jax')
  try:
    assert server.url.startswith('http://127.0.0.1:')
    base_rss = server.peak_rss_bytes()
    rs = np.random.RandomState(0)
    photos = []
    for i in range(50):  # 50 different 1-3 MP JPEGs
      w, h = rs.randint(1000, 2000), rs.randint(900, 1500)
      photos.append(encode(np.asarray(Image.fromarray(BIG).resize((w, h))), 'JPEG', quality=85))
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
      results = list(pool.map(lambda d: _post(server.url + '/api/photos?name=p.jpg', d), photos))
    elapsed = time.monotonic() - start
    assert [status for status, _ in results] == [201] * 50, [r[1][:200] for r in results]
    ids = [json.loads(body)['id'] for _, body in results]
    kept = json.loads(urllib.request.urlopen(server.url + '/api/photos').read())['photos']
    assert len(kept) == studio.Limits().max_photos and {p['id'] for p in kept} <= set(ids)
    status, body = _post(server.url + f'/api/photos/{kept[-1]["id"]}/preview', b'{}')
    assert status == 200 and decode(body).ndim == 3
    peak = server.peak_rss_bytes()
    print(f'50 uploads in {elapsed:.1f} s; peak RSS {peak / 2**20:.0f} MiB '
          f'(after start-up {base_rss / 2**20:.0f} MiB)')  # fmt: skip
    assert peak < PEAK_RSS_BOUND
    foreign = urllib.request.Request(server.url + '/', headers={'Host': 'attacker.example'})
    with pytest.raises(urllib.error.HTTPError) as refused:
      urllib.request.urlopen(foreign, timeout=30)
    assert refused.value.code == 421
  finally:
    assert server.stop() in (0, -15)


def test_serve_refuses_a_busy_port_in_one_line():
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = subprocess.run(
      [sys.executable, '-m', 'launch.serve', '--checkpoint=unused', f'--port={port}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
    f'launch.serve: cannot listen on 127.0.0.1:{port}: Address already in use'
  )


def test_serve_uses_the_shipped_model_without_a_checkpoint():
  """No --checkpoint: the studio says it runs the shipped model, and does (its network, run by
  the CPU runtime from the ONNX file the export bundles)."""
  import json  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top

  server = Server(None)
  try:
    assert any('model: pretrained (the shipped model' in line for line in server.lines), (
      server.lines
    )
    with urllib.request.urlopen(server.url + '/api/info', timeout=60) as response:
      info = json.loads(response.read())
    assert info['model'] == 'effnet_unet' and info['hints'] and info['image_size'] == 128
  finally:
    server.stop()
