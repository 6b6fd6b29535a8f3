"""colorjax studio: a local web page to colorize photos, set color hints and download results.

`create_app(make_engine(colorjax.load(path)))` is the ASGI app that `python -m launch.serve`
runs; it needs the `[app]` extra (Starlette; uvicorn to serve it).
"""

from colorjax.studio.app import LOOPBACK_HOSTS, create_app
from colorjax.studio.engine import Engine, Limits, StudioError, make_engine

__all__ = ['LOOPBACK_HOSTS', 'Engine', 'Limits', 'StudioError', 'create_app', 'make_engine']
