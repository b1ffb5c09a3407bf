// Study search (QIDO-RS), paging with limit/offset, sorting, and the actions each role may take.

import * as api from './api.js';
import { TAG, first, formatDate, inputToDA, toDA, values } from './dicom.js';
import { attachmentsDialog } from './attachments.js';
import { announce, confirmAction, field, h, replace, saveBlob } from './dom.js';
import { editDialog } from './edit.js';
import { sendDialog } from './send.js';
import { shareDialog } from './share.js';

const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'MG', 'NM', 'PT', 'XA', 'RF', 'OT', 'SC', 'SR', 'SEG', 'DOC'];
const PAGE_SIZES = [25, 50, 100];
// Asked for with includefield: what the table shows beyond the required study-level attributes.
const INCLUDE = [
  'InstitutionName',
  'ReferringPhysicianName',
  'StudyDescription',
  'ModalitiesInStudy',
  'NumberOfStudyRelatedSeries',
  'NumberOfStudyRelatedInstances',
  'PatientBirthDate',
].map(keyword => TAG[keyword]);

const COLUMNS = [
  { key: 'PatientName', title: 'Patient' },
  { key: 'PatientID', title: 'Patient ID' },
  { key: 'PatientBirthDate', title: 'Born', format: formatDate },
  { key: 'StudyDate', title: 'Date', format: formatDate },
  { key: 'ModalitiesInStudy', title: 'Modality', all: true },
  { key: 'StudyDescription', title: 'Description' },
  { key: 'AccessionNumber', title: 'Accession' },
  { key: 'ReferringPhysicianName', title: 'Referring' },
  { key: 'InstitutionName', title: 'Institution' },
  { key: 'NumberOfStudyRelatedSeries', title: 'Series', numeric: true },
  { key: 'NumberOfStudyRelatedInstances', title: 'Images', numeric: true },
];

/** What the form asks, kept across visits of the page in this tab. */
function savedState() {
  try {
    return JSON.parse(window.sessionStorage.getItem('webpacs.search') || 'null') || { filters: {}, size: 25 };
  } catch (error) {
    return { filters: {}, size: 25 };
  }
}

