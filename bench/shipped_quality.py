"""A trained model's two trade-offs on the val photos: decoding (PSNR against colorfulness) and
hints (PSNR against the number of hints, the network alone and with hints spread).

python -m bench.shipped_quality --val_dir=coco/val2017 [--checkpoint=pretrained]
    [--report=docs/shipped_quality.md]

Needs no training, so it can be rerun whenever decoding or hint spreading changes:
- the decoding sweep (colorjax.calibration.sweep: temperature x prior correction at chroma gain
  1, plus the model's own decoding) with the all-gray output's PSNR and AuC, the decodings that
  beat gray on both, and a plot of PSNR against colorfulness ratio;
- the hint curve (colorjax.hint_curve, ideepcolor's protocol) with spreading
  (colorjax.propagation) and without, against ideepcolor's published gains;
- figures: the first val photos at the model's decoding and at the most colorful decoding that
  beats gray, and one photo with 0, 3 and 10 hints.
"""

import pathlib

from absl import app, flags

from bench import quality, report

ROOT = pathlib.Path(__file__).resolve().parent.parent
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'pretrained', 'a workdir, export or pretrained')
_VAL_DIR = flags.DEFINE_string('val_dir', None, 'the val photos (e.g. coco/val2017)')
_BW_DIR = flags.DEFINE_string(
  'bw_dir', None, 'old black-and-white photos (no ground truth) for a figure of both decodings'
)
_BW_PHOTOS = flags.DEFINE_list(
  'bw_photos', None, 'which files of --bw_dir to show (default: its first 4 by name)'
)
_MAX_IMAGES = flags.DEFINE_integer('max_images', None, 'the first N val photos only')
_TEMPERATURES = flags.DEFINE_list('sweep_temperatures', ['0.2', '0.38', '0.6', '1'], 'sweep')
_CORRECTIONS = flags.DEFINE_list(
  'sweep_corrections', ['-1', '-0.5', '-0.25', '-0.1', '0', '0.1'], 'sweep'
)
_HINT_POINTS = flags.DEFINE_list('curve_points', ['0', '1', '2', '5', '10', '20', '50'], 'counts')
_DOC = flags.DEFINE_string('report', str(ROOT / 'docs' / 'shipped_quality.md'), 'the report')


def above_gray(rows, gray):
  """The rows that beat the all-gray output on both PSNR and AuC, most colorful first."""
  good = [r for r in rows if r['psnr'] > gray['psnr'] and r['auc'] > gray['auc']]
  return sorted(good, key=lambda r: -r['colorfulness_ratio'])


