"""A small hint-taking model trained for real (seconds) on scikit-image's photos, saved as a
training workdir, for the tests of hints, the hint curve and suggested colors."""

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from image_fixtures import photo_codes

from colorjax import augment, hints, models, quantize, train_step

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'retina')


def photos(size):
  """{'L', 'ab', 'index'} codes of the photos squashed to size x size."""
  return photo_codes(size, PHOTOS)


def train_hint_model(path, loss='classification', size=64, steps=200, name='unet', width=16):
  """Trains a hint-taking model on the photos (no augmentation, dense hints) and writes a
  workdir (model.json + one checkpoint) that colorjax.load reads."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  weights = np.ones(quantize.NUM_BINS, np.float32) if loss == 'classification' else None
  config = models.ModelConfig(name=name, loss=loss, image_size=size, width=width, hints=True)
  model = models.create_model(config)
  tx = train_step.make_optimizer(2e-3)
  hint_config = hints.HintConfig(continue_prob=0.95)
  step, _, _ = train_step.bind(
    model, tx, config, augment.AugmentConfig.none(), weights, hint_config
  )
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, size))(jax.random.key(0))
  step = jax.jit(step)
  batch = photos(size)
  for i in range(steps):
    state, _ = step(state, batch, jax.random.key(i))
  (path / 'model.json').write_text(config.to_json())
  host = jax.device_get({'step': state.step, 'params': state.params, 'opt_state': state.opt_state})
  with ocp.CheckpointManager(path / 'checkpoints') as mngr:
    mngr.save(
      int(host['step']),
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(host), data=ocp.args.JsonSave({'position': 0})
      ),
    )
  return path