export async function studiesView(container, principal) {
  const state = { ...savedState(), offset: 0, sort: null, rows: [], more: false };
  const inputs = {
    PatientName: h('input', { name: 'PatientName', placeholder: 'SMITH* or SM?TH' }),
    PatientID: h('input', { name: 'PatientID' }),
    AccessionNumber: h('input', { name: 'AccessionNumber' }),
    from: h('input', { name: 'from', type: 'date' }),
    until: h('input', { name: 'until', type: 'date' }),
    ModalitiesInStudy: h(
      'select',
      { name: 'ModalitiesInStudy' },
      h('option', { value: '' }, 'Any'),
      MODALITIES.map(modality => h('option', { value: modality }, modality)),
    ),
    StudyDescription: h('input', { name: 'StudyDescription', placeholder: '*chest*' }),
    InstitutionName: h('input', { name: 'InstitutionName' }),
    ReferringPhysicianName: h('input', { name: 'ReferringPhysicianName' }),
  };
  for (const [name, input] of Object.entries(inputs)) input.value = state.filters[name] || '';
  const pageSize = h(
    'select',
    { name: 'size', 'aria-label': 'Studies per page' },
    PAGE_SIZES.map(size => h('option', { value: size, selected: size === state.size }, `${size} per page`)),
  );
  const results = h('div', { class: 'results', 'aria-live': 'polite' });

  const setRange = days => event => {
    event.preventDefault();
    if (days === null) {
      inputs.from.value = '';
      inputs.until.value = '';
    } else {
      const today = new Date();
      const start = new Date(today);
      start.setDate(today.getDate() - days[0]);
      const end = new Date(today);
      end.setDate(today.getDate() - days[1]);
      inputs.from.value = isoDate(start);
      inputs.until.value = isoDate(end);
    }
    search(0);
  };

  async function search(offset) {
    state.offset = offset;
    state.size = Number(pageSize.value);
    state.filters = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()]));
    window.sessionStorage.setItem('webpacs.search', JSON.stringify({ filters: state.filters, size: state.size }));
    const params = [];
    for (const name of ['PatientName', 'PatientID', 'AccessionNumber', 'ModalitiesInStudy', 'StudyDescription', 'InstitutionName', 'ReferringPhysicianName']) {
      if (state.filters[name]) params.push([name, state.filters[name]]);
    }
    const from = inputToDA(state.filters.from);
    const until = inputToDA(state.filters.until);
    if (from || until) params.push(['StudyDate', from === until ? from : `${from}-${until}`]);
    for (const tag of INCLUDE) params.push(['includefield', tag]);
    // One more than a page tells whether a next page exists, without counting every match.
    params.push(['limit', String(state.size + 1)], ['offset', String(offset)]);
    replace(results, h('p', { class: 'muted' }, 'Searching…'));
    try {
      const rows = await api.qido('/studies', params);
      state.more = rows.length > state.size;
      state.rows = rows.slice(0, state.size);
      renderResults();
    } catch (error) {
      replace(results, h('p', { class: 'error', role: 'alert' }, `Search failed: ${error.message}`));
    }
  }

  function sortedRows() {
    if (!state.sort) return state.rows;
    const { key, direction } = state.sort;
    const column = COLUMNS.find(candidate => candidate.key === key);
    const value = row => (column.numeric ? Number(first(row, key)) || 0 : cellText(row, column).toLowerCase());
    return [...state.rows].sort((a, b) => (value(a) < value(b) ? -direction : value(a) > value(b) ? direction : 0));
  }

  function sortBy(key) {
    const direction = state.sort && state.sort.key === key ? -state.sort.direction : 1;
    state.sort = { key, direction };
    renderResults();
    const button = results.querySelector(`button[data-key="${key}"]`);
    if (button) button.focus();
  }

  function renderResults() {
    const start = state.offset + 1;
    const end = state.offset + state.rows.length;
    const pager = h(
      'div',
      { class: 'pager' },
      h('span', {}, state.rows.length ? `Studies ${start}–${end}` : 'No study matches.'),
      h('button', { type: 'button', disabled: state.offset === 0, onclick: () => search(Math.max(0, state.offset - state.size)) }, 'Previous'),
      h('button', { type: 'button', disabled: !state.more, onclick: () => search(state.offset + state.size) }, 'Next'),
    );
    const header = h(
      'tr',
      {},
      COLUMNS.map(column => {
        const sorted = state.sort && state.sort.key === column.key;
        return h(
          'th',
          { scope: 'col', 'aria-sort': sorted ? (state.sort.direction > 0 ? 'ascending' : 'descending') : null, class: column.numeric ? 'num' : null },
          h(
            'button',
            { type: 'button', class: 'sort', dataset: { key: column.key }, onclick: () => sortBy(column.key), title: 'Sort this page' },
            column.title,
            sorted ? (state.sort.direction > 0 ? ' ▲' : ' ▼') : '',
          ),
        );
      }),
      h('th', { scope: 'col' }, 'Actions'),
    );
    const body = sortedRows().map(row => studyRow(row));
    replace(
      results,
      pager,
      h('div', { class: 'table-wrap' }, h('table', { class: 'studies' }, h('thead', {}, header), h('tbody', {}, body))),
    );
  }

  function studyRow(row) {
    const uid = first(row, 'StudyInstanceUID');
    const cells = COLUMNS.map(column =>
      h('td', { class: column.numeric ? 'num' : null, 'data-label': column.title }, cellText(row, column)),
    );
    return h('tr', { dataset: { uid } }, cells, h('td', { class: 'row-actions' }, actions(row, uid)));
  }

  function actions(row, uid) {
    const label = `${first(row, 'PatientName') || 'study'} ${formatDate(first(row, 'StudyDate'))}`.trim();
    const can = permission => principal.permissions.includes(permission);
    return [
      h('a', { class: 'button primary', href: `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`, 'aria-label': `Open ${label} in the viewer` }, 'Open'),
      h('button', { type: 'button', onclick: () => download(uid, label), 'aria-label': `Download ${label}` }, 'Download'),
      h('button', { type: 'button', onclick: () => attachmentsDialog(uid, label, can('store')), 'aria-label': `Reports of ${label}` }, 'Reports'),
      can('share') ? h('button', { type: 'button', onclick: () => shareDialog(uid, label), 'aria-label': `Share ${label}` }, 'Share') : null,
      can('send') ? h('button', { type: 'button', onclick: () => sendDialog(uid, label), 'aria-label': `Send ${label}` }, 'Send') : null,
      can('edit') ? h('button', { type: 'button', onclick: () => editDialog(uid, label, () => search(state.offset)), 'aria-label': `Edit ${label}` }, 'Edit') : null,
      can('delete') ? h('button', { type: 'button', class: 'danger', onclick: () => remove(uid, label), 'aria-label': `Delete ${label}` }, 'Delete') : null,
    ];
  }

  async function remove(uid, label) {
    const sure = await confirmAction('Delete this study?', `${label} (${uid}) and all its images will be deleted for everyone. Unless the server keeps deleted studies in its recycle bin, this cannot be undone.`);
    if (!sure) return;
    try {
      await api.request(`/dicomweb/studies/${encodeURIComponent(uid)}`, { method: 'DELETE' });
      announce(`Deleted ${label}.`);
      search(state.offset);
    } catch (error) {
      announce(`Not deleted: ${error.message}`, 'error');
    }
  }

  replace(
    container,
    h(
      'section',
      { class: 'card' },
      h('h1', {}, 'Studies'),
      h(
        'form',
        {
          class: 'search',
          role: 'search',
          onsubmit: event => {
            event.preventDefault();
            state.sort = null;
            search(0);
          },
        },
        h(
          'div',
          { class: 'grid' },
          field('Patient name', inputs.PatientName, '* and ? are wildcards'),
          field('Patient ID', inputs.PatientID),
          field('Accession', inputs.AccessionNumber),
          field('Modality', inputs.ModalitiesInStudy),
          field('Description', inputs.StudyDescription),
          field('Institution', inputs.InstitutionName),
          field('Referring physician', inputs.ReferringPhysicianName),
          field('Study date from', inputs.from),
          field('until', inputs.until),
        ),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'submit', class: 'primary' }, 'Search'),
          h('span', { class: 'shortcuts', role: 'group', 'aria-label': 'Study date' },
            h('button', { type: 'button', onclick: setRange([0, 0]) }, 'Today'),
            h('button', { type: 'button', onclick: setRange([1, 1]) }, 'Yesterday'),
            h('button', { type: 'button', onclick: setRange([6, 0]) }, 'Last 7 days'),
            h('button', { type: 'button', onclick: setRange(null) }, 'Any date'),
          ),
          pageSize,
        ),
      ),
      results,
    ),
  );
  pageSize.addEventListener('change', () => search(0));
  await search(0);
}

function cellText(row, column) {
  if (column.all) return values(row, column.key).join(', ');
  const value = first(row, column.key);
  return column.format ? column.format(value) : value;
}

function isoDate(date) {
  const da = toDA(date);
  return `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}`;
}

/** The whole study as a zip (WADO-RS with Accept: application/zip), saved by the browser. */
async function download(uid, label) {
  announce(`Preparing ${label} for download…`);
  try {
    const response = await api.request(`/dicomweb/studies/${encodeURIComponent(uid)}`, {
      headers: { Accept: 'application/zip' },
      raw: true,
    });
    saveBlob(await response.blob(), `${uid}.zip`);
    announce(`Downloaded ${label}.`);
  } catch (error) {
    announce(`Download failed: ${error.message}`, 'error');
  }
}
