// colorjax studio: the page's logic. Photos live on the server (in memory); the hints and the
// vividness of each photo live here and go with every request, so the server keeps no session.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const HEADERS = { 'X-Colorjax-Studio': '1' };
  const HEX = /^#[0-9a-fA-F]{6}$/;
  const DEBOUNCE_MS = 120;
  const UPLOADS_AT_ONCE = 2;

  const state = {
    info: null,
    photos: [],
    current: null,
    selected: null, // index of the hint whose popover is open
    lastColor: '#b5523b',
    split: 50,
    queue: [],
    uploading: 0,
    shown: 0,
    nextKey: 1,
  };

  // -- server -----------------------------------------------------------------------------------

  async function api(path, { method = 'GET', json, body, blob = false, contentType } = {}) {
    const headers = { ...HEADERS };
    let payload = body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(json);
    } else if (contentType) {
      headers['Content-Type'] = contentType;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body: payload });
    } catch (e) {
      throw new Error('The studio cannot be reached; is launch.serve still running?');
    }
    if (!response.ok) {
      let message = `The studio answered with status ${response.status}.`;
      try {
        const data = await response.json();
        if (data && data.error) message = data.error;
      } catch (e) { /* not JSON: keep the status */ }
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return blob ? response.blob() : response.json();
  }

  // -- messages ---------------------------------------------------------------------------------

  function showError(message) {
    $('error-text').textContent = message;
    $('error').hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
  }

  // -- hints ------------------------------------------------------------------------------------

  const round2 = (v) => Math.round(v * 100) / 100;

  function wireHint(h) {
    const out = { x: round2(h.x), y: round2(h.y) };
    if (h.color) out.color = h.color; else out.ab = h.ab;
    if (h.radius !== undefined && h.radius !== null) out.radius = h.radius;
    return out;
  }

  const hintColor = (h) => h.color || h.display || '#808080';

  function requestBody(photo, extra = {}) {
    return { hints: photo.hints.map(wireHint), vividness: photo.vividness, ...extra };
  }

  // Photo pixel coordinates of a pointer event: pixel i covers [i, i + 1), so centers are whole.
  function photoPoint(photo, event) {
    const rect = $('before').getBoundingClientRect();
    const fx = (event.clientX - rect.left) / rect.width;
    const fy = (event.clientY - rect.top) / rect.height;
    const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
    return { x: clamp(fx * photo.width - 0.5, photo.width), y: clamp(fy * photo.height - 0.5, photo.height) };
  }

  // -- previews ---------------------------------------------------------------------------------

  function schedule(photo) {
    clearTimeout(photo.timer);
    photo.timer = setTimeout(() => refresh(photo), DEBOUNCE_MS);
  }

  async function refresh(photo) {
    if (!photo.id) return;
    if (photo.busy) {
      photo.dirty = true; // the newest state is sent when this request ends
      return;
    }
    photo.busy = true;
    photo.dirty = false;
    renderBusy();
    try {
      const blob = await api(`/api/photos/${photo.id}/preview`, {
        method: 'POST', json: requestBody(photo), blob: true,
      });
      if (photo.previewUrl) URL.revokeObjectURL(photo.previewUrl);
      photo.previewUrl = URL.createObjectURL(blob);
      photo.status = 'ready';
      photo.error = null;
      photo.version += 1;
    } catch (e) {
      if (e.status === 404 || !photo.previewUrl) {
        photo.status = 'failed';
        photo.error = e.message;
      }
      showError(e.message);
    } finally {
      photo.busy = false;
      render();
      if (photo.dirty) refresh(photo);
    }
  }

  // -- uploads ----------------------------------------------------------------------------------

  function addFiles(files) {
    const limits = state.info ? state.info.limits : null;
    for (const file of files) {
      const photo = {
        key: state.nextKey++, id: null, name: file.name, status: 'uploading', hints: [],
        vividness: 1, version: 0, busy: false, dirty: false,
      };
      state.photos.push(photo);
      if (limits && file.size > limits.max_upload_bytes) {
        photo.status = 'failed';
        photo.error = `${file.name} has ${(file.size / 1e6).toFixed(1)} MB, more than the limit of ` +
          `${Math.round(limits.max_upload_bytes / 1e6)} MB.`;
        showError(photo.error);
      } else {
        state.queue.push([photo, file]);
      }
      if (!state.current) state.current = photo;
    }
    render();
    pump();
  }

  function pump() {
    while (state.uploading < UPLOADS_AT_ONCE && state.queue.length) {
      const [photo, file] = state.queue.shift();
      state.uploading += 1;
      upload(photo, file).finally(() => {
        state.uploading -= 1;
        pump();
      });
    }
  }

  async function upload(photo, file) {
    try {
      const meta = await api('/api/photos?name=' + encodeURIComponent(file.name), {
        method: 'POST', body: file, contentType: 'application/octet-stream',
      });
      Object.assign(photo, {
        id: meta.id, name: meta.name, width: meta.width, height: meta.height,
        preview_width: meta.preview_width, preview_height: meta.preview_height,
        status: 'colorizing', originalUrl: `/api/photos/${meta.id}/original`,
      });
      render();
      refresh(photo);
    } catch (e) {
      photo.status = 'failed';
      photo.error = e.message;
      showError(e.message);
      render();
    }
  }

  async function removePhoto(photo) {
    state.photos = state.photos.filter((p) => p !== photo);
    state.queue = state.queue.filter(([p]) => p !== photo);
    if (photo.previewUrl) URL.revokeObjectURL(photo.previewUrl);
    if (state.current === photo) {
      state.current = state.photos[0] || null;
      closePopover();
    }
    render();
    if (photo.id) {
      try {
        await api(`/api/photos/${photo.id}`, { method: 'DELETE' });
      } catch (e) {
        if (e.status !== 404) showError(e.message);
      }
    }
  }

  // -- rendering --------------------------------------------------------------------------------

  function statusText(photo) {
    if (photo.status === 'uploading') return 'Uploading…';
    if (photo.status === 'colorizing') return 'Colorizing…';
    if (photo.status === 'failed') return photo.error || 'Failed.';
    const n = photo.hints.length;
    return `${photo.width}×${photo.height}` + (n ? ` · ${n} hint${n > 1 ? 's' : ''}` : '');
  }

  function renderList() {
    const list = $('photo-list');
    list.replaceChildren();
    for (const photo of state.photos) {
      const li = document.createElement('li');
      li.dataset.key = photo.key;
      li.dataset.status = photo.status;
      if (photo === state.current) li.classList.add('current');
      if (photo.status === 'failed') li.classList.add('failed');
      const thumb = document.createElement('div');
      thumb.className = 'thumb';
      const url = photo.previewUrl || photo.originalUrl;
      if (url) thumb.style.backgroundImage = `url("${url}")`;
      const text = document.createElement('div');
      text.className = 'name';
      text.textContent = photo.name;
      text.title = photo.name;
      const status = document.createElement('span');
      status.className = 'status';
      status.textContent = statusText(photo);
      text.append(status);
      const remove = document.createElement('button');
      remove.className = 'remove';
      remove.type = 'button';
      remove.title = 'Remove';
      remove.textContent = '×';
      remove.addEventListener('click', (event) => {
        event.stopPropagation();
        removePhoto(photo);
      });
      li.append(thumb, text, remove);
      li.addEventListener('click', () => select(photo));
      list.append(li);
    }
  }

  function renderBusy() {
    const photo = state.current;
    $('busy').hidden = !(photo && photo.busy && photo.previewUrl);
  }

  function renderMarkers(photo) {
    const layer = $('markers');
    layer.replaceChildren();
    photo.hints.forEach((h, i) => {
      const marker = document.createElement('div');
      marker.className = 'marker' + (i === state.selected ? ' selected' : '');
      marker.dataset.index = i;
      marker.dataset.x = h.x;
      marker.dataset.y = h.y;
      marker.style.left = `${((h.x + 0.5) / photo.width) * 100}%`;
      marker.style.top = `${((h.y + 0.5) / photo.height) * 100}%`;
      marker.style.background = hintColor(h);
      marker.title = `${hintColor(h)} at (${Math.round(h.x)}, ${Math.round(h.y)})`;
      layer.append(marker);
    });
  }

  // The photo as large as the workspace allows (small photos are enlarged too); markers and
  // clicks scale with it, since they are placed in fractions of its box.
  function fitFrame(photo) {
    const before = $('before');
    const pw = photo.preview_width || photo.width;
    const ph = photo.preview_height || photo.height;
    if (!pw || !ph) return;
    const maxWidth = $('workspace').clientWidth;
    const maxHeight = Math.max(240, window.innerHeight - 230);
    const scale = Math.min(maxWidth / pw, maxHeight / ph);
    before.style.width = `${Math.floor(pw * scale)}px`;
    before.style.height = `${Math.floor(ph * scale)}px`;
  }

  function renderSplit() {
    $('after').style.clipPath = `inset(0 0 0 ${state.split}%)`;
    $('handle').style.left = `${state.split}%`;
  }

  function renderViewer() {
    const photo = state.current;
    const ready = photo && photo.originalUrl;
    $('viewer').hidden = !ready;
    $('empty').hidden = !!ready;
    if (!ready) {
      const lines = $('empty').querySelectorAll('p');
      if (photo) {
        lines[0].textContent = photo.status === 'failed' ? photo.error : `${statusText(photo)} ${photo.name}`;
      } else {
        lines[0].textContent = 'Your photos appear here in color as soon as they are ready.';
      }
      return;
    }
    const frame = $('frame');
    const before = $('before');
    const after = $('after');
    if (before.dataset.url !== photo.originalUrl) {
      before.dataset.url = photo.originalUrl;
      before.src = photo.originalUrl;
    }
    if (photo.previewUrl && after.dataset.url !== photo.previewUrl) {
      after.dataset.url = photo.previewUrl;
      after.onload = () => {
        // A page-wide count of the previews shown, and whose: what a test (or person) waits on.
        state.shown += 1;
        frame.dataset.version = state.shown;
        frame.dataset.shown = photo.id;
        frame.dataset.state = photo.status;
      };
      after.src = photo.previewUrl;
    } else if (!photo.previewUrl) {
      delete after.dataset.url;
      after.removeAttribute('src');
      delete frame.dataset.shown;
    }
    if (!photo.previewUrl || photo.status === 'failed') frame.dataset.state = photo.status;
    frame.dataset.photo = photo.id;
    frame.classList.toggle('no-hints', !state.info || !state.info.hints);
    fitFrame(photo);
    renderSplit();
    renderMarkers(photo);
    renderBusy();
    $('vividness').value = photo.vividness;
    $('vividness-value').textContent = `${Number(photo.vividness).toFixed(2)}×`;
    $('download').disabled = !photo.previewUrl;
    $('save-hints').disabled = !photo.hints.length;
    $('clear-hints').disabled = !photo.hints.length;
  }

  function render() {
    renderList();
    renderViewer();
  }

  function select(photo) {
    if (state.current !== photo) closePopover();
    state.current = photo;
    render();
  }

  // -- the popover of one hint ------------------------------------------------------------------

  function openPopover(index) {
    const photo = state.current;
    const h = photo.hints[index];
    state.selected = index;
    renderMarkers(photo);
    const color = hintColor(h);
    $('hint-color').value = color;
    $('hint-hex').value = color;
    const pop = $('popover');
    pop.hidden = false;
    const frame = $('frame');
    const px = frame.offsetLeft + ((h.x + 0.5) / photo.width) * frame.clientWidth;
    const py = frame.offsetTop + ((h.y + 0.5) / photo.height) * frame.clientHeight;
    const width = pop.offsetWidth;
    const maxLeft = $('viewer').clientWidth - width - 4;
    pop.style.left = `${Math.max(4, Math.min(px + 16, maxLeft))}px`;
    pop.style.top = `${py + 16}px`;
    if (state.info.suggest) loadSuggestions(photo, index);
  }

  function closePopover() {
    state.selected = null;
    $('popover').hidden = true;
    if (state.current && state.current.originalUrl) renderMarkers(state.current);
  }

  let suggestSeq = 0;
  async function loadSuggestions(photo, index) {
    const seq = ++suggestSeq;
    const box = $('swatches');
    box.replaceChildren();
    box.dataset.state = 'loading';
    const h = photo.hints[index];
    const others = photo.hints.filter((_, i) => i !== index).map(wireHint);
    try {
      const data = await api(`/api/photos/${photo.id}/suggest`, {
        method: 'POST', json: { x: round2(h.x), y: round2(h.y), hints: others },
      });
      if (seq !== suggestSeq) return;
      for (const c of data.colors) {
        const swatch = document.createElement('button');
        swatch.type = 'button';
        swatch.className = 'swatch';
        swatch.style.background = c.color;
        swatch.dataset.color = c.color;
        swatch.title = `${c.color} · ${(c.probability * 100).toFixed(0)}%`;
        swatch.addEventListener('click', () => setHintColor(c.color));
        box.append(swatch);
      }
      box.dataset.state = 'ready';
    } catch (e) {
      if (seq === suggestSeq) {
        box.dataset.state = 'failed';
        showError(e.message);
      }
    }
  }

  function setHintColor(color) {
    const photo = state.current;
    if (state.selected === null || !photo) return;
    const h = photo.hints[state.selected];
    h.color = color.toLowerCase();
    delete h.ab;
    delete h.display;
    state.lastColor = h.color;
    $('hint-color').value = h.color;
    $('hint-hex').value = h.color;
    renderMarkers(photo);
    schedule(photo);
  }

  function deleteSelected() {
    const photo = state.current;
    if (state.selected === null || !photo) return;
    photo.hints.splice(state.selected, 1);
    closePopover();
    render();
    schedule(photo);
  }

  // -- pointer: the split handle, adding and dragging hints -------------------------------------

  let drag = null;

  function onPointerDown(event) {
    const photo = state.current;
    if (!photo || !photo.id || event.button !== 0) return;
    const frame = $('frame');
    if (event.target.closest('#handle')) {
      drag = { kind: 'split' };
    } else if (event.target.classList.contains('marker')) {
      drag = { kind: 'hint', index: Number(event.target.dataset.index), x0: event.clientX, y0: event.clientY, moved: false };
      event.target.classList.add('dragging');
    } else if (state.info.hints) {
      const p = photoPoint(photo, event);
      photo.hints.push({ x: p.x, y: p.y, color: state.lastColor });
      render();
      openPopover(photo.hints.length - 1);
      schedule(photo);
      return;
    } else {
      return;
    }
    frame.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function onPointerMove(event) {
    if (!drag) return;
    const photo = state.current;
    if (drag.kind === 'split') {
      const rect = $('frame').getBoundingClientRect();
      state.split = Math.min(100, Math.max(0, ((event.clientX - rect.left) / rect.width) * 100));
      renderSplit();
      return;
    }
    if (!drag.moved && Math.hypot(event.clientX - drag.x0, event.clientY - drag.y0) < 3) return;
    drag.moved = true;
    const p = photoPoint(photo, event);
    Object.assign(photo.hints[drag.index], p);
    $('popover').hidden = true;
    renderMarkers(photo);
  }

  function onPointerUp() {
    if (!drag) return;
    const photo = state.current;
    const done = drag;
    drag = null;
    if (done.kind !== 'hint') return;
    if (done.moved) schedule(photo);
    openPopover(done.index);
  }

  // -- files: hints in and out, downloads -------------------------------------------------------

  const stem = (name) => (name.includes('.') ? name.slice(0, name.lastIndexOf('.')) : name);

  function saveBlob(blob, filename) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = filename;
    document.body.append(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 30000);
  }

  async function download() {
    const photo = state.current;
    if (!photo || !photo.id) return;
    const button = $('download');
    const format = $('format').value;
    button.disabled = true;
    button.textContent = 'Preparing…';
    try {
      const blob = await api(`/api/photos/${photo.id}/download`, {
        method: 'POST', json: requestBody(photo, { format }), blob: true,
      });
      saveBlob(blob, `${stem(photo.name)}-color.${format}`);
    } catch (e) {
      showError(e.message);
    } finally {
      button.disabled = false;
      button.textContent = 'Download full size';
    }
  }

  function saveHints() {
    const photo = state.current;
    if (!photo) return;
    const text = JSON.stringify({ hints: photo.hints.map(wireHint) }, null, 2) + '\n';
    saveBlob(new Blob([text], { type: 'application/json' }), `${stem(photo.name)}.hints.json`);
  }

  async function loadHints(file) {
    const photo = state.current;
    if (!photo || !photo.id) return;
    let document_;
    try {
      document_ = JSON.parse(await file.text());
    } catch (e) {
      showError(`${file.name} is not valid JSON.`);
      return;
    }
    try {
      const data = await api(`/api/photos/${photo.id}/hints`, { method: 'POST', json: document_ });
      photo.hints = data.hints;
      closePopover();
      render();
      schedule(photo);
    } catch (e) {
      showError(`${file.name}: ${e.message}`);
    }
  }

  // -- start ------------------------------------------------------------------------------------

  function describeModel(info) {
    const kind = info.loss === 'classification' ? 'vivid (classification)' : 'regression';
    const hints = info.hints ? 'takes color hints' : 'automatic only (no hints)';
    return `Model: ${info.model}, ${kind}, ${hints} · network ${info.image_size} px · ${info.backend}`;
  }

  function wire() {
    $('error-close').addEventListener('click', clearError);
    $('file-input').addEventListener('change', (event) => {
      addFiles([...event.target.files]);
      event.target.value = '';
    });
    const drop = $('drop');
    for (const target of [drop, document.body]) {
      target.addEventListener('dragover', (event) => {
        event.preventDefault();
        drop.classList.add('over');
      });
      target.addEventListener('dragleave', () => drop.classList.remove('over'));
      target.addEventListener('drop', (event) => {
        event.preventDefault();
        drop.classList.remove('over');
        if (event.dataTransfer && event.dataTransfer.files.length) addFiles([...event.dataTransfer.files]);
      });
    }
    const frame = $('frame');
    frame.addEventListener('pointerdown', onPointerDown);
    frame.addEventListener('pointermove', onPointerMove);
    frame.addEventListener('pointerup', onPointerUp);
    frame.addEventListener('pointercancel', onPointerUp);
    $('hint-color').addEventListener('input', (event) => setHintColor(event.target.value));
    $('hint-hex').addEventListener('keydown', (event) => {
      if (event.key !== 'Enter') return;
      const value = event.target.value.trim();
      if (HEX.test(value)) setHintColor(value);
      else showError('Type a color as #rrggbb, e.g. #b5523b.');
    });
    $('hint-delete').addEventListener('click', deleteSelected);
    $('hint-done').addEventListener('click', closePopover);
    document.addEventListener('keydown', (event) => {
      if (state.selected === null || event.target.tagName === 'INPUT') return;
      if (event.key === 'Delete' || event.key === 'Backspace') deleteSelected();
      if (event.key === 'Escape') closePopover();
    });
    $('vividness').addEventListener('input', (event) => {
      const photo = state.current;
      if (!photo) return;
      photo.vividness = Number(event.target.value);
      $('vividness-value').textContent = `${photo.vividness.toFixed(2)}×`;
      schedule(photo);
    });
    $('download').addEventListener('click', download);
    $('save-hints').addEventListener('click', saveHints);
    $('clear-hints').addEventListener('click', () => {
      const photo = state.current;
      if (!photo) return;
      photo.hints = [];
      closePopover();
      render();
      schedule(photo);
    });
    $('load-hints-input').addEventListener('change', (event) => {
      if (event.target.files.length) loadHints(event.target.files[0]);
      event.target.value = '';
    });
  }

  async function start() {
    wire();
    try {
      state.info = await api('/api/info');
    } catch (e) {
      $('model-line').textContent = 'The model is not available.';
      showError(e.message);
      return;
    }
    const info = state.info;
    $('model-line').textContent = describeModel(info);
    $('hint-tools').hidden = !info.hints;
    $('suggest-box').hidden = !info.suggest;
    const vivid = $('vividness');
    vivid.min = info.limits.vividness[0];
    vivid.max = info.limits.vividness[1];
    vivid.disabled = !info.vividness;
    $('vivid-control').classList.toggle('disabled', !info.vividness);
    $('vivid-control').title = info.vividness
      ? "A multiple of the model's calibrated colorfulness (1: as calibrated)"
      : 'This model has no vividness control';
    $('hint-help').textContent = info.hints
      ? 'Click on the photo to add a color hint; drag a hint to move it; Delete removes the selected one.'
      : 'This model colors automatically; it takes no color hints.';
    window.addEventListener('resize', () => {
      if (state.current && state.current.originalUrl) {
        closePopover();
        fitFrame(state.current);
      }
    });
    document.body.dataset.ready = '1';
  }

  start();
})();
