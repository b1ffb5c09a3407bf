// Forwarding administration: rules (/api/forwarding-rules, admins) and the job queue
// (/api/forwarding-jobs: state, attempts, last error, progress; retry, cancel).

import * as api from './api.js';
import { announce, confirmAction, failure, field, formatTime, h, replace, section, table } from './dom.js';
import { FINISHED, destination, progressOf } from './jobs.js';

// The rule conditions that take a list of alternatives (`*` and `?` allowed), as the API names them.
const LIST_CONDITIONS = [
  ['modality', 'Modalities'],
  ['calling_ae', 'Calling AE titles'],
  ['referring_physician', 'Referring physicians'],
  ['institution', 'Institutions'],
  ['study_description', 'Study descriptions'],
  ['transfer_syntax', 'Transfer syntaxes (as stored)'],
];
const JOB_STATES = ['pending', 'running', 'done', 'failed', 'cancelled'];
const PAGE = 50;

const list = text => text.split(',').map(value => value.trim()).filter(Boolean);

function conditionText(conditions) {
  const parts = Object.entries(conditions || {}).map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(', ') : value}`);
  return parts.length ? parts.join('; ') : 'everything';
}

// --- Rules ---------------------------------------------------------------------------------------

async function rulesView(container) {
  const listPlace = h('div');
  const formPlace = h('div');

  function ruleForm(rule) {
    const conditions = (rule && rule.conditions) || {};
    const name = h('input', { name: 'name', required: true, maxlength: 200, value: rule ? rule.name : '' });
    const trigger = h('select', { name: 'trigger' },
      h('option', { value: 'stored', selected: rule && rule.trigger === 'stored' }, 'Each stored instance'),
      h('option', { value: 'stable', selected: rule && rule.trigger === 'stable' }, 'Study complete (stable)'));
    const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: rule ? rule.enabled : true });
    const ae = h('input', { name: 'ae_title', maxlength: 16, value: (rule && rule.ae_title) || '' });
    const url = h('input', { name: 'dicomweb_url', type: 'url', value: (rule && rule.dicomweb_url) || '' });
    const token = h('input', { name: 'dicomweb_token', type: 'password', autocomplete: 'off' });
    const syntax = h('input', { name: 'transfer_syntax', value: (rule && rule.transfer_syntax) || '', placeholder: '1.2.840.10008.1.2.4.80' });
    const lists = Object.fromEntries(
      LIST_CONDITIONS.map(([key]) => [key, h('input', { name: key, value: [].concat(conditions[key] || []).join(', ') })]),
    );
    const timeWindow = h('input', { name: 'time_window', placeholder: '20:00-06:00', value: conditions.time_window || '' });
    const zone = h('input', { name: 'time_zone', placeholder: 'UTC', value: conditions.time_zone || '' });
    const problem = h('p', { class: 'error', role: 'alert' });
    const submit = async event => {
      event.preventDefault();
      const chosen = {};
      for (const [key, input] of Object.entries(lists)) if (list(input.value).length) chosen[key] = list(input.value);
      if (timeWindow.value.trim()) chosen.time_window = timeWindow.value.trim();
      if (zone.value.trim()) chosen.time_zone = zone.value.trim();
      const body = {
        name: name.value.trim(), trigger: trigger.value, enabled: enabled.checked, conditions: chosen,
        ae_title: ae.value.trim() || null, dicomweb_url: url.value.trim() || null,
        dicomweb_token: token.value || null, transfer_syntax: syntax.value.trim() || null,
      };
      try {
        if (rule) await api.request(`/api/forwarding-rules/${rule.id}`, { method: 'PUT', json: body });
        else await api.request('/api/forwarding-rules', { method: 'POST', json: body });
        announce(`Saved rule ${body.name}.`);
        show(null);
        load();
      } catch (error) {
        problem.textContent = `Not saved: ${error.message}`;
      }
    };
    return h('form', { class: 'rule-form', onsubmit: submit }, problem,
      h('div', { class: 'grid' }, field('Rule name', name), field('Trigger', trigger),
        field('To DICOM node (AE title)', ae), field('Or to DICOMweb URL', url),
        field('DICOMweb token', token, rule && rule.has_dicomweb_token ? 'Set; enter it again to keep it.' : 'Optional bearer token.'),
        field('Transcode to', syntax, 'A transfer syntax UID; empty: as stored.')),
      h('fieldset', {}, h('legend', {}, 'Conditions (comma-separated alternatives, * and ? allowed)'),
        h('div', { class: 'grid' }, LIST_CONDITIONS.map(([key, text]) => field(text, lists[key])),
          field('Time window', timeWindow, 'HH:MM-HH:MM'), field('Time zone', zone, 'IANA name, e.g. Europe/Paris'))),
      h('label', { class: 'check' }, enabled, ' Enabled'),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, rule ? 'Save rule' : 'Add rule'),
        rule ? h('button', { type: 'button', onclick: () => show(null) }, 'Cancel') : null));
  }
  function show(rule) {
    replace(formPlace, h('h2', {}, rule ? `Edit rule ${rule.name}` : 'New rule'), ruleForm(rule));
  }
  async function load() {
    try {
      const rules = await api.request('/api/forwarding-rules');
      replace(listPlace, table(
        [
          ['Name', rule => rule.name],
          ['Trigger', rule => rule.trigger],
          ['Destination', rule => destination(rule) + (rule.transfer_syntax ? ` (as ${rule.transfer_syntax})` : '')],
          ['Conditions', rule => conditionText(rule.conditions)],
          ['Enabled', rule => (rule.enabled ? 'yes' : 'no')],
          ['Actions', rule => [
            h('button', { type: 'button', onclick: () => show(rule), 'aria-label': `Edit rule ${rule.name}` }, 'Edit'),
            h('button', { type: 'button', class: 'danger', onclick: () => remove(rule), 'aria-label': `Remove rule ${rule.name}` }, 'Remove'),
          ]],
        ],
        rules,
        'No forwarding rule.',
      ));
    } catch (error) {
      failure(listPlace, error, 'Rules could not be listed');
    }
  }
  async function remove(rule) {
    if (!(await confirmAction(`Remove rule ${rule.name}?`, 'Jobs it already queued stay in the queue.', 'Remove'))) return;
    try {
      await api.request(`/api/forwarding-rules/${rule.id}`, { method: 'DELETE' });
      load();
    } catch (error) {
      announce(`Not removed: ${error.message}`, 'error');
    }
  }
  replace(container, section('Forwarding rules', listPlace, formPlace));
  show(null);
  await load();
}

// --- Jobs ----------------------------------------------------------------------------------------

async function jobsView(container, principal) {
  const state = h('select', { name: 'state' }, h('option', { value: '' }, 'Any'), JOB_STATES.map(name => h('option', { value: name }, name)));
  const study = h('input', { name: 'study_uid', autocomplete: 'off' });
  const results = h('div');
  const mayCancel = principal.permissions.includes('administer');
  let offset = 0;
  let timer = null;
  // The opening load, a Filter click and the refresh can overlap; only the newest fills the table.
  let newest = 0;

  async function act(job, verb) {
    try {
      await api.request(`/api/forwarding-jobs/${job.id}/${verb}`, { method: 'POST' });
      announce(`Job ${job.id}: ${verb === 'retry' ? 'due now' : 'cancelled'}.`);
      load(offset);
    } catch (error) {
      announce(`Job ${job.id} not changed: ${error.message}`, 'error');
    }
  }
  async function load(start) {
    const search = ++newest;
    offset = start;
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: String(PAGE + 1), offset: String(offset) });
    if (state.value) params.set('state', state.value);
    if (study.value.trim()) params.set('study_uid', study.value.trim());
    try {
      const jobs = await api.request(`/api/forwarding-jobs?${params}`);
      if (search !== newest) return;
      const page = jobs.slice(0, PAGE);
      replace(
        results,
        h('div', { class: 'pager' },
          h('span', {}, page.length ? `Jobs ${offset + 1}–${offset + page.length}` : 'No job matches.'),
          h('button', { type: 'button', disabled: offset === 0, onclick: () => load(Math.max(0, offset - PAGE)) }, 'Previous'),
          h('button', { type: 'button', disabled: jobs.length <= PAGE, onclick: () => load(offset + PAGE) }, 'Next')),
        table(
          [
            ['Job', job => String(job.id)],
            ['State', job => job.state],
            ['Study', job => job.study_instance_uid],
            ['To', job => destination(job)],
            ['Progress', job => progressOf(job)],
            ['Attempts', job => String(job.attempts)],
            ['Last error', job => job.last_error || ''],
            ['Next attempt', job => (FINISHED.includes(job.state) ? '' : formatTime(job.next_attempt_at))],
            ['By', job => (job.rule_id ? `rule ${job.rule_id}` : job.requested_by)],
            ['Actions', job => [
              job.state === 'done' ? null : h('button', { type: 'button', onclick: () => act(job, 'retry'), 'aria-label': `Retry job ${job.id}` }, 'Retry'),
              mayCancel && !FINISHED.includes(job.state)
                ? h('button', { type: 'button', class: 'danger', onclick: () => act(job, 'cancel'), 'aria-label': `Cancel job ${job.id}` }, 'Cancel')
                : null,
            ]],
          ],
          page,
          '',
        ),
      );
      // Unfinished jobs move on their own: read the page again while one is shown.
      if (page.some(job => !FINISHED.includes(job.state)) && results.isConnected) timer = setTimeout(() => results.isConnected && load(offset), 2000);
    } catch (error) {
      if (search === newest) failure(results, error, 'Jobs could not be listed');
    }
  }
  replace(
    container,
    section(
      'Forwarding jobs',
      h('form', { role: 'search', onsubmit: event => { event.preventDefault(); load(0); } },
        h('div', { class: 'grid' }, field('State', state), field('Study UID', study)),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'))),
      results,
    ),
  );
  await load(0);
}

/** The forwarding views, for the router in app.js (`unfiltered`: accounts without a study filter). */
export const forwardingViews = [
  { route: 'admin/forwarding', title: 'Forwarding', needs: 'administer', render: rulesView },
  { route: 'jobs', title: 'Jobs', needs: 'send', unfiltered: true, render: jobsView },
];
