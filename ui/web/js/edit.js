// Study management for the `edit` permission: change patient/study attributes in every instance
// (PATCH /api/studies/{study}) and move a series to another study (POST .../series/{series}/move).

import * as api from './api.js';
import { TAG, formatDate, inputToDA, values } from './dicom.js';
import { announce, dialog, field, h, replace, table } from './dom.js';

/** The attributes PATCH /api/studies/{study} changes, with their labels (StudyChanges in the spec). */
const EDITABLE = [
  ['PatientName', 'Patient name', 'FAMILY^GIVEN'],
  ['PatientID', 'Patient ID'],
  ['IssuerOfPatientID', 'Issuer of patient ID'],
  ['PatientBirthDate', 'Birth date'],
  ['PatientSex', 'Sex'],
  ['AccessionNumber', 'Accession'],
  ['StudyDescription', 'Description'],
  ['ReferringPhysicianName', 'Referring physician', 'FAMILY^GIVEN'],
];
const SEXES = [['', 'Unknown'], ['F', 'F'], ['M', 'M'], ['O', 'O']];

/** A DICOM JSON value as the text DICOM stores (person names in their "^" form). */
function raw(dataset, keyword) {
  const value = values(dataset, keyword)[0];
  if (value === undefined || value === null) return '';
  return typeof value === 'object' && 'Alphabetic' in value ? value.Alphabetic : String(value);
}

function control(keyword, placeholder, value) {
  if (keyword === 'PatientSex') {
    return h('select', { name: keyword }, SEXES.map(([code, text]) => h('option', { value: code, selected: code === value }, text)));
  }
  if (keyword === 'PatientBirthDate') return h('input', { name: keyword, type: 'date', value: formatDate(value) });
  return h('input', { name: keyword, value, placeholder });
}

/** The edit dialog of study `uid`; `changed()` runs after a successful change. */
export async function editDialog(uid, label, changed) {
  const [study] = await api.qido('/studies', [['StudyInstanceUID', uid], ['includefield', 'all']]);
  if (!study) {
    announce(`${label} is no longer there.`, 'error');
    return;
  }
  let edited = false;
  await dialog(`Edit ${label}`, close => {
    const problem = h('p', { class: 'error', role: 'alert' });
    const before = Object.fromEntries(EDITABLE.map(([keyword]) => [keyword, raw(study, keyword)]));
    const inputs = Object.fromEntries(EDITABLE.map(([keyword, , hint]) => [keyword, control(keyword, hint, before[keyword])]));
    const save = async event => {
      event.preventDefault();
      problem.textContent = '';
      const changes = {};
      for (const [keyword, input] of Object.entries(inputs)) {
        const value = keyword === 'PatientBirthDate' ? inputToDA(input.value) : input.value.trim();
        if (value !== before[keyword]) changes[keyword] = value;
      }
      if (!Object.keys(changes).length) {
        problem.textContent = 'Nothing changed.';
        return;
      }
      try {
        const result = await api.request(`/api/studies/${encodeURIComponent(uid)}`, { method: 'PATCH', json: changes });
        announce(`Saved ${label}: ${result.instances} instance(s) rewritten.`);
        edited = true;
        close(true);
      } catch (error) {
        problem.textContent = `Not saved: ${error.message}`;
      }
    };
    const seriesPlace = h('div', {});
    loadSeries(uid, seriesPlace, () => {
      edited = true;
    });
    return h(
      'div',
      {},
      h(
        'form',
        { class: 'edit-form', onsubmit: save },
        problem,
        h('p', { class: 'muted' }, 'The change is written into every instance of the study and recorded in the audit log.'),
        h('div', { class: 'grid' }, EDITABLE.map(([keyword, text]) => field(text, inputs[keyword]))),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save changes'), h('button', { type: 'button', onclick: () => close(null) }, 'Cancel')),
      ),
      h('h3', {}, 'Move a series to another study'),
      seriesPlace,
    );
  });
  if (edited) changed();
}

async function loadSeries(uid, place, moved) {
  const include = ['SeriesDescription', 'NumberOfSeriesRelatedInstances'].map(keyword => ['includefield', TAG[keyword]]);
  try {
    const series = await api.qido(`/studies/${encodeURIComponent(uid)}/series`, include);
    const target = h('input', { name: 'to_study', placeholder: '1.2.840...', autocomplete: 'off', spellcheck: 'false' });
    const problem = h('p', { class: 'error', role: 'alert' });
    const move = async item => {
      problem.textContent = '';
      const seriesUid = values(item, 'SeriesInstanceUID')[0];
      const to = target.value.trim();
      if (!to) {
        problem.textContent = 'Enter the Study Instance UID of the study that receives the series.';
        target.focus();
        return;
      }
      try {
        const result = await api.request(`/api/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(seriesUid)}/move`, { method: 'POST', json: { to_study: to } });
        announce(`Moved series ${seriesUid} (${result.instances} instance(s)) to study ${result.to_study_uid}.`);
        moved();
        loadSeries(uid, place, moved);
      } catch (error) {
        problem.textContent = `Not moved: ${error.message}`;
      }
    };
    replace(
      place,
      problem,
      field('Target study UID', target),
      table(
        [
          ['Series', item => `${values(item, 'SeriesNumber')[0] ?? ''} ${values(item, 'Modality')[0] || ''}`.trim()],
          ['Description', item => values(item, 'SeriesDescription')[0] || ''],
          ['Images', item => values(item, 'NumberOfSeriesRelatedInstances')[0] ?? ''],
          ['', item => h('button', { type: 'button', onclick: () => move(item), 'aria-label': `Move series ${values(item, 'SeriesNumber')[0] ?? ''}` }, 'Move')],
        ],
        series,
        'The study has no series.',
      ),
    );
  } catch (error) {
    replace(place, h('p', { class: 'error' }, `Series could not be listed: ${error.message}`));
  }
}
