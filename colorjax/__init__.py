"""colorjax: automatic image colorization with JAX and Flax."""

from colorjax.lab import lab_to_rgb, rgb_to_lab
from colorjax.records import decode_example, encode_example

__all__ = ['rgb_to_lab', 'lab_to_rgb', 'encode_example', 'decode_example']
__version__ = '0.1.0'
