"""The studio's ASGI app (Starlette): the page, its two static files and the photo API."""

import asyncio
import json
import logging
import pathlib
import urllib.parse
import weakref

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from colorjax.studio import engine as engine_lib
from colorjax.studio.engine import StudioError

STATIC = pathlib.Path(__file__).resolve().parent / 'static'
_STATIC_TYPES = {
  'index.html': 'text/html; charset=utf-8',
  'studio.js': 'text/javascript; charset=utf-8',
  'studio.css': 'text/css; charset=utf-8',
}
# Every state-changing request carries this header: a page of another site cannot add it
# without a CORS preflight, which this app never grants, so it cannot drive the studio.
CSRF_HEADER = 'x-colorjax-studio'
LOOPBACK_HOSTS = ('127.0.0.1', 'localhost', '::1')
_SECURITY_HEADERS = [
  (
    b'content-security-policy',
    b"default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  ),
  (b'x-content-type-options', b'nosniff'),
  (b'referrer-policy', b'no-referrer'),
  (b'cache-control', b'no-store'),
]


class _Slots:
  """The app's semaphores (upload bodies read at once, heavy tasks at once), one set per event
  loop: an asyncio.Semaphore belongs to the loop that first waits on it."""

  def __init__(self, limits):
    self._limits = limits
    self._by_loop = weakref.WeakKeyDictionary()

  def get(self):
    loop = asyncio.get_running_loop()
    slots = self._by_loop.get(loop)
    if slots is None:
      slots = (asyncio.Semaphore(self._limits.uploads), asyncio.Semaphore(self._limits.workers))
      self._by_loop[loop] = slots
    return slots


def _host_of(header):
  """The host part of a Host header ('[::1]:8765' -> '::1', 'localhost:80' -> 'localhost')."""
  header = header.strip().lower()
  if header.startswith('['):
    return header[1 : header.find(']')] if ']' in header else header
  return header.rsplit(':', 1)[0] if header.count(':') == 1 else header


class _Guard:
  """ASGI middleware: refuses Host headers outside allowed_hosts (None: any; DNS rebinding
  otherwise lets a remote page reach a loopback server) and adds the security headers."""

  def __init__(self, app, allowed_hosts):
    self.app = app
    self.allowed = None if allowed_hosts is None else {h.strip('[]').lower() for h in allowed_hosts}

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    if self.allowed is not None:
      host = dict(scope['headers']).get(b'host', b'').decode('latin-1')
      if _host_of(host) not in self.allowed:
        response = JSONResponse({'error': f'Host {host!r} is not served here.'}, 421)
        return await response(scope, receive, send)

    async def send_with_headers(message):
      if message['type'] == 'http.response.start':
        names = {k.lower() for k, _ in message.get('headers', [])}
        extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in names]
        message = {**message, 'headers': list(message.get('headers', [])) + extra}
      await send(message)

    return await self.app(scope, receive, send_with_headers)


def _endpoint(fn):
  """Turns StudioError into {'error': one sentence} with its status, anything else into 500."""

  async def wrapped(request):
    try:
      return await fn(request)
    except StudioError as e:
      return JSONResponse({'error': e.message}, e.status)
    except Exception as e:  # pylint: disable=broad-except  (said on the page, logged here)
      logging.exception('studio request %s failed', request.url.path)
      return JSONResponse({'error': f'The studio failed: {engine_lib.one_line(e)}.'}, 500)

  return wrapped


def _check_csrf(request):
  if request.headers.get(CSRF_HEADER) != '1':
    raise StudioError(403, "Requests that change something must come from the studio's page.")


async def _read_body(request, limit, what):
  """The body, refused (413) as soon as it, or its declared length, passes limit bytes."""
  declared = request.headers.get('content-length', '')
  if declared.isdigit() and int(declared) > limit:
    raise StudioError(413, engine_lib.too_many_bytes(what, int(declared), limit))
  body = bytearray()
  async for chunk in request.stream():
    body += chunk
    if len(body) > limit:
      raise StudioError(413, engine_lib.too_many_bytes(what, len(body), limit))
  return bytes(body)


def _fields(obj, allowed):
  unknown = sorted(set(obj) - set(allowed))
  if unknown:
    raise StudioError(400, f'Unknown field(s) {", ".join(map(repr, unknown))}.')
  return obj


def _disposition(filename):
  ascii_name = filename.encode('ascii', 'replace').decode().replace('?', '_').replace('"', '_')
  return f'attachment; filename="{ascii_name}"; filename*=UTF-8\'\'{urllib.parse.quote(filename)}'


