"""colorjax: automatic image colorization with JAX and Flax."""

from colorjax.inference import Colorizer, colorize, colorize_image, colorize_images, load
from colorjax.lab import lab_to_rgb, rgb_to_lab
from colorjax.models import ModelConfig, create_model
from colorjax.records import decode_example, encode_example

__all__ = [
  'Colorizer',
  'ModelConfig',
  'colorize',
  'colorize_image',
  'colorize_images',
  'create_model',
  'decode_example',
  'encode_example',
  'lab_to_rgb',
  'load',
  'rgb_to_lab',
]
__version__ = '0.1.0'
