"""colorjax: automatic image colorization with JAX and Flax.

The names below are imported on first use (PEP 562), so `import colorjax.input_pipeline` (or
constants, records, lab), as Grain's and data_prep's worker processes do, loads neither Flax nor
Orbax.
"""

import importlib

_EXPORTS = {
  'Colorizer': 'inference',
  'colorize': 'inference',
  'colorize_image': 'inference',
  'colorize_images': 'inference',
  'load': 'inference',
  'with_decoding': 'decoding',
  'suggest_colors': 'suggest',
  'lab_to_rgb': 'lab',
  'rgb_to_lab': 'lab',
  'ModelConfig': 'models',
  'create_model': 'models',
  'decode_example': 'records',
  'encode_example': 'records',
}

__all__ = sorted([*_EXPORTS, 'cpu_runtime'])
__version__ = '0.1.0'


def __getattr__(name):
  if name == 'cpu_runtime':  # the module, callable as its cpu_runtime function
    return importlib.import_module('colorjax.cpu_runtime')
  if name in _EXPORTS:
    value = getattr(importlib.import_module(f'colorjax.{_EXPORTS[name]}'), name)
    globals()[name] = value  # later lookups skip this function
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(__all__))