def create_app(engine, *, allowed_hosts=None):
  """The studio's ASGI app over an Engine (engine.make_engine).

  Args:
    engine: a colorjax.studio.engine.Engine (its model, limits and photo store).
    allowed_hosts: Host header names served (None: any); a server on a loopback address passes
      LOOPBACK_HOSTS.

  Returns:
    A Starlette app; `app.state.engine` is the engine.
  """
  limits = engine.limits
  slots = _Slots(limits)
  static = {name: (STATIC / name).read_bytes() for name in _STATIC_TYPES}

  async def work(fn, *args):
    async with slots.get()[1]:
      return await run_in_threadpool(fn, *args)

  async def read_json(request, allowed=None):
    _check_csrf(request)
    body = await _read_body(request, limits.max_json_bytes, 'The request')
    try:
      obj = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting thousands of levels deep
      raise StudioError(400, 'The request body is not valid JSON.') from None
    if not isinstance(obj, dict):
      raise StudioError(400, 'The request body must be a JSON object.')
    return obj if allowed is None else _fields(obj, allowed)

  def photo_of(request):
    return engine.store.get(request.path_params['photo_id'])

  @_endpoint
  async def index(request):
    return Response(static['index.html'], media_type=_STATIC_TYPES['index.html'])

  @_endpoint
  async def static_file(request):
    name = request.path_params['name']
    if name not in static or name == 'index.html':
      raise StudioError(404, 'There is no such file.')
    return Response(static[name], media_type=_STATIC_TYPES[name])

  @_endpoint
  async def info(request):
    return JSONResponse(engine.info())

  @_endpoint
  async def list_photos(request):
    return JSONResponse({'photos': [p.describe() for p in engine.store.list()]})

  @_endpoint
  async def upload(request):
    _check_csrf(request)
    name = engine_lib.clean_name(request.query_params.get('name'))
    uploads, _ = slots.get()
    async with uploads:  # the others wait unread: memory holds at most `uploads` bodies
      data = await _read_body(request, limits.max_upload_bytes, name)
      photo = await work(engine.add_photo, data, name)
    return JSONResponse(
      photo.describe(), 201, background=BackgroundTask(work, engine.warm_join, photo)
    )

  @_endpoint
  async def photo_info(request):
    return JSONResponse(photo_of(request).describe())

  @_endpoint
  async def delete_photo(request):
    _check_csrf(request)
    photo = photo_of(request)
    engine.store.remove(photo.id)
    return JSONResponse({'deleted': photo.id})

  @_endpoint
  async def original(request):
    return Response(photo_of(request).original_jpeg, media_type='image/jpeg')

  @_endpoint
  async def preview(request):
    photo = photo_of(request)
    body = await read_json(request, ('hints', 'vividness'))
    hints = engine.parse_hints(photo, body.get('hints'))
    jpeg = await work(engine.preview, photo, hints, engine.vividness(body.get('vividness')))
    return Response(jpeg, media_type='image/jpeg')

  @_endpoint
  async def download(request):
    photo = photo_of(request)
    body = await read_json(request, ('hints', 'vividness', 'format'))
    hints = engine.parse_hints(photo, body.get('hints'))
    vividness = engine.vividness(body.get('vividness'))
    data, media_type, filename = await work(
      engine.download, photo, hints, vividness, body.get('format', 'png')
    )
    return Response(
      data, media_type=media_type, headers={'content-disposition': _disposition(filename)}
    )

  @_endpoint
  async def suggest(request):
    photo = photo_of(request)
    body = await read_json(request, ('x', 'y', 'hints'))
    if 'x' not in body or 'y' not in body:
      raise StudioError(400, "Give the point's fields 'x' and 'y'.")
    hints = engine.parse_hints(photo, body.get('hints'))
    colors = await work(engine.suggest, photo, body['x'], body['y'], hints)
    return JSONResponse({'colors': colors})

  @_endpoint
  async def check_hints(request):
    photo = photo_of(request)
    document = await read_json(request)
    return JSONResponse({'hints': await work(engine.check_hints, photo, document)})

  photo = '/api/photos/{photo_id}'
  routes = [
    Route('/', index),
    Route('/static/{name}', static_file),
    Route('/api/info', info),
    Route('/api/photos', list_photos, methods=['GET']),
    Route('/api/photos', upload, methods=['POST']),
    Route(photo, photo_info, methods=['GET']),
    Route(photo, delete_photo, methods=['DELETE']),
    Route(photo + '/original', original),
    Route(photo + '/preview', preview, methods=['POST']),
    Route(photo + '/download', download, methods=['POST']),
    Route(photo + '/suggest', suggest, methods=['POST']),
    Route(photo + '/hints', check_hints, methods=['POST']),
  ]
  app = Starlette(routes=routes)
  app.state.engine = engine
  app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
  return app
