// Reports and attachments of a study (/api/studies/{study}/attachments): list, attach a PDF, a
// JPEG/PNG or a typed text report, and open one (its content read back by WADO-RS).

import * as api from './api.js';
import { announce, dialog, field, formatTime, h, replace, table } from './dom.js';

const KIND_NAMES = { pdf: 'PDF', image: 'Picture', text: 'Text report' };
const ENCAPSULATED_DOCUMENT = '00420011'; // PS3.3 §C.24.2
const CONTENT_SEQUENCE = '0040A730'; // PS3.3 §C.17.3: the SR content tree
const TEXT_VALUE = '0040A160';

function when(attachment) {
  const { content_date: date, content_time: time } = attachment;
  if (!/^\d{8}$/.test(date)) return '';
  const iso = `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${(time || '000000').slice(0, 2)}:${(time || '000000').slice(2, 4)}:00`;
  return formatTime(iso);
}

async function metadata(attachment) {
  const [item] = await api.request(`${attachment.retrieve_url}/metadata`, { headers: { Accept: 'application/dicom+json' } });
  return item;
}

/** The texts of an SR content tree, depth first (PS3.3 §C.17.3). */
function texts(item) {
  const found = [];
  for (const child of (item[CONTENT_SEQUENCE] && item[CONTENT_SEQUENCE].Value) || []) {
    if (child[TEXT_VALUE] && child[TEXT_VALUE].Value) found.push(...child[TEXT_VALUE].Value);
    found.push(...texts(child));
  }
  return found;
}

async function openBlob(blob) {
  const url = URL.createObjectURL(blob);
  // A blob URL opens in the browser's own PDF and image viewers, with the token kept out of the URL.
  window.open(url, '_blank', 'noopener');
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The EncapsulatedDocument value: inline in the metadata when small, else read from its BulkDataURI. */
async function documentBytes(attachment) {
  const element = (await metadata(attachment))[ENCAPSULATED_DOCUMENT] || {};
  if (element.InlineBinary) return Uint8Array.from(atob(element.InlineBinary), char => char.charCodeAt(0));
  if (!element.BulkDataURI) throw new Error('the document has no EncapsulatedDocument (0042,0011) value');
  // A byte range answers with the bare value instead of a multipart/related body (RFC 9110 §14).
  const response = await api.request(element.BulkDataURI, { headers: { Range: 'bytes=0-' }, raw: true });
  return response.arrayBuffer();
}

/** Show one attachment: a PDF or picture in a new tab, a text report in `place`. */
async function openAttachment(attachment, place) {
  if (attachment.kind === 'text') {
    const paragraphs = texts(await metadata(attachment));
    replace(place, h('article', { class: 'report', 'aria-label': attachment.title }, h('h3', {}, attachment.title), paragraphs.map(text => h('p', {}, text))));
    return;
  }
  if (attachment.kind === 'pdf') {
    await openBlob(new Blob([await documentBytes(attachment)], { type: 'application/pdf' }));
    return;
  }
  const response = await api.request(`${attachment.retrieve_url}/rendered`, { headers: { Accept: 'image/png' }, raw: true });
  await openBlob(await response.blob());
}

/** The reports dialog of study `uid`; `canAttach` shows the upload form (the `store` permission). */
export async function attachmentsDialog(uid, label, canAttach) {
  await dialog(`Reports and attachments — ${label}`, close => {
    const list = h('div', { class: 'attachment-list', 'aria-live': 'polite' });
    const shown = h('div', { class: 'attachment-shown' });
    const problem = h('p', { class: 'error', role: 'alert' });
    const base = `/api/studies/${encodeURIComponent(uid)}/attachments`;

    async function refresh() {
      try {
        const attachments = await api.request(base);
        replace(
          list,
          table(
            [
              ['Title', item => item.title],
              ['Kind', item => KIND_NAMES[item.kind] || item.kind],
              ['Status', item => item.status],
              ['Date', item => when(item)],
              ['', item => h('button', { type: 'button', onclick: () => show(item), 'aria-label': `Open ${item.title}` }, 'Open')],
            ],
            attachments,
            'No report or attachment yet.',
          ),
        );
      } catch (error) {
        problem.textContent = `Attachments could not be listed: ${error.message}`;
      }
    }
    async function show(item) {
      try {
        await openAttachment(item, shown);
      } catch (error) {
        problem.textContent = `Not opened: ${error.message}`;
      }
    }
    refresh();
    return h('div', {}, problem, list, shown, canAttach ? attachForm(base, refresh, problem) : null,
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => close(null) }, 'Close')));
  });
}

function attachForm(base, refresh, problem) {
  const title = h('input', { name: 'title', required: true, maxlength: 64 });
  const status = h('select', { name: 'status' }, h('option', { value: 'preliminary' }, 'Preliminary'), h('option', { value: 'final' }, 'Final'));
  const file = h('input', { name: 'file', type: 'file', accept: 'application/pdf,image/jpeg,image/png' });
  const text = h('textarea', { name: 'text', rows: 5 });
  const submit = async event => {
    event.preventDefault();
    problem.textContent = '';
    if (!file.files.length && !text.value.trim()) {
      problem.textContent = 'Choose a PDF, JPEG or PNG file, or type the report.';
      return;
    }
    const form = new FormData();
    form.append('title', title.value.trim());
    form.append('status', status.value);
    if (file.files.length) form.append('file', file.files[0]);
    else form.append('text', text.value);
    try {
      const made = await api.request(base, { method: 'POST', body: form });
      announce(`Attached ${made.title}.`);
      event.target.reset();
      await refresh();
    } catch (error) {
      problem.textContent = `Not attached: ${error.message}`;
    }
  };
  return h(
    'form',
    { class: 'attach-form', onsubmit: submit },
    h('h3', {}, 'Attach'),
    h('div', { class: 'grid' }, field('Title', title), field('Status', status)),
    field('File (PDF, JPEG or PNG)', file),
    field('Or a text report', text),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Attach')),
  );
}
