"""Command line: image folder, skimage samples or TFDS dataset -> sharded colorjax records."""

import sys

from absl import app, flags

from colorjax import fileutil
from data_prep import builder

_INPUT_DIR = flags.DEFINE_string('input_dir', None, 'Folder read recursively, or "samples".')
_OUTPUT_DIR = flags.DEFINE_string(
  'output_dir', None, 'Where shards and manifest.json go.', required=True
)
_SPLIT = flags.DEFINE_string('split', 'train', 'Split name, e.g. train or val.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Side of the square records.')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', None, 'Default ceil(inputs / 1000).')
_WORKERS = flags.DEFINE_integer('workers', None, 'Worker processes (default: all cores).')
_RESIZE = flags.DEFINE_enum(
  'resize',
  'crop',
  ['crop', 'squash'],
  'crop: shorter side to image_size, center crop; squash: plain resize.',
)
_MIN_SIZE = flags.DEFINE_integer('min_size', 64, 'Skip images whose shorter side is smaller.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing split.')
_TFDS_NAME = flags.DEFINE_string('tfds_name', None, 'Read this TFDS dataset, e.g. coco/2017.')
_TFDS_DATA_DIR = flags.DEFINE_string('tfds_data_dir', None, 'TFDS data_dir.')
_SAMPLES = flags.DEFINE_bool('samples', False, 'Use the color photos in skimage.data.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  input_dir = 'samples' if _SAMPLES.value else _INPUT_DIR.value
  try:
    entry = builder.build_records(
      input_dir,
      _OUTPUT_DIR.value,
      _SPLIT.value,
      image_size=_IMAGE_SIZE.value,
      num_shards=_NUM_SHARDS.value,
      workers=_WORKERS.value,
      resize=_RESIZE.value,
      min_size=_MIN_SIZE.value,
      overwrite=_OVERWRITE.value,
      tfds_name=_TFDS_NAME.value,
      tfds_data_dir=_TFDS_DATA_DIR.value,
    )
  except (fileutil.LockedError, builder.OutputDirError) as e:
    # Another build owns the folder, or it cannot be written: nothing was built; say why in one
    # line (no traceback) and exit 2 so scripts can tell this from bad inputs (1).
    print(f'data_prep: {e}', file=sys.stderr)
    return 2
  except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as e:
    print(f'build_records: error: {e}', file=sys.stderr)
    return 1
  print(builder.summary(entry))
  return 0


def run(argv=None):
  """The CLI (`python -m data_prep.build_records`, `colorjax prep`)."""
  app.run(main, argv=argv)


if __name__ == '__main__':
  run()
