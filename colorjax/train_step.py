"""The pure training pieces: TrainState, the Adam optimizer, train_step and eval_step."""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from colorjax import augment, decoding, hints, losses

DECAYS = ('none', 'cosine', 'linear')
ADAM_EPS = 1e-7  # the Keras default the report trained with


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training; params alone define the model (no batch stats)."""

  step: jax.Array  # int32 scalar: the number of optimizer updates applied
  params: Any  # the dict returned by model.init, i.e. {'params': {...}}
  opt_state: Any

  def to_dict(self):
    """The checkpointed layout of docs' contract: {'step', 'params', 'opt_state'}."""
    return {'step': self.step, 'params': self.params, 'opt_state': self.opt_state}

  @classmethod
  def from_dict(cls, d):
    return cls(step=d['step'], params=d['params'], opt_state=d['opt_state'])


def learning_rate_schedule(learning_rate, num_steps, warmup_steps=0, decay='none'):
  """Linear warmup from 0 over warmup_steps, then constant, cosine or linear decay to 0."""
  if decay not in DECAYS:
    raise ValueError(f'decay must be one of {DECAYS}, got {decay!r}')
  if warmup_steps < 0 or (decay != 'none' and num_steps <= warmup_steps):
    raise ValueError(f'need 0 <= warmup_steps < num_steps, got {warmup_steps} and {num_steps}')
  rest = max(num_steps - warmup_steps, 1)
  if decay == 'cosine':
    after = optax.cosine_decay_schedule(learning_rate, rest)
  elif decay == 'linear':
    after = optax.linear_schedule(learning_rate, 0.0, rest)
  else:
    after = optax.constant_schedule(learning_rate)
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
  learning_rate,
  *,
  b1=0.9,
  b2=0.999,
  eps=ADAM_EPS,
  num_steps=1,
  warmup_steps=0,
  decay='none',
  grad_clip=0.0,
  encoder_lr_scale=1.0,
  freeze_encoder_steps=0,
):
  """Adam with an optional schedule and global-norm gradient clipping (grad_clip > 0).

  A pretrained encoder (the params under 'encoder') can learn at encoder_lr_scale times the
  learning rate, and not at all for its first freeze_encoder_steps steps; with the defaults
  every param takes the same Adam.
  """
  if learning_rate <= 0:
    raise ValueError(f'learning_rate must be > 0, got {learning_rate}')
  if grad_clip < 0:
    raise ValueError(f'grad_clip must be >= 0 (0: off), got {grad_clip}')
  if encoder_lr_scale < 0 or freeze_encoder_steps < 0:
    raise ValueError('encoder_lr_scale and freeze_encoder_steps must be >= 0')
  schedule = learning_rate_schedule(learning_rate, num_steps, warmup_steps, decay)
  if warmup_steps == 0 and decay == 'none':
    schedule = learning_rate
  # Numeric hyperparameters live in the optimizer state (as arrays), so runs differing only in
  # them share one compiled step (and the persistent compilation cache). On resume the
  # checkpoint's values are kept.
  adam = lambda lr: optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=b1, b2=b2, eps=eps)
  if encoder_lr_scale == 1 and freeze_encoder_steps == 0:
    tx = adam(schedule)
  else:
    at = schedule if callable(schedule) else (lambda step: schedule)

    def encoder_schedule(step):
      return jnp.where(step < freeze_encoder_steps, 0.0, encoder_lr_scale * at(step))

    tx = optax.multi_transform(
      {'encoder': adam(encoder_schedule), 'rest': adam(schedule)}, encoder_labels
    )
  return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip else tx


