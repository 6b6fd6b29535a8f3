"""Where images come from: a folder tree, skimage's sample photos, or a TFDS array_record set."""

import hashlib
import os

from PIL import Image

# scikit-image's color samples (loaded without a download); 'cat' is chelsea again. The val split
# of the samples holds VAL_SAMPLES, every other split the rest.
SAMPLE_LOADERS = {
  'astronaut': 'astronaut',
  'chelsea': 'chelsea',
  'coffee': 'coffee',
  'colorwheel': 'colorwheel',
  'hubble_deep_field': 'hubble_deep_field',
  'immunohistochemistry': 'immunohistochemistry',
  'logo': 'logo',
  'motorcycle_left': 'stereo_motorcycle',
  'retina': 'retina',
  'rocket': 'rocket',
}
VAL_SAMPLES = ('chelsea', 'rocket')


def _image_extensions():
  Image.init()
  return frozenset(ext.lower() for ext in Image.registered_extensions())


class FolderSource:
  """Every file with an image extension under root (recursive), sorted by relative path.

  Hidden files and folders ('.' names) are left out. Symlinked folders are not followed (a link
  to a parent would loop, and a link elsewhere would pull in photos from outside root) but are
  listed in ignored_symlinked_folders; folders that cannot be listed (e.g. permission denied)
  are listed in unreadable_folders ('.' for root itself). Symlinked files are read.
  """

  def __init__(self, root):
    self.root = os.path.abspath(root)
    if not os.path.isdir(self.root):
      raise FileNotFoundError(f'input_dir {root!r} is not a directory')
    exts = _image_extensions()
    ids, self.ignored = [], 0
    self.ignored_symlinked_folders, self.unreadable_folders = [], []

    def rel(path):
      return os.path.relpath(path, self.root).replace(os.sep, '/')

    def unreadable(error):
      self.unreadable_folders.append(rel(error.filename or self.root))

    for dirpath, dirnames, filenames in os.walk(self.root, onerror=unreadable):
      dirnames[:] = [d for d in dirnames if not d.startswith('.')]
      links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
      self.ignored_symlinked_folders += [rel(os.path.join(dirpath, d)) for d in links]
      for name in filenames:
        if name.startswith('.'):
          continue
        if os.path.splitext(name)[1].lower() in exts:
          ids.append(os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, '/'))
        else:
          self.ignored += 1
    self.ids = sorted(ids)
    self.ignored_symlinked_folders.sort()
    self.unreadable_folders.sort()
    self.description = self.root

  def __len__(self):
    return len(self.ids)

  def fingerprint(self):
    return hashlib.sha256('\n'.join(self.ids).encode()).hexdigest()[:16]

  def read(self, i):
    """-> (id, payload for images.make_record)."""
    return self.ids[i], os.path.join(self.root, self.ids[i])


class SampleSource:
  """scikit-image's color sample photos; ids 'samples/NAME'."""

  def __init__(self, split):
    names = sorted(SAMPLE_LOADERS)
    self.names = [n for n in names if (n in VAL_SAMPLES) == (split == 'val')]
    self.ids = [f'samples/{n}' for n in self.names]
    self.ignored = 0
    self.description = 'samples (skimage.data)'

  def __len__(self):
    return len(self.names)

  def fingerprint(self):
    return hashlib.sha256('\n'.join(self.ids).encode()).hexdigest()[:16]

  def read(self, i):
    import skimage.data  # pylint: disable=g-import-not-at-top

    image = getattr(skimage.data, SAMPLE_LOADERS[self.names[i]])()
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
      image = image[0]
    return self.ids[i], image


class TfdsSource:
  """A TFDS dataset prepared as array_record (e.g. coco/2017), read without TensorFlow.

  Images come as their encoded bytes (SkipDecoding) so EXIF orientation and JPEG draft decoding
  apply as for files; ids are 'image/filename' when the dataset has it, else NAME/SPLIT/INDEX.
  """

  def __init__(self, name, split, data_dir=None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self.name, self.data_dir, self._ds, self._pid = name, data_dir, None, None
    try:
      splits = tfds.builder(name, data_dir=data_dir).info.splits
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'cannot open TFDS {name!r} (data_dir={data_dir!r}): {e}') from e
    self.split = 'validation' if split == 'val' and 'val' not in splits else split
    if self.split not in splits:
      raise ValueError(f'TFDS {name!r} has no split {split!r}; it has {list(splits)}')
    self._length = len(self._source())
    self.ignored = 0
    self.description = f'tfds:{name}[{self.split}]'

  def _source(self):
    if self._ds is None or self._pid != os.getpid():  # a forked worker opens its own
      self._pid = os.getpid()
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

      try:
        self._ds = tfds.data_source(
          self.name,
          split=self.split,
          data_dir=self.data_dir,
          decoders={'image': tfds.decode.SkipDecoding()},
        )
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(
          f'cannot open TFDS {self.name!r} split {self.split!r} (data_dir={self.data_dir!r}): {e}'
        ) from e
    return self._ds

  def __getstate__(self):  # workers reopen the data source
    return {**self.__dict__, '_ds': None}

  def __len__(self):
    return self._length

  def fingerprint(self):
    return f'{self.name}/{self.split}/{self._length}'

  def read(self, i):
    example = self._source()[i]
    name = example.get('image/filename')
    if isinstance(name, bytes):
      name = name.decode('utf-8')
    return (name or f'{self.name}/{self.split}/{i}'), example['image']


def open_source(input_dir, split, tfds_name=None, tfds_data_dir=None):
  """The source build_records reads: TFDS when tfds_name is set, samples for 'samples'."""
  if tfds_name:
    return TfdsSource(tfds_name, split, tfds_data_dir)
  if input_dir == 'samples':
    return SampleSource(split)
  if not input_dir:
    raise ValueError('give input_dir (a folder or "samples") or tfds_name')
  return FolderSource(input_dir)
