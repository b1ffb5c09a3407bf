// Keeping and removing studies: retention policies with their dry run, the recycle bin, and
// merging two patients (admins, or accounts without a study filter where the API asks for one).

import * as api from './api.js';
import { formatDate } from './dicom.js';
import { announce, confirmAction, failure, field, formatTime, h, replace, section, table } from './dom.js';

// --- Retention -----------------------------------------------------------------------------------

async function retentionView(container) {
  const listPlace = h('div');
  const previewPlace = h('div', { 'aria-live': 'polite' });
  const name = h('input', { name: 'name', required: true, maxlength: 200 });
  const days = h('input', { name: 'max_age_days', type: 'number', min: 1, max: 36500, required: true, value: 3653 });
  const basis = h('select', { name: 'age_basis' }, h('option', { value: 'study_date' }, 'Study date'), h('option', { value: 'received' }, 'Received by the archive'));
  const modality = h('input', { name: 'modality', maxlength: 16, placeholder: 'every modality' });
  const asOf = h('input', { name: 'as_of', type: 'date' });
  const problem = h('p', { class: 'error', role: 'alert' });

  async function load() {
    try {
      const policies = await api.request('/api/retention-policies');
      replace(listPlace, table(
        [
          ['Name', policy => policy.name],
          ['Deletes after', policy => `${policy.max_age_days} days (${policy.age_basis === 'received' ? 'since received' : 'since the study date'})`],
          ['Modality', policy => policy.modality || 'any'],
          ['Enabled', policy => (policy.enabled ? 'yes' : 'no')],
          ['Since', policy => formatTime(policy.created_at)],
          ['Actions', policy => h('button', { type: 'button', class: 'danger', onclick: () => remove(policy), 'aria-label': `Remove policy ${policy.name}` }, 'Remove')],
        ],
        policies,
        'No retention policy: nothing is deleted by age.',
      ));
    } catch (error) {
      failure(listPlace, error, 'Policies could not be listed');
    }
  }
  async function remove(policy) {
    if (!(await confirmAction(`Remove policy ${policy.name}?`, 'Studies it would delete are kept from now on.', 'Remove'))) return;
    try {
      await api.request(`/api/retention-policies/${policy.id}`, { method: 'DELETE' });
      load();
    } catch (error) {
      announce(`Not removed: ${error.message}`, 'error');
    }
  }
  async function create(event) {
    event.preventDefault();
    problem.textContent = '';
    const body = { name: name.value.trim(), max_age_days: Number(days.value), age_basis: basis.value, modality: modality.value.trim() };
    try {
      await api.request('/api/retention-policies', { method: 'POST', json: body });
      announce(`Added policy ${body.name}.`);
      event.target.reset();
      load();
    } catch (error) {
      problem.textContent = `Not added: ${error.message}`;
    }
  }
  async function preview(event) {
    event.preventDefault();
    const query = asOf.value ? `?as_of=${encodeURIComponent(asOf.value)}` : '';
    try {
      const run = await api.request(`/api/retention/preview${query}`);
      replace(previewPlace,
        h('p', {}, `A run at ${formatTime(run.as_of)} would delete ${run.studies.length} stud${run.studies.length === 1 ? 'y' : 'ies'}.`),
        run.skipped.length ? h('p', { class: 'muted' }, `Skipped: ${run.skipped.join('; ')}`) : null,
        table(
          [
            ['Study', study => study.study_instance_uid],
            ['Policy', study => study.policy],
            ['Study date', study => formatDate(study.study_date)],
            ['Received', study => formatTime(study.received_at)],
          ],
          run.studies,
          'Nothing to delete.',
        ));
    } catch (error) {
      failure(previewPlace, error, 'The preview failed');
    }
  }
  replace(
    container,
    section(
      'Retention',
      listPlace,
      h('h2', {}, 'New policy'),
      h('form', { onsubmit: create }, problem,
        h('div', { class: 'grid' }, field('Policy name', name), field('Delete after (days)', days), field('Counted from', basis), field('Modality', modality)),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Add policy'))),
      h('h2', {}, 'Dry run'),
      h('p', { class: 'muted' }, 'The server applies the policies on its schedule; this lists exactly what a run deletes, and deletes nothing. Studies flagged "keep" are spared.'),
      h('form', { onsubmit: preview },
        h('div', { class: 'grid' }, field('As of', asOf, 'Empty: now.')),
        h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Preview'))),
      previewPlace,
    ),
  );
  await load();
}

// --- Recycle bin ---------------------------------------------------------------------------------

async function recycleBinView(container) {
  const place = h('div');
  async function load() {
    try {
      const studies = await api.request('/api/recycle-bin');
      replace(place, table(
        [
          ['Patient', study => `${study.patient_name} (${study.patient_id})`],
          ['Date', study => formatDate(study.study_date)],
          ['Description', study => study.study_description],
          ['Accession', study => study.accession_number],
          ['Images', study => String(study.instances)],
          ['Deleted', study => `${formatTime(study.recycled_at)} by ${study.recycled_by}`],
          ['Actions', study => [
            h('button', { type: 'button', onclick: () => restore(study), 'aria-label': `Restore ${study.patient_name} ${study.study_date}` }, 'Restore'),
            h('button', { type: 'button', class: 'danger', onclick: () => purge(study), 'aria-label': `Purge ${study.patient_name} ${study.study_date}` }, 'Purge'),
          ]],
        ],
        studies,
        'The recycle bin is empty. Deleted studies wait here when the server keeps them (WEBPACS_RECYCLE_DAYS); otherwise deletion is immediate.',
      ));
    } catch (error) {
      failure(place, error, 'The recycle bin could not be read');
    }
  }
  async function restore(study) {
    try {
      await api.request(`/api/recycle-bin/${encodeURIComponent(study.study_uid)}/restore`, { method: 'POST' });
      announce(`Restored ${study.patient_name} ${formatDate(study.study_date)}.`);
      load();
    } catch (error) {
      announce(`Not restored: ${error.message}`, 'error');
    }
  }
  async function purge(study) {
    const sure = await confirmAction('Purge this study now?', `${study.patient_name} (${study.study_uid}) and its ${study.instances} image(s) are deleted for good.`, 'Purge');
    if (!sure) return;
    try {
      const result = await api.request(`/api/recycle-bin/${encodeURIComponent(study.study_uid)}`, { method: 'DELETE' });
      announce(`Purged ${result.deleted_instances} instance(s).`);
      load();
    } catch (error) {
      announce(`Not purged: ${error.message}`, 'error');
    }
  }
  replace(container, section('Recycle bin', place));
  await load();
}

// --- Merge patients ------------------------------------------------------------------------------

async function mergeView(container) {
  const fromId = h('input', { name: 'from_id', required: true, maxlength: 64 });
  const fromIssuer = h('input', { name: 'from_issuer' });
  const intoId = h('input', { name: 'into_id', required: true, maxlength: 64 });
  const intoIssuer = h('input', { name: 'into_issuer' });
  const problem = h('p', { class: 'error', role: 'alert' });
  const result = h('div', { 'aria-live': 'polite' });
  const merge = async event => {
    event.preventDefault();
    problem.textContent = '';
    const from = { PatientID: fromId.value.trim(), IssuerOfPatientID: fromIssuer.value.trim() };
    const into = { PatientID: intoId.value.trim(), IssuerOfPatientID: intoIssuer.value.trim() };
    const sure = await confirmAction('Merge these patients?', `Every study of patient ${from.PatientID} takes the name, ID, birth date and sex of patient ${into.PatientID}.`, 'Merge');
    if (!sure) return;
    try {
      const merged = await api.request('/api/patients/merge', { method: 'POST', json: { from, into } });
      replace(result, h('p', {}, `Merged: ${merged.studies.length} stud${merged.studies.length === 1 ? 'y' : 'ies'} now belong to ${into.PatientID}.`));
      announce('Patients merged.');
    } catch (error) {
      problem.textContent = `Not merged: ${error.message}`;
    }
  };
  replace(
    container,
    section(
      'Merge patients',
      h('p', { class: 'muted' }, 'Every study of the first patient takes the patient attributes of the second, in every instance; the change is audited.'),
      h('form', { onsubmit: merge }, problem,
        h('fieldset', {}, h('legend', {}, 'Merge this patient'), h('div', { class: 'grid' }, field('Patient ID to merge', fromId), field('Its issuer', fromIssuer))),
        h('fieldset', {}, h('legend', {}, 'Into this patient'), h('div', { class: 'grid' }, field('Patient ID to keep', intoId), field('Issuer', intoIssuer))),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Merge patients'))),
      result,
    ),
  );
}

/** These views, for the router in app.js (`unfiltered`: accounts without a study filter). */
export const recordsViews = [
  { route: 'recycle-bin', title: 'Recycle bin', needs: 'delete', unfiltered: true, render: recycleBinView },
  { route: 'admin/merge', title: 'Merge patients', needs: 'edit', unfiltered: true, render: mergeView },
  { route: 'admin/retention', title: 'Retention', needs: 'administer', render: retentionView },
];
