"""The `colorjax` command: colorjax SUBCOMMAND [flags], each subcommand its `python -m` twin.

colorjax demo                                              # one picture, no download
colorjax colorize --input=old_photos/ --output_dir=out      # the shipped model by default
colorjax train --flagfile=launch/configs/effnet_hints.flags --workdir=runs/mine
colorjax evaluate | calibrate | export | prep | serve --help
"""

import importlib
import sys

# subcommand -> (module, what it does); each module has run(argv) and takes the same flags as
# `python -m MODULE`.
SUBCOMMANDS = {
  'demo': ('launch.demo', "colorize scikit-image's photos with the shipped model: one picture"),
  'colorize': ('launch.colorize', 'colorize photos (the shipped model unless --checkpoint)'),
  'train': ('launch.train', 'train a colorizer (python -m launch.train)'),
  'evaluate': ('launch.evaluate', 'score checkpoints against the all-gray output'),
  'calibrate': ('launch.calibrate', "pick a classification model's decoding on held-out photos"),
  'export': ('launch.export', 'export params or an ONNX file for shipping'),
  'prep': ('data_prep.build_records', 'photos -> Lab ArrayRecord shards (data_prep)'),
  'serve': ('launch.serve', 'the colorization studio in the browser (the [app] extra)'),
}


def usage():
  width = max(map(len, SUBCOMMANDS))
  lines = [
    'usage: colorjax SUBCOMMAND [--flags]   (colorjax SUBCOMMAND --help for its flags)',
    '',
    'Automatic image colorization with JAX: a grayscale photo in, a color photo out.',
    '',
    'subcommands:',
  ]
  lines += [f'  {name:<{width}}  {about}' for name, (_, about) in SUBCOMMANDS.items()]
  return '\n'.join(lines)


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in SUBCOMMANDS:
    print(f'colorjax: unknown subcommand {name!r}\n\n{usage()}', file=sys.stderr)
    return 2
  module_name = SUBCOMMANDS[name][0]
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    if name == 'serve':
      print(
        f"colorjax serve needs the [app] extra: pip install 'colorjax[app]' ({e})", file=sys.stderr
      )
      return 2
    raise
  if any(a in ('-h', '--help', '-help', '--helpshort') for a in argv[2:]):
    # absl's --help shows the flags of the program's main module (this one, which has none)
    # and exits 1: show the subcommand's own, and succeed.
    from absl import flags  # pylint: disable=g-import-not-at-top

    print(f'usage: colorjax {name} [--flags]   (--helpfull: every flag, with the libraries)\n')
    print((module.__doc__ or '').strip() + '\n')
    print(flags.FLAGS.module_help(module_name))
    return 0
  # The subcommand sees argv as its `python -m` twin does: the program name, then its flags.
  module.run([f'colorjax {name}', *argv[2:]])
  return 0


if __name__ == '__main__':
  sys.exit(main())
