"""The studio in a real headless Chromium (selenium): upload, automatic colorization, a red hint
that makes the download redder there, dragging and deleting hints, the hints file, errors.

Skips, saying why, where Chromium, its driver or selenium is missing. With
COLORJAX_STUDIO_SCREENSHOT=docs/studio.png it also saves a screenshot of the page there.
COLORJAX_STUDIO_HINT_MODEL=DIR uses that hint model instead of training one (quicker reruns).
"""

import fcntl
import io
import json
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image
from studio_fixtures import ROOT, Server, train_hint_model

from colorjax import fullsize, lab
from colorjax import hints as hints_lib

pytestmark = pytest.mark.slow

CHROMIUM = (
  os.environ.get('COLORJAX_CHROMIUM')
  or shutil.which('chromium')
  or shutil.which('chromium-browser')
)
CHROMEDRIVER = os.environ.get('COLORJAX_CHROMEDRIVER') or shutil.which('chromedriver')
CHROMIUM_FLAGS = (
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--window-size=1280,860',
)  # fmt: skip
TIMEOUT = 120


def _need_browser():
  if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
      'SKIPPED: no Chromium found (apt-get install chromium chromium-driver); the studio was '
      'not tested in a browser'
    )
  return pytest.importorskip(
    'selenium', reason='SKIPPED: selenium is not installed; the studio was not tested in a browser'
  )


def _hint_model(tmp_path_factory):
  """The trained hint model, trained once per test session: pytest-xdist workers share the
  session's folder and wait on a lock for the one that trains it."""
  if not os.environ.get('PYTEST_XDIST_WORKER'):
    return train_hint_model(tmp_path_factory.mktemp('hint_model') / 'run')
  shared = tmp_path_factory.getbasetemp().parent  # this session's, above each worker's
  with open(shared / 'studio_hint_model.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    model, done = shared / 'studio_hint_model', shared / 'studio_hint_model.done'
    if not done.is_file():
      shutil.rmtree(model, ignore_errors=True)  # a failed try's leftovers
      train_hint_model(model)
      done.touch()
  return model


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  _need_browser()
  model = os.environ.get('COLORJAX_STUDIO_HINT_MODEL') or _hint_model(tmp_path_factory)
  server = Server(model)  # --backend=auto: OpenVINO where the [cpu] extra is installed
  yield server
  server.stop()


@pytest.fixture(scope='module')
def downloads(tmp_path_factory):
  return tmp_path_factory.mktemp('downloads')


@pytest.fixture(scope='module')
def browser(server, downloads):
  _need_browser()
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top

  profile = tempfile.mkdtemp(prefix='colorjax-chromium-')
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in CHROMIUM_FLAGS + (f'--user-data-dir={profile}',):
    options.add_argument(flag)
  options.add_experimental_option(
    'prefs', {'download.default_directory': str(downloads), 'download.prompt_for_download': False}
  )
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  driver.execute_cdp_cmd(
    'Browser.setDownloadBehavior', {'behavior': 'allow', 'downloadPath': str(downloads)}
  )
  try:
    yield driver
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, what, timeout=TIMEOUT):
  from selenium.common.exceptions import StaleElementReferenceException  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top

  # A condition finds its elements afresh each poll; one the page redrew meanwhile is retried.
  ignored = (StaleElementReferenceException,)
  try:
    return WebDriverWait(driver, timeout, 0.1, ignored).until(lambda d: condition(d))
  except Exception:
    error = driver.find_element('id', 'error')
    shown = error.text if error.is_displayed() else '(no error shown)'
    raise AssertionError(f'timed out waiting for {what}; the page says: {shown}') from None


# The page redraws its markers with each preview: read one in a single script, not through a
# found element that can go stale between two reads.
_MARKER_XY = (
  "const m = document.querySelector('#markers .marker'); return m && [m.dataset.x, m.dataset.y]"
)


def marker_xy(driver):
  """(x, y) in photo pixels of the first hint marker, once the page shows one."""
  return tuple(float(v) for v in wait(driver, lambda d: d.execute_script(_MARKER_XY), 'a marker'))


def by_id(driver, name):
  return driver.find_element('id', name)


def frame_data(driver, key):
  """The preview frame's data-KEY, read in one script (no element handle to go stale)."""
  return driver.execute_script(f"return document.getElementById('frame').dataset.{key}")


def version(driver):
  """How many previews the page has shown (a page-wide count)."""
  return int(frame_data(driver, 'version') or 0)


def showing_current(driver):
  """Whether the shown preview is that of the photo selected."""
  return frame_data(driver, 'shown') == frame_data(driver, 'photo') is not None


