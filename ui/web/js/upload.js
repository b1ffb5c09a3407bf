// Upload by drag and drop of files or folders: one STOW-RS request per file (PS3.18 §10.5), a few
// at a time, each with its own progress bar, and every failure listed with the server's reason.

import { authorization } from './api.js';
import { TAG, first, values } from './dicom.js';
import { announce, formatBytes, h, replace } from './dom.js';

const PARALLEL = 3;

export async function uploadView(container) {
  const list = h('ol', { class: 'upload-list', 'aria-label': 'Files' });
  const summary = h('p', { class: 'upload-summary', role: 'status', 'aria-live': 'polite' });
  const failures = h('div', { class: 'upload-failures' });
  const filesInput = h('input', { type: 'file', multiple: true, hidden: true });
  const folderInput = h('input', { type: 'file', multiple: true, webkitdirectory: true, hidden: true });
  const zone = h(
    'div',
    { class: 'drop-zone', tabindex: '0', role: 'button', 'aria-label': 'Drop files or folders here, or press Enter to choose files' },
    h('p', {}, h('strong', {}, 'Drop DICOM files or folders here')),
    h('p', { class: 'muted' }, 'or'),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', onclick: () => filesInput.click() }, 'Choose files'),
      h('button', { type: 'button', onclick: () => folderInput.click() }, 'Choose a folder'),
    ),
  );
  zone.addEventListener('keydown', event => {
    if ((event.key === 'Enter' || event.key === ' ') && event.target === zone) {
      event.preventDefault();
      filesInput.click();
    }
  });
  for (const name of ['dragenter', 'dragover']) {
    zone.addEventListener(name, event => {
      event.preventDefault();
      zone.classList.add('over');
    });
  }
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async event => {
    event.preventDefault();
    zone.classList.remove('over');
    upload(await droppedFiles(event.dataTransfer));
  });
  filesInput.addEventListener('change', () => upload([...filesInput.files]));
  folderInput.addEventListener('change', () => upload([...folderInput.files]));

  async function upload(files) {
    if (!files.length) return;
    replace(failures);
    const rows = files.map(file => {
      const bar = h('progress', { max: file.size || 1, value: 0, 'aria-label': `${fileName(file)} progress` });
      const state = h('span', { class: 'state' }, 'waiting');
      const row = h('li', {}, h('span', { class: 'name' }, fileName(file)), h('span', { class: 'size' }, formatBytes(file.size)), bar, state);
      return { file, bar, state, row };
    });
    replace(list, rows.map(row => row.row));
    const outcome = { stored: 0, failed: [] };
    const queue = [...rows];
    const worker = async () => {
      while (queue.length) {
        const row = queue.shift();
        row.state.textContent = 'sending';
        const result = await storeOne(row.file, loaded => {
          row.bar.value = loaded;
        });
        row.bar.value = row.bar.max;
        row.row.classList.add(result.ok ? 'ok' : 'failed');
        row.state.textContent = result.ok ? 'stored' : 'failed';
        if (result.ok) outcome.stored += result.stored;
        else outcome.failed.push({ name: fileName(row.file), reasons: result.reasons });
        summary.textContent = progressText(outcome, rows.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, rows.length) }, worker));
    summary.textContent = progressText(outcome, rows.length, true);
    if (outcome.failed.length) {
      replace(
        failures,
        h('h2', {}, `Not stored (${outcome.failed.length})`),
        h(
          'ul',
          { class: 'failure-list' },
          outcome.failed.map(failure => h('li', {}, h('strong', {}, failure.name), ': ', failure.reasons.join('; '))),
        ),
      );
    }
    announce(summary.textContent, outcome.failed.length ? 'error' : 'info');
  }

  replace(
    container,
    h(
      'section',
      { class: 'card' },
      h('h1', {}, 'Upload'),
      h('p', {}, 'Each file is sent to the archive by STOW-RS. Files that are not DICOM are refused with the reason.'),
      zone,
      filesInput,
      folderInput,
      summary,
      list,
      failures,
    ),
  );
}

function fileName(file) {
  return file.webkitRelativePath || file.relativePath || file.name;
}

function progressText(outcome, total, done = false) {
  const handled = outcome.stored + outcome.failed.length;
  const head = done ? 'Done' : `Sending ${handled} of ${total}`;
  return `${head}: ${outcome.stored} instance(s) stored, ${outcome.failed.length} file(s) failed.`;
}

/** Every file dropped, walking into dropped folders (File and Directory Entries API). */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map(item => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const files = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      file.relativePath = path + file.name;
      files.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries answers in batches until it returns an empty one.
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${path}${entry.name}/`);
      }
    }
  };
  for (const entry of entries) await walk(entry, '');
  return files;
}

/**
 * STOW-RS one file: a multipart/related body of one application/dicom part. The body is a Blob
 * over the file, so the browser streams it from disk. Resolves {ok, stored, reasons}.
 */
async function storeOne(file, onProgress) {
  const boundary = `webpacs-${crypto.randomUUID()}`;
  const body = new Blob([`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, `\r\n--${boundary}--\r\n`]);
  const headers = await authorization();
  return new Promise(resolve => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/dicomweb/studies');
    xhr.setRequestHeader('Content-Type', `multipart/related; type="application/dicom"; boundary=${boundary}`);
    xhr.setRequestHeader('Accept', 'application/dicom+json');
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', event => onProgress(Math.min(event.loaded, file.size)));
    xhr.addEventListener('error', () => resolve({ ok: false, stored: 0, reasons: ['the server could not be reached'] }));
    xhr.addEventListener('load', () => resolve(readStoreResponse(xhr.status, xhr.responseText)));
    xhr.send(body);
  });
}

/** What a Store Instances response says (PS3.18 §10.5.3): how many stored, and why others failed. */
function readStoreResponse(status, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (error) {
    body = null;
  }
  if (body && !Array.isArray(body) && (body[TAG.FailedSOPSequence] || body[TAG.ReferencedSOPSequence])) {
    const stored = values(body, 'ReferencedSOPSequence').length;
    const reasons = values(body, 'FailedSOPSequence').map(item => {
      const comment = first(item, 'ErrorComment');
      const code = values(item, 'FailureReason')[0];
      const reason = comment || (code !== undefined ? `failure reason 0x${Number(code).toString(16).toUpperCase()}` : 'refused');
      return reason;
    });
    return { ok: reasons.length === 0 && status < 300, stored, reasons };
  }
  if (status >= 200 && status < 300) return { ok: true, stored: 1, reasons: [] };
  const detail = body && (body.detail || body.title);
  return { ok: false, stored: 0, reasons: [detail || `HTTP ${status}`] };
}
