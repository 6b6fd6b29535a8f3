"""Serves the colorization studio: python -m launch.serve [--checkpoint=DIR] [--port=8765].

Opens a local web page (printed) where photos are dropped, colorized, given color hints and
downloaded at full size. Binds to 127.0.0.1 (this machine only) unless --host says otherwise.
Photos stay in memory and nothing is kept on disk (the ONNX export of --backend=auto goes to a
private temporary folder, removed once the runtime has compiled it). Needs the [app] extra.
"""

import ipaddress
import logging
import socket

from absl import flags

import launch
from colorjax import colorize_files

_CHECKPOINT = flags.DEFINE_string(
  'checkpoint',
  None,
  "a training workdir or exported params (default: the shipped model 'pretrained')",
)
_HOST = flags.DEFINE_string(
  'host', '127.0.0.1', 'address to listen on; 127.0.0.1: this machine only, 0.0.0.0: every network'
)
_PORT = flags.DEFINE_integer('port', 8765, 'port to listen on (0: any free one)', lower_bound=0,
                             upper_bound=65535)  # fmt: skip
_BACKEND = flags.DEFINE_enum(
  'backend',
  'auto',
  colorize_files.BACKENDS,
  'what runs the network: jax, or an ONNX CPU runtime (the [cpu] extra); auto: openvino on a '
  'CPU-only machine with the [cpu] extra, else jax',
)
_PRECISION = flags.DEFINE_enum(
  'precision', 'auto', colorize_files.PRECISIONS, 'as launch.colorize --precision'
)


def _is_loopback(host):
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def _listen(host, port):
  """A listening socket (an OSError such as 'address already in use' surfaces here)."""
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise OSError(f'cannot listen on {host}:{port}: {e.strerror or e}') from None
  sock.listen(128)
  return sock


def main(argv):
  del argv  # checked by launch.run
  import uvicorn  # pylint: disable=g-import-not-at-top  (the [app] extra)

  from colorjax import colorize_files, studio  # pylint: disable=g-import-not-at-top

  host = _HOST.value
  sock = _listen(host, _PORT.value)  # before the model loads: a busy port fails at once
  checkpoint = _CHECKPOINT.value or 'pretrained'
  shipped = '' if _CHECKPOINT.value else ' (the shipped model; --checkpoint=DIR for another)'
  print(f'colorjax studio: preparing {checkpoint}{shipped} ...', flush=True)
  if not flags.FLAGS['verbosity'].present:
    logging.getLogger('onnx_ir').setLevel(logging.ERROR)  # the export's per-node warnings
  colorizer, bundled_onnx = colorize_files.load_checkpoint(checkpoint)
  if colorizer.params is None:
    raise ValueError('the studio needs a training workdir or an export, not a bare .onnx file')
  engine = studio.make_engine(colorizer, _BACKEND.value, _PRECISION.value, None, bundled_onnx)
  engine.warm_up()
  loopback = _is_loopback(host)
  app = studio.create_app(
    engine, allowed_hosts=studio.LOOPBACK_HOSTS + (host,) if loopback else None
  )
  port = sock.getsockname()[1]
  shown = '127.0.0.1' if host in ('0.0.0.0', '') else f'[{host}]' if ':' in host else host
  where = '' if loopback else f' (listening on {host}: other machines can reach it)'
  print(
    f'colorjax studio: http://{shown}:{port}/{where}  model: {checkpoint}{shipped}, '
    f'run by {engine.backend}; Ctrl+C stops it',
    flush=True,
  )
  server = uvicorn.Server(uvicorn.Config(app, log_level='warning', lifespan='off'))
  server.run(sockets=[sock])
  return 0


def run(argv=None):
  launch.run(main, 'launch.serve', argv=argv)


if __name__ == '__main__':
  run()