def downloaded(folder, name, timeout=TIMEOUT):
  """The bytes of a finished download, then the file is removed (the next keeps its name)."""
  path = pathlib.Path(folder) / name
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    partial = list(pathlib.Path(folder).glob('*.crdownload'))
    if path.is_file() and not partial and path.stat().st_size:
      data = path.read_bytes()
      path.unlink()
      return data
    time.sleep(0.1)
  raise AssertionError(f'{name} was not downloaded; the folder holds {os.listdir(folder)}')


def click_photo_at(driver, x, y):
  """Clicks photo pixel (x, y) of the shown photo (selenium offsets are from the center); the
  photo element is found afresh if the page redrew it between the reads and the click."""
  from selenium.common.exceptions import StaleElementReferenceException  # pylint: disable=g-import-not-at-top

  for _ in range(4):
    try:
      return _click_photo_at(driver, x, y)
    except StaleElementReferenceException:
      time.sleep(0.2)
  return _click_photo_at(driver, x, y)


def _click_photo_at(driver, x, y):
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top

  image = by_id(driver, 'before')
  rect = image.rect
  photo_w = int(driver.execute_script('return arguments[0].naturalWidth', image))
  photo_h = int(driver.execute_script('return arguments[0].naturalHeight', image))
  dx = (x + 0.5) / photo_w * rect['width'] - rect['width'] / 2
  dy = (y + 0.5) / photo_h * rect['height'] - rect['height'] / 2
  ActionChains(driver).move_to_element_with_offset(image, round(dx), round(dy)).click().perform()


def set_hint_color(driver, color):
  from selenium.webdriver.common.keys import Keys  # pylint: disable=g-import-not-at-top

  field = by_id(driver, 'hint-hex')
  field.clear()
  field.send_keys(color + Keys.ENTER)


def redness(rgb, x, y, half=6):
  window = rgb[int(y) - half : int(y) + half + 1, int(x) - half : int(x) + half + 1]
  return float(lab.rgb8_to_lab(window)[..., 1].mean())


def open_studio(driver, server):
  driver.get(server.url + '/')
  wait(driver, lambda d: d.find_element('tag name', 'body').get_attribute('data-ready') == '1',
       'the page to start')  # fmt: skip


def test_a_red_hint_makes_the_full_size_download_redder_there(browser, server, downloads, tmp_path):
  photo = skimage.data.chelsea()
  path = tmp_path / 'chelsea.png'
  Image.fromarray(photo).save(path)
  open_studio(browser, server)
  assert 'takes color hints' in by_id(browser, 'model-line').text
  by_id(browser, 'file-input').send_keys(str(path))
  wait(browser, lambda d: version(d) >= 1, 'the automatic colorization')
  assert frame_data(browser, 'state') == 'ready'

  by_id(browser, 'download').click()
  plain = np.asarray(Image.open(io.BytesIO(downloaded(downloads, 'chelsea-color.png'))))
  assert plain.shape == photo.shape
  assert np.abs(fullsize.lightness(plain) - fullsize.lightness(photo)).max() < 1.0

  x, y = 150, 120
  before = version(browser)
  click_photo_at(browser, x, y)
  wait(browser, lambda d: d.find_element('id', 'popover').is_displayed(), 'the hint popover')
  set_hint_color(browser, '#ff0000')
  wait(browser, lambda d: version(d) > before, 'the preview with the hint')
  hx, hy = marker_xy(browser)
  assert abs(hx - x) <= 2 and abs(hy - y) <= 2, (hx, hy)
  wait(browser, lambda d: d.execute_script(
    "return document.querySelector('#markers .marker').style.background"
  ) == 'rgb(255, 0, 0)', 'the marker turning red')  # fmt: skip
  time.sleep(0.3)  # the debounced preview of the last color change
  wait(browser, lambda d: not d.find_element('id', 'busy').is_displayed(), 'the preview')

  by_id(browser, 'download').click()
  hinted = np.asarray(Image.open(io.BytesIO(downloaded(downloads, 'chelsea-color.png'))))
  assert hinted.shape == photo.shape
  assert np.abs(fullsize.lightness(hinted) - fullsize.lightness(photo)).max() < 1.0
  gain = redness(hinted, hx, hy) - redness(plain, hx, hy)
  assert gain > 10, f'the hinted spot is only {gain:.1f} units of a redder'

  # Suggested colors at the point, from the model (a classification model).
  wait(browser, lambda d: d.find_element('id', 'swatches').get_attribute('data-state') == 'ready',
       'the suggested colors')  # fmt: skip
  assert len(browser.find_elements('css selector', '#swatches .swatch')) == 8

  if os.environ.get('COLORJAX_STUDIO_SCREENSHOT'):
    _screenshot(browser, pathlib.Path(os.environ['COLORJAX_STUDIO_SCREENSHOT']), tmp_path)


