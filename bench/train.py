"""Training images/s of the seed model and the shipped model's network (float32, bfloat16; 128
and 256 px) and of the loader.

python3 -m bench.train                       # batch 8, as in the report's comparison
python3 -m bench.train --sizes=128 --steps=3 # quicker (--batch_size: the loader's batch)
"""

import time

import jax
import numpy as np
from absl import app, flags

from bench import pipeline, report
from colorjax import augment, convs, host_memory, models, parallel, quantize, train_step

FLAGS = flags.FLAGS
flags.DEFINE_list('sizes', ['128', '256'], 'Image sizes to time.')
flags.DEFINE_list(
  'models', ['seed'], "'seed' (the report's network) and/or 'effnet_hints' (the shipped recipe)"
)
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Computation dtypes to time.')
flags.DEFINE_integer('train_batch', 8, 'Global batch size of the timed train steps.')
flags.DEFINE_integer('steps', 5, 'Timed train steps per row (after one compile step).')
flags.DEFINE_string('parallel', 'single', 'parallel mode of the train step (single/sharded/pmap).')
flags.DEFINE_integer('loader_seconds', 5, 'Seconds to time the input pipeline.')
flags.DEFINE_bool(
  'unbanded',
  True,
  'Also time float32 with the kernel gradient unbanded (convs.kernel_grad band 0).',
)

# Published numbers for scale (256 px): this project's brief; the report.
REFERENCES = (
  '~2 img/s JAX, ~5.4 PyTorch, ~6.4 Keras on a 2-core CPU (batch 8); '
  'the report: 40 img/s on an M1 Pro, 5.7 on an RTX 3070.'
)


# The shipped model's network and loss (launch/configs/effnet_hints.flags), with uniform
# rebalancing weights (their values do not change the step's cost).
EFFNET_HINTS = dict(name='effnet_unet', loss='classification', hints=True)


def train_rate(size, dtype, batch_size, steps, mode, band=convs.KERNEL_GRAD_BAND, name='seed'):
  """Images/s of the jitted train step (dequantize, augment, [sample hints,] forward, backward,
  Adam); band: the kernel gradient's band (conv='matmul', the CPU default)."""
  fields = EFFNET_HINTS if name == 'effnet_hints' else {}
  config = models.ModelConfig(image_size=size, dtype=dtype, **fields)
  model = models.create_model(config, kernel_grad_band=band)
  tx = train_step.make_optimizer(1e-3)
  weights = np.ones(quantize.NUM_BINS, np.float32) if config.loss == 'classification' else None
  step_fn, _, _ = train_step.bind(model, tx, config, augment.AugmentConfig(), weights)
  runner = parallel.make_runner(mode, step_fn, batch_size)
  state = jax.jit(lambda r: train_step.create_train_state(r, model, tx, size))(jax.random.key(0))
  state = runner.put_state(state)
  rs = np.random.RandomState(0)
  batch = runner.put_batch(
    {
      'L': rs.randint(0, 256, (batch_size, size, size, 1)).astype(np.uint8),
      'ab': rs.randint(-80, 80, (batch_size, size, size, 2)).astype(np.int8),
      'index': parallel.global_example_index(batch_size),
    }
  )
  state, metrics = runner.step(state, batch, jax.random.key(0))  # compile
  float(metrics['loss'])
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = runner.step(state, batch, jax.random.key(i))
  loss = float(metrics['loss'])
  rate = steps * batch_size / (time.perf_counter() - start)
  return rate, loss


def main(argv):
  del argv
  host_memory.retain_freed_memory()  # as `python -m launch.train` runs
  rows = []
  unknown = set(FLAGS.models) - {'seed', 'effnet_hints'}
  if unknown:
    raise app.UsageError(f'unknown --models {sorted(unknown)}')
  for name in FLAGS.models:
    for size in map(int, FLAGS.sizes):
      base = None
      variants = [(d, convs.KERNEL_GRAD_BAND) for d in FLAGS.dtypes]
      variants += [('float32', 0)] if FLAGS.unbanded and name == 'seed' else []
      for dtype, band in variants:
        rate, loss = train_rate(
          size, dtype, FLAGS.train_batch, FLAGS.steps, FLAGS.parallel, band, name
        )
        base = base or rate
        rows.append(
          [
            f'train step, {"seed net" if name == "seed" else "effnet_unet with hints"}, {size} px',
            dtype + ('' if band else ', kernel gradient unbanded'),
            FLAGS.train_batch,
            rate,
            f'{rate / base:.2f}x',
            f'{loss:.4f}',
          ]
        )
        print(rows[-1])
  data_dir = pipeline.synthesize(FLAGS.work_dir, FLAGS.jpeg_dir, FLAGS.num_images, 'val')
  loader = pipeline.loader_rate(data_dir, 'val', FLAGS.batch_size, 0, FLAGS.loader_seconds)
  rows.append(
    [
      'input pipeline alone (train_dataset, 0 workers), 256 px',
      'uint8/int8',
      FLAGS.batch_size,
      loader,
      '',
      '',
    ]
  )
  body = (
    report.table(['what', 'dtype', 'batch', 'images/s', 'vs float32', 'last loss'], rows)
    + f'\n\nTrain steps include on-device dequantization and augmentation; {FLAGS.steps} '
    f'timed steps after one compile step, parallel={FLAGS.parallel}. On a CPU, 3x3 convolutions '
    "take conv='matmul' (models.FastConv3x3, colorjax.convs): the kernel gradient of "
    "stride-1 layers is Winograd's (convs.winograd_kernel_grad); that of the others "
    f'(convs.kernel_grad) scans bands of {convs.KERNEL_GRAD_BAND} output positions, and the '
    'unbanded row (band 0) cuts each tap from the whole batch instead. For scale: ' + REFERENCES
  )
  report.write_section(
    'train',
    'python3 -m bench.train '
    + ' '.join(
      f'--{k}={",".join(v) if isinstance(v := FLAGS[k].value, list) else v}'
      for k in ('models', 'sizes', 'dtypes', 'train_batch', 'steps', 'parallel', 'batch_size')
      if FLAGS[k].present
    ),
    body,
  )


if __name__ == '__main__':
  app.run(main)