def tradeoff_plot(rows, own, gray, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
  for t in sorted({r['temperature'] for r in rows}):
    line = sorted((r for r in rows if r['temperature'] == t), key=lambda r: r['prior_correction'])
    ax.plot([r['colorfulness_ratio'] for r in line], [r['psnr'] for r in line], 'o-',
            label=f'temperature {t:g} (correction -1 ... 0.1)')  # fmt: skip
  ax.plot([own['colorfulness_ratio']], [own['psnr']], 'k*', markersize=12, label='model.json')
  ax.axhline(gray['psnr'], color='gray', linestyle='--', label='all-gray output')
  ax.axvline(0.85, color='gray', linestyle=':', label='colorfulness ratio 0.85')
  ax.set_xlabel('colorfulness ratio (prediction / truth)')
  ax.set_ylabel('PSNR dB')
  ax.set_title('Decoding: accuracy against colorfulness')
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def decoding_figure(colorizer, images, decodings, path, count=4):
  """Original | Grayscale | each decoding, for the first `count` photos."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from colorjax import decoding, inference, visualize  # pylint: disable=g-import-not-at-top

  L = np.stack([x for _, x, _ in images[:count]])
  shown = images[:count]
  rows = [[visualize.lab_to_uint8(l_, ab), visualize.gray_uint8(l_)] for _, l_, ab in shown]
  for knobs in decodings.values():
    pred = inference.batch_predictor(decoding.with_decoding(colorizer, **knobs), count)(L)
    for row, l_, ab in zip(rows, L, pred):
      row.append(visualize.lab_to_uint8(l_, ab))
  titles = ['Original', 'Grayscale', *decodings]
  size = 2 * L.shape[1]
  visualize.save_png(path, visualize.comparison_grid(rows, titles, tile_height=size))


def bw_figure(colorizer, folder, decodings, path, names=None, count=4):
  """The named photos of a folder (default: its first `count`): the photo | each decoding, at
  256 px high."""
  from colorjax import colorize_files, decoding, image_io, inference, visualize  # pylint: disable=g-import-not-at-top

  if names:
    photos = [pathlib.Path(folder) / name for name in names]
  else:
    photos = sorted(p for p in pathlib.Path(folder).iterdir()
                    if p.suffix.lower() in colorize_files.IMAGE_SUFFIXES)[:count]  # fmt: skip
  rows = []
  for photo in photos:
    image = image_io.read_image(photo)
    rgb = image if image.ndim == 3 else image[..., None].repeat(3, -1)
    row = [rgb]
    for knobs in decodings.values():
      row.append(inference.colorize_image(decoding.with_decoding(colorizer, **knobs), image))
    rows.append(row)
  visualize.save_png(path, visualize.comparison_grid(rows, ['Photo', *decodings], tile_height=256))
  return [p.name for p in photos]


def _row(r, gray=None):
  beats = ''
  if gray is not None:
    beats = ' | yes |' if r['psnr'] > gray['psnr'] and r['auc'] > gray['auc'] else ' | no |'
  return (
    f'| {r["temperature"]:g} | {r["prior_correction"]:g} | {r["chroma_gain"]:.3g} | '
    f'{r["psnr"]:.2f} | {r["auc"]:.1f} | {r["colorfulness_ratio"]:.2f} | '
    f'{r["tint"]:.2f}' + (beats or ' |')
  )


def main(argv):
  del argv
  if not _VAL_DIR.value:
    raise app.UsageError('--val_dir is required')
  import numpy as np  # pylint: disable=g-import-not-at-top

  from colorjax import calibration, evaluation, hint_curve, inference  # pylint: disable=g-import-not-at-top

  doc = pathlib.Path(_DOC.value)
  doc.parent.mkdir(parents=True, exist_ok=True)
  colorizer = inference.load(_CHECKPOINT.value)
  config = colorizer.config
  size = config.image_size
  val_dir = pathlib.Path(_VAL_DIR.value)
  images = evaluation.load_eval_images(val_dir, size, max_images=_MAX_IMAGES.value)
  L = np.stack([x for _, x, _ in images])
  ab = np.stack([x for _, _, x in images])
  score = calibration.scorer([i for i, _, _ in images], L, ab)
  gray = score(np.zeros_like(ab))
  knobs = ('temperature', 'prior_correction', 'chroma_gain')
  own_knobs = {k: getattr(config, k) for k in knobs}
  rows = calibration.sweep(colorizer, images, _TEMPERATURES.value, _CORRECTIONS.value)
  # The sweep decodes at chroma gain 1: the model's own decoding (any gain) is scored directly.
  own = {**own_knobs, **score(inference.batch_predictor(colorizer, 16)(L))}
  good = above_gray(rows, gray)
  tradeoff_plot(rows, own, gray, doc.parent / 'shipped_tradeoff.png')
  decodings = {'model.json decoding': own_knobs}
  if good:
    decodings['most colorful above gray'] = {k: good[0][k] for k in knobs}
  decoding_figure(colorizer, images, decodings, doc.parent / 'shipped_decodings.png')
  bw_names = []
  if _BW_DIR.value:
    bw_names = bw_figure(
      colorizer, _BW_DIR.value, decodings, doc.parent / 'shipped_bw.png', _BW_PHOTOS.value
    )

  counts = sorted({int(c) for c in _HINT_POINTS.value} | {0})
  curves = {
    'spread': hint_curve.curve(colorizer, L, ab, counts),
    'network alone': hint_curve.curve(colorizer, L, ab, counts, spread_hints=False),
  }
  hint_curve.plot(curves, doc.parent / 'shipped_hint_curve.png')
  quality.hint_figure(_CHECKPOINT.value, val_dir, size, doc.parent / 'shipped_hints.png')

  lines = [
    '# The shipped model: decoding and hint trade-offs on the val photos',
    '',
    f'Written by `python -m bench.shipped_quality --checkpoint={_CHECKPOINT.value} '
    f'--val_dir=VAL'
    + (' --bw_dir=OLD' if _BW_DIR.value else '')
    + (f' --bw_photos={",".join(_BW_PHOTOS.value)}' if _BW_PHOTOS.value else '')
    + f'` on {report.machine()}. {len(images)} photos of {val_dir.name} at '
    f'{size}x{size}; the same means as launch.evaluate (PSNR on RGB, AuC of the ab error, '
    'colorfulness ratio against the truth, tint = the length of the mean ab error).',
    '',
    '## Decoding: PSNR against colorfulness',
    '',
    "A classification model's decoding (colorjax/decoding.py) moves it along a curve: the mean "
    'of its distribution (temperature 1, prior correction -1) is the most accurate and the '
    'dullest; lower temperatures and higher corrections are more colorful and less accurate. '
    f'All-gray output: PSNR {gray["psnr"]:.2f} dB, AuC {gray["auc"]:.1f}.',
    '',
    '| temperature | correction | chroma gain | PSNR dB | AuC % | CF ratio | tint | beats gray '
    '(PSNR and AuC) |',
    '|---|---|---|---|---|---|---|---|',
    *[_row(r, gray) for r in rows],
    _row(own, gray)[:-2] + ' (model.json) |',
    '',
    '![trade-off](shipped_tradeoff.png)',
    '',
  ]
  if good:
    best = good[0]
    lines += [
      f'{len(good)} of the {len(rows)} decodings beat the all-gray output on both PSNR and AuC; '
      f'the most colorful of them (temperature {best["temperature"]:g}, correction '
      f'{best["prior_correction"]:g}) reaches a colorfulness ratio of '
      f'{best["colorfulness_ratio"]:.2f} at {best["psnr"] - gray["psnr"]:+.2f} dB and '
      f'{best["auc"] - gray["auc"]:+.1f} AuC points over gray. The model.json decoding '
      f'(colorfulness ratio {own["colorfulness_ratio"]:.2f}) is '
      f'{own["psnr"] - gray["psnr"]:+.2f} dB from gray: no decoding reaches both a colorfulness '
      'ratio of 0.85 and the gray PSNR.',
      '',
    ]
  else:
    lines += ['No decoding of the sweep beats the all-gray output on both PSNR and AuC.', '']
  lines += [
    'Original | Grayscale | the model.json decoding | the most colorful decoding above gray:',
    '',
    '![decodings](shipped_decodings.png)',
    '',
  ]
  if bw_names:
    lines += [
      f'Old black-and-white photos (no ground truth; {", ".join(bw_names)} of the folder given '
      'as --bw_dir), the same two decodings:',
      '',
      '![old photos](shipped_bw.png)',
      '',
    ]
  lines += [
    '## Hints: PSNR against the number of hints',
    '',
    f"{hint_curve.PATCH}x{hint_curve.PATCH} patches of the truth's mean ab at ideepcolor's "
    'Gaussian positions (a fixed seed), the model.json decoding. "network alone": the '
    'network\'s own answer to the hint inputs; "spread": what colorize returns, the hints\' '
    'colors carried to the pixels alike (colorjax/propagation.py).',
    '',
    '| hints | network alone dB | gain | spread dB | gain | ideepcolor gain | target met |',
    '|---|---|---|---|---|---|---|',
  ]
  base = curves['spread'][0]['psnr']
  for c in counts:
    alone, spread = curves['network alone'][c]['psnr'], curves['spread'][c]['psnr']
    ref = hint_curve.IDEEPCOLOR_PSNR.get(c)
    ref_gain = ref - hint_curve.IDEEPCOLOR_PSNR[0] if ref is not None else None
    met = ''
    if c in quality.HINT_GAINS:  # ideepcolor's published gains (the targets)
      met = 'yes' if spread - base >= quality.HINT_GAINS[c] else 'no'
    lines.append(
      f'| {c} | {alone:.2f} | {alone - base:+.2f} | {spread:.2f} | {spread - base:+.2f} | '
      + (f'{ref_gain:+.2f}' if ref_gain is not None else '')
      + f' | {met} |'
    )
  monotone = all(
    curves['spread'][a]['psnr'] <= curves['spread'][b]['psnr'] for a, b in zip(counts, counts[1:])
  )
  lines += [
    '',
    f'Monotone in the number of hints (spread): {"yes" if monotone else "no"}.',
    '',
    '![hint curve](shipped_hint_curve.png)',
    '',
    'A val photo (the worst automatic PSNR among the first 8), automatic, and with 3 and 10 hints '
    '(framed), as colorize returns it:',
    '',
    '![hints](shipped_hints.png)',
    '',
  ]
  doc.write_text('\n'.join(lines))
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