def _screenshot(driver, target, folder):
  """The page with an old (gray) photo, two hints and the suggestions, as a PNG under 400 KB."""
  gray = np.asarray(Image.fromarray(skimage.data.chelsea()).convert('L'))
  path = folder / 'chelsea-1890.png'
  Image.fromarray(gray).save(path)
  by_id(driver, 'hint-done').click()
  by_id(driver, 'file-input').send_keys(str(path))
  listed = lambda d: len(d.find_elements('css selector', '#photo-list li')) == 2
  wait(driver, listed, 'the second photo in the list')
  driver.find_elements('css selector', '#photo-list li')[1].click()
  wait(driver, showing_current, 'the colorization of the gray photo')
  for (x, y), color in (((140, 200), '#b8743a'), ((330, 150), '#a08a3c')):
    before = version(driver)
    click_photo_at(driver, x, y)
    wait(driver, lambda d: d.find_element('id', 'popover').is_displayed(), 'the hint popover')
    set_hint_color(driver, color)
    wait(driver, lambda d: version(d) > before, 'the preview with the hint')
  wait(driver, lambda d: d.find_element('id', 'swatches').get_attribute('data-state') == 'ready',
       'the suggested colors')  # fmt: skip
  time.sleep(0.5)
  image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('RGB')
  target = target if target.is_absolute() else ROOT / target
  target.parent.mkdir(parents=True, exist_ok=True)
  image.save(target, optimize=True)
  if target.stat().st_size >= 400_000:  # fewer colors: the page's flat areas keep theirs
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
  assert target.stat().st_size < 400_000, target.stat().st_size


def test_hints_move_delete_save_and_load_and_errors_show_on_the_page(
  browser, server, downloads, tmp_path
):
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top

  photo = skimage.data.astronaut()
  path = tmp_path / 'astronaut.png'
  Image.fromarray(photo).save(path)
  open_studio(browser, server)
  by_id(browser, 'file-input').send_keys(str(path))
  wait(browser, lambda d: version(d) >= 1, 'the automatic colorization')

  click_photo_at(browser, 100, 100)
  wait(browser, lambda d: d.find_element('id', 'popover').is_displayed(), 'the hint popover')
  set_hint_color(browser, '#00ff00')
  by_id(browser, 'hint-done').click()
  wait(browser, lambda d: not d.find_element('id', 'busy').is_displayed(), 'the preview')
  marker = browser.find_element('css selector', '#markers .marker')
  start = version(browser)
  ActionChains(browser).click_and_hold(marker).move_by_offset(60, 40).release().perform()
  wait(browser, lambda d: version(d) > start, 'the preview after the drag')
  moved = marker_xy(browser)
  assert moved[0] > 130 and moved[1] > 120, moved  # 60 x 40 screen pixels further

  by_id(browser, 'hint-done').click()
  by_id(browser, 'save-hints').click()
  saved = tmp_path / 'saved.hints.json'
  saved.write_bytes(downloaded(downloads, 'astronaut.hints.json'))
  loaded = hints_lib.load_hints(saved, (photo.shape[1], photo.shape[0]))
  assert len(loaded) == 1 and loaded[0].color == '#00ff00'
  assert abs(loaded[0].x - moved[0]) < 0.01 and abs(loaded[0].y - moved[1]) < 0.01

  browser.find_element('css selector', '#markers .marker').click()
  wait(browser, lambda d: d.find_element('id', 'popover').is_displayed(), 'the hint popover')
  by_id(browser, 'hint-delete').click()
  assert browser.find_elements('css selector', '#markers .marker') == []

  by_id(browser, 'load-hints-input').send_keys(str(saved))
  wait(browser, lambda d: len(d.find_elements('css selector', '#markers .marker')) == 1,
       'the loaded hint')  # fmt: skip
  bad = tmp_path / 'bad.hints.json'
  bad.write_text(json.dumps({'hints': [{'x': 10, 'y': 10, 'color': 'red'}]}))
  by_id(browser, 'load-hints-input').send_keys(str(bad))
  wait(browser, lambda d: d.find_element('id', 'error').is_displayed(), 'the error message')
  assert "field 'color'" in by_id(browser, 'error-text').text

  by_id(browser, 'error-close').click()
  fake = tmp_path / 'notes.png'
  fake.write_text('these are my notes, not a photo')
  by_id(browser, 'file-input').send_keys(str(fake))
  wait(browser, lambda d: d.find_element('id', 'error').is_displayed(), 'the error message')
  message = by_id(browser, 'error-text').text
  assert message == 'notes.png is not an image the studio can read (JPEG, PNG, TIFF, WebP).'