def encoder_labels(params):
  """'encoder' for the params under an 'encoder' module, 'rest' for the others."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: (
      'encoder' if any(getattr(k, 'key', None) == 'encoder' for k in path) else 'rest'
    ),
    params,
  )


def create_train_state(rng, model, tx, image_size):
  """Initializes params (float32) and the optimizer state for square images of image_size."""
  L = jnp.zeros((1, image_size, image_size, 1), jnp.float32)
  params = model.init(rng, L)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def loss_fn(loss, output, ab_BxHxWx2, weights_Q=None):
  """(per-example loss (B,), per-example weight (B,)); a batch's loss is sum(l * w) / sum(w).

  'mse': the report's MSE between the output and ab / AB_SCALE, every weight 1.
  'classification': losses.classification_loss (weights_Q: its rebalancing weights), weight 0
  on nearly gray examples, so sum(l * w) / sum(w) is exactly its batch loss.
  """
  if loss == 'mse':
    per = losses.mse_per_example(output, ab_BxHxWx2)
    return per, jnp.ones_like(per)
  if loss == 'classification':
    if weights_Q is None:
      raise ValueError('the classification loss needs weights_Q (see trainer.class_weights)')
    _, aux = losses.classification_loss(output, ab_BxHxWx2, weights_Q)
    return aux['example_loss'], aux['example_kept']
  raise ValueError(f'unknown loss {loss!r}')


# Folded into the step's key for the hints, so they are drawn apart from the augmentation.
_HINT_STREAM = 0x48494E54


def sample_example_hints(rng, index_B, ab_BxHxWx2, config):
  """hints.sample_hints with one key per example (fold_in(rng, global example index)), drawn on
  the augmented ab, so that every parallel layout draws the same hints."""
  rng = jax.random.fold_in(rng, _HINT_STREAM)

  def one(i, ab):
    hint_ab, mask = hints.sample_hints(jax.random.fold_in(rng, i), ab[None], config)
    return hint_ab[0], mask[0]

  return jax.vmap(one)(index_B, ab_BxHxWx2)


def augment_examples(rng, index_B, L_BxHxWx1, ab_BxHxWx2, config):
  """augment.augment_batch with one key per example: fold_in(rng, global example index).

  The transforms depend only on the example's position in the global batch, so one device, a
  batch split over devices, and a batch split over processes draw the same transforms.
  """
  if config.is_identity:
    return L_BxHxWx1, ab_BxHxWx2

  def one(i, L, ab):
    L, ab = augment.augment_batch(jax.random.fold_in(rng, i), L[None], ab[None], config)
    return L[0], ab[0]

  return jax.vmap(one)(index_B, L_BxHxWx1, ab_BxHxWx2)


def train_step(
  state,
  batch,
  rng,
  *,
  model,
  tx,
  model_config,
  augment_config,
  weights_Q=None,
  hint_config=None,
  axis_name=None,
):
  """One Adam update on a batch of 8-bit codes; rng is the step's key (fold_in(seed, step)).

  Args:
    state: the TrainState.
    batch: {'L': uint8 (B,H,W,1), 'ab': int8 (B,H,W,2), 'index': int32 (B,)}, index being each
      example's position in the global batch (it picks the example's augmentation).
    rng: a PRNG key for this step.
    model, tx, model_config, augment_config, weights_Q, hint_config: static; bind them with
      bind(). A hint-taking model sees hints sampled from the augmented ab (hint_config).
    axis_name: the pmap axis to average gradients and metrics over (None outside pmap).

  Returns:
    (new state, {'loss', 'grad_norm'}), the loss being the batch mean on the report's scale.
  """
  L, ab = augment.prepare_batch(batch)
  L, ab = augment_examples(rng, batch['index'], L, ab, augment_config)
  given = None
  if model_config.hints:
    given = sample_example_hints(rng, batch['index'], ab, hint_config or hints.HintConfig())

  def mean_loss(params):
    per, weight = loss_fn(model_config.loss, model.apply(params, L, given), ab, weights_Q)
    count = jnp.sum(weight)
    if axis_name is not None:  # normalize by the global count: the pmean below is then exact
      count = jax.lax.psum(count, axis_name) / jax.lax.psum(1, axis_name)
    return jnp.sum(per * weight) / jnp.maximum(count, 1e-6)

  loss, grads = jax.value_and_grad(mean_loss)(state.params)
  if axis_name is not None:
    loss, grads = jax.lax.pmean((loss, grads), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads)}


def eval_step(params, batch, *, model, model_config, weights_Q=None):
  """{'loss_sum', 'count'} over a batch of codes (no augmentation, no hints), for an exact
  dataset mean.

  An optional boolean batch['mask'] (B,) leaves out padding examples.
  """
  L, ab = augment.prepare_batch(batch)
  per, weight = loss_fn(model_config.loss, model.apply(params, L), ab, weights_Q)
  weight = weight * batch.get('mask', jnp.ones(per.shape, bool)).astype(jnp.float32)
  return {'loss_sum': jnp.sum(per * weight), 'count': jnp.sum(weight)}


def predict_step(params, L_BxHxWx1, *, model, model_config):
  """Float L in [0, 100] -> predicted ab in Lab units, with no hints (for the sample grids)."""
  return decoding.decode(model_config, model.apply(params, L_BxHxWx1))


def bind(model, tx, model_config, augment_config, weights_Q=None, hint_config=None):
  """train_step, eval_step and predict_step with their static settings bound (not yet jitted)."""
  step = functools.partial(
    train_step,
    model=model,
    tx=tx,
    model_config=model_config,
    augment_config=augment_config,
    weights_Q=weights_Q,
    hint_config=hint_config,
  )
  evaluate = functools.partial(
    eval_step, model=model, model_config=model_config, weights_Q=weights_Q
  )
  predict = functools.partial(predict_step, model=model, model_config=model_config)
  return step, evaluate, predict
