"""Shared test setup: absl flags parsed (Grain workers need it) and small synthetic inputs."""

import os

# Multi-device code is tested on 4 fake CPU devices; set before JAX is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()
