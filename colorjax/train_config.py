"""TrainConfig: every training setting, one field per launch.train flag (its help in metadata)."""

import dataclasses

from colorjax import augment, constants, hints, models, parallel, quantize, train_step

ENCODER_INITS = ('imagenet', 'none')


def _field(default, help):  # pylint: disable=redefined-builtin
  return dataclasses.field(default=default, metadata={'help': help})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A training run; launch/train.py defines one absl flag per field with the same name."""

  # Data.
  data_dir: str = _field(
    '', 'data_prep output folder holding train-* and val-* array_record shards'
  )
  sample_data: bool = _field(
    False,
    'launch.train first builds records of the bundled skimage sample photos into data_dir if it '
    'has none',
  )
  worker_count: int = _field(0, 'Grain worker processes decoding records (0: in the main process)')
  # Model and loss.
  model: str = _field('seed', f'network architecture, one of {models.MODEL_NAMES}')
  loss: str = _field('mse', f'training loss, one of {models.LOSSES}')
  dtype: str = _field('float32', 'computation dtype (float32 or bfloat16); params stay float32')
  width: int = _field(32, "'unet' only: channels at full resolution (a multiple of 8)")
  head_stride: int = _field(2, "'classification' only: the logits' stride (1 or 2)")
  temperature: float = _field(
    quantize.TEMPERATURE,
    "'classification' only: annealed-mean decoding temperature (lower: closer to the most "
    'likely color)',
  )
  prior_correction: float = _field(
    0.0,
    "'classification' only: decoding adds this times log(rebalancing weight) to each bin's "
    'logit (post-hoc logit adjustment: > 0 toward rarer, more saturated colors, < 0 toward '
    'common ones, -1 undoes the rebalancing); 0: off',
  )
  chroma_gain: float = _field(
    1.0,
    "'classification' only: decoding last stretches each image's ab around its mean ab by this "
    'factor (more colorful at the same tint); 1: off',
  )
  rebalance_lambda: float = _field(
    quantize.LAMBDA,
    "'classification' only: w = 1 / ((1 - lam) * prior + lam / Q); 1 turns rebalancing off",
  )
  calibrate: bool = _field(
    False,
    "'classification' only: after training, pick temperature, prior_correction and chroma_gain "
    'on the val split as launch.calibrate does and write them into model.json (the right '
    'decoding moves with training length)',
  )
  calibrate_images: int = _field(256, 'val images the calibration scores (0: all)')
  calibrate_max_tint: float = _field(3.0, 'the calibration keeps decodings with a tint <= this')
  conv: str = _field(
    'auto',
    f'3x3 convolution gradients, one of {models.CONV_IMPLS} (same params and values; matmul: '
    'kernel gradients as matmuls, ~1.6x faster training on a CPU; auto: matmul on a CPU, xla '
    'elsewhere)',
  )
  image_size: int = _field(
    constants.IMAGE_SIZE, 'side of the square training images (records must match)'
  )
  init_from: str = _field(
    '',
    "start from these params (fresh optimizer, step 0): 'pretrained' (the shipped model), a "
    'training workdir or an exported params folder, of the same architecture; empty: from '
    "scratch (and --encoder_init's encoder)",
  )
  # The pretrained encoder ('effnet_unet').
  encoder_init: str = _field(
    'imagenet',
    "'effnet_unet' only: the encoder's initial params: 'imagenet' (EfficientNet-Lite0's ImageNet "
    "weights) or 'none' (random, the same architecture for comparison)",
  )
  encoder_lr_scale: float = _field(
    1.0, "'effnet_unet' only: the encoder's learning rate relative to the decoder's"
  )
  freeze_encoder_steps: int = _field(
    0, "'effnet_unet' only: the encoder does not learn during the first this many steps"
  )
  # User color hints (colorjax.hints; ideepcolor's training protocol by default).
  hints: bool = _field(
    False,
    'the network also takes color hints (hint ab + mask channels), simulated during training; '
    'with none it is the automatic colorizer',
  )
  hint_continue_prob: float = _field(
    7 / 8, 'hints per image: keep adding points while a uniform draw is below this (geometric)'
  )
  hint_max_points: int = _field(32, 'at most this many hints per training image')
  hint_min_patch: int = _field(1, 'smallest side of a training hint patch, pixels')
  hint_max_patch: int = _field(9, 'largest side of a training hint patch, pixels')
  hint_sigma_scale: float = _field(
    0.25, 'hint positions: Gaussian around the center, sigma = (size - patch + 1) * this'
  )
  # Schedule.
  batch_size: int = _field(50, 'global batch size, split over all devices and processes')
  num_train_steps: int = _field(0, 'optimizer steps; 0 means epochs * steps_per_epoch')
  epochs: int = _field(10, "the report's epochs (used when num_train_steps is 0)")
  steps_per_epoch: int = _field(2000, "the report's steps per epoch (used with epochs)")
  # Adam.
  learning_rate: float = _field(1e-3, 'Adam peak learning rate')
  b1: float = _field(0.9, 'Adam first-moment decay')
  b2: float = _field(0.999, 'Adam second-moment decay')
  eps: float = _field(train_step.ADAM_EPS, 'Adam epsilon (the Keras default the report used)')
  warmup_steps: int = _field(0, 'linear learning-rate warmup steps from 0')
  decay: str = _field('none', f'learning-rate decay after warmup, one of {train_step.DECAYS}')
  grad_clip: float = _field(0.0, 'clip gradients to this global norm (0: no clipping)')
  # Augmentation (colorjax.augment.AugmentConfig), applied on device per example.
  rotation_deg: float = _field(20.0, 'random rotation range in degrees, +-rotation_deg')
  zoom: float = _field(0.2, 'random zoom range: magnification in [1 - zoom, 1 + zoom]')
  flip: bool = _field(True, 'random left-right flips')
  fill: str = _field('nearest', f'fill outside the image, one of {augment.FILL_MODES}')
  # Parallelism.
  parallel: str = _field('single', f'data parallelism, one of {parallel.PARALLEL_MODES}')
  coordinator_address: str = _field('', 'multi-process: host:port of process 0')
  num_processes: int = _field(1, 'multi-process: process count (0: from the cluster environment)')
  process_id: int = _field(0, 'multi-process: index of this process')
  # Randomness, logging, evaluation, checkpoints.
  seed: int = _field(0, 'seed for the init, the data order and the augmentation')
  log_every: int = _field(50, 'write training metrics every this many steps')
  eval_every: int = _field(
    1000, 'validation loss and sample grid every this many steps (and at end)'
  )
  eval_batches: int = _field(0, 'validation batches per eval (0: the whole val split)')
  num_samples: int = _field(4, 'validation images in the sample grid')
  checkpoint_every: int = _field(1000, 'save a checkpoint every this many steps (and at the end)')
  keep_checkpoints: int = _field(3, 'keep the last this many checkpoints')
  async_checkpoints: bool = _field(True, 'write checkpoints in a background thread')

  def __post_init__(self):
    self.model_config()  # validates the model fields
    if not 0 <= self.rebalance_lambda <= 1:
      raise ValueError(f'rebalance_lambda must be in [0, 1], got {self.rebalance_lambda}')
    self.augment_config()  # validates the augmentation fields
    self.hint_config()  # validates the hint fields
    if self.encoder_init not in ENCODER_INITS:
      raise ValueError(f'encoder_init must be one of {ENCODER_INITS}, got {self.encoder_init!r}')
    if self.parallel not in parallel.PARALLEL_MODES:
      raise ValueError(f'parallel must be one of {parallel.PARALLEL_MODES}, got {self.parallel!r}')
    if self.decay not in train_step.DECAYS:
      raise ValueError(f'decay must be one of {train_step.DECAYS}, got {self.decay!r}')
    positive = (
      'image_size',
      'batch_size',
      'learning_rate',
      'log_every',
      'checkpoint_every',
      'keep_checkpoints',
      'eval_every',
    )
    for name in positive:
      if getattr(self, name) <= 0:
        raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
    for name in (
      'num_train_steps',
      'epochs',
      'steps_per_epoch',
      'warmup_steps',
      'grad_clip',
      'eval_batches',
      'num_samples',
      'worker_count',
      'freeze_encoder_steps',
      'encoder_lr_scale',
    ):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    if self.total_steps <= 0:
      raise ValueError('set num_train_steps, or epochs and steps_per_epoch, to a positive number')
    if self.sample_data and not self.data_dir:
      raise ValueError('sample_data needs a data_dir to write the records to')

  @property
  def total_steps(self):
    return self.num_train_steps or self.epochs * self.steps_per_epoch

  def model_config(self):
    return models.ModelConfig(
      name=self.model,
      loss=self.loss,
      image_size=self.image_size,
      dtype=self.dtype,
      width=self.width,
      head_stride=self.head_stride,
      temperature=self.temperature,
      prior_correction=self.prior_correction,
      chroma_gain=self.chroma_gain,
      conv=self.conv,
      hints=self.hints,
    )

  def hint_config(self):
    return hints.HintConfig(
      continue_prob=self.hint_continue_prob,
      max_points=self.hint_max_points,
      min_patch=self.hint_min_patch,
      max_patch=self.hint_max_patch,
      sigma_scale=self.hint_sigma_scale,
    )

  def augment_config(self):
    return augment.AugmentConfig(
      rotation_deg=self.rotation_deg, zoom=self.zoom, flip=self.flip, fill=self.fill
    )

  def optimizer(self):
    return train_step.make_optimizer(
      self.learning_rate,
      b1=self.b1,
      b2=self.b2,
      eps=self.eps,
      num_steps=self.total_steps,
      warmup_steps=self.warmup_steps,
      decay=self.decay,
      grad_clip=self.grad_clip,
      encoder_lr_scale=self.encoder_lr_scale,
      freeze_encoder_steps=self.freeze_encoder_steps,
    )
