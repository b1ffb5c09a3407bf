// Building the page from data without innerHTML: text is always text, so names and comments from
// DICOM files or the server can never run as markup.

/**
 * Create an element: h('button', {class: 'primary', onclick: fn}, 'Save').
 * Attributes starting with "on" become listeners; null/false attributes are left out.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** Announce `text` to screen readers and show it in the status line. */
export function announce(text, kind = 'info') {
  const line = document.getElementById('status-line');
  if (!line) return;
  line.className = `status-line ${kind}`;
  line.textContent = text;
}

/** A labelled form field; `input` is the control. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', {}, hint) : null);
}

/**
 * A modal dialog (native <dialog>: focus is trapped and Escape closes it).
 * Resolves with the value passed to `close(value)`, or null when dismissed.
 */
export function dialog(title, build) {
  return new Promise(resolve => {
    const box = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' });
    let result = null;
    const close = value => {
      result = value;
      box.close();
    };
    box.addEventListener('close', () => {
      box.remove();
      resolve(result);
    });
    replace(box, h('h2', { id: 'dialog-title' }, title), build(close));
    document.body.append(box);
    box.showModal();
  });
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export async function confirmAction(title, message, action = 'Delete') {
  const answer = await dialog(title, close =>
    h(
      'div',
      {},
      h('p', {}, message),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', onclick: () => close(false), autofocus: true }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => close(true) }, action),
      ),
    ),
  );
  return answer === true;
}

/** Copy text to the clipboard, falling back to selecting it for the user when the API is refused. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    announce('Copied to the clipboard.');
  } catch (error) {
    if (input) {
      input.focus();
      input.select();
    }
    announce('Press Ctrl+C to copy the selected link.');
  }
}

/** Format a timestamp (ISO 8601) for people, in their time zone. */
export function formatTime(iso) {
  if (!iso) return '';
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? iso : moment.toLocaleString();
}

/** Format a byte count as KB, MB, GB. */
export function formatBytes(count) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = Number(count) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** A table of `rows` with `columns` [[title, row => cell], ...]; `empty` when there is no row. */
export function table(columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', { scope: 'col' }, title)))),
      h('tbody', {}, rows.map(row => h('tr', {}, columns.map(([title, cell]) => h('td', { 'data-label': title }, cell(row)))))),
    ),
  );
}

/** A page section: a card with its heading. */
export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h1', {}, title), ...children);
}

/** Show in `place` that `what` failed, with the server's reason. */
export function failure(place, error, what) {
  replace(place, h('p', { class: 'error', role: 'alert' }, `${what}: ${error.message}`));
}

/** Save a Blob under `name` through the browser's download. */
export function saveBlob(blob, name) {
  const link = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}
