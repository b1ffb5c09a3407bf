// Administration: users and roles with study filters, API tokens, DICOM nodes, audit log, status.

import * as api from './api.js';
import { announce, confirmAction, copyText, failure, field, formatBytes, formatTime, h, replace, saveBlob, section, table } from './dom.js';

// auth.audit.Action: what the audit log records.
const AUDIT_ACTIONS = ['search', 'view', 'download', 'store', 'delete', 'share', 'share-revoke', 'share-use', 'login', 'logout', 'administer', 'send'];
// auth.principals.Role: every role a user or token may hold.
const ROLES = ['admin', 'manager', 'radiologist', 'referring', 'viewer', 'uploader', 'service', 'monitoring'];
// The study-level attributes a user's study filter may restrict (values are ORed, keys ANDed).
const FILTER_KEYS = [
  ['ReferringPhysicianName', 'Referring physicians'],
  ['InstitutionName', 'Institutions'],
  ['StudyDescription', 'Study descriptions'],
  ['ModalitiesInStudy', 'Modalities'],
];

function roleSelect(selected) {
  return h('select', { name: 'role' }, ROLES.map(role => h('option', { value: role, selected: role === selected }, role)));
}


// --- Users ---------------------------------------------------------------------------------------

function filterText(filter) {
  const parts = Object.entries(filter || {}).filter(([, list]) => list && list.length);
  return parts.length ? parts.map(([key, list]) => `${key}: ${list.join(', ')}`).join('; ') : 'all studies';
}

function userForm(user, done) {
  const username = h('input', { name: 'username', required: true, value: user ? user.username : '', readonly: Boolean(user), autocomplete: 'off' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: !user, minlength: 8 });
  const role = roleSelect(user ? user.role : 'viewer');
  const filters = Object.fromEntries(
    FILTER_KEYS.map(([key]) => [key, h('input', { name: key, value: ((user && user.study_filter && user.study_filter[key]) || []).join(', ') })]),
  );
  const problem = h('p', { class: 'error', role: 'alert' });
  const submit = async event => {
    event.preventDefault();
    const studyFilter = {};
    for (const [key, input] of Object.entries(filters)) {
      const list = input.value.split(',').map(value => value.trim()).filter(Boolean);
      if (list.length) studyFilter[key] = list;
    }
    const body = { role: role.value, study_filter: studyFilter };
    if (password.value) body.password = password.value;
    try {
      if (user) await api.request(`/api/users/${encodeURIComponent(user.username)}`, { method: 'PATCH', json: body });
      else await api.request('/api/users', { method: 'POST', json: { username: username.value.trim(), ...body } });
      announce(user ? `Saved ${user.username}.` : `Created ${username.value.trim()}.`);
      done(true);
    } catch (error) {
      problem.textContent = `Not saved: ${error.message}`;
    }
  };
  return h(
    'form',
    { class: 'user-form', onsubmit: submit },
    problem,
    h(
      'div',
      { class: 'grid' },
      field('User name', username),
      field(user ? 'New password (leave empty to keep)' : 'Password', password),
      field('Role', role),
    ),
    h('fieldset', {}, h('legend', {}, 'Study filter: the studies this user may see (empty: all)'),
      h('div', { class: 'grid' }, FILTER_KEYS.map(([key, label]) => field(label, filters[key], 'Comma-separated; * and ? are wildcards')))),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, user ? 'Save' : 'Create user'),
      user ? h('button', { type: 'button', onclick: () => done(false) }, 'Cancel') : null),
  );
}

async function usersView(container) {
  const listPlace = h('div');
  const formPlace = h('div');
  const showForm = user => {
    replace(formPlace, h('h2', {}, user ? `Edit ${user.username}` : 'New user'), userForm(user, changed => {
      showForm(null);
      if (changed) load();
    }));
  };
  async function load() {
    try {
      const users = await api.request('/api/users');
      replace(
        listPlace,
        table(
          [
            ['User', user => user.username],
            ['Role', user => user.role],
            ['Study filter', user => filterText(user.study_filter)],
            ['State', user => (user.disabled ? 'disabled' : 'active')],
            ['Last login', user => formatTime(user.last_login_at) || 'never'],
            ['Actions', user => [
              h('button', { type: 'button', onclick: () => showForm(user), 'aria-label': `Edit ${user.username}` }, 'Edit'),
              h('button', { type: 'button', onclick: () => setDisabled(user, !user.disabled), 'aria-label': `${user.disabled ? 'Enable' : 'Disable'} ${user.username}` }, user.disabled ? 'Enable' : 'Disable'),
              h('button', { type: 'button', class: 'danger', onclick: () => remove(user), 'aria-label': `Delete ${user.username}` }, 'Delete'),
            ]],
          ],
          users,
          'No user yet.',
        ),
      );
    } catch (error) {
      failure(listPlace, error, 'Users could not be listed');
    }
  }
  async function setDisabled(user, disabled) {
    try {
      await api.request(`/api/users/${encodeURIComponent(user.username)}`, { method: 'PATCH', json: { disabled } });
      announce(`${user.username} is ${disabled ? 'disabled: it can no longer sign in' : 'enabled'}.`);
      load();
    } catch (error) {
      announce(`Not changed: ${error.message}`, 'error');
    }
  }
  async function remove(user) {
    if (!(await confirmAction(`Delete ${user.username}?`, 'The account and its tokens stop working at once.'))) return;
    try {
      await api.request(`/api/users/${encodeURIComponent(user.username)}`, { method: 'DELETE' });
      announce(`Deleted ${user.username}.`);
      load();
    } catch (error) {
      announce(`Not deleted: ${error.message}`, 'error');
    }
  }
  replace(container, section('Users and roles', listPlace, formPlace));
  showForm(null);
  await load();
}

// --- API tokens ----------------------------------------------------------------------------------

/** The tokens page at `path`: every API token (admin, with roles) or the user's personal ones. */
function tokensView(title, path, withRole) {
  return async container => {
    const listPlace = h('div');
    const minted = h('div', { 'aria-live': 'polite' });
    const name = h('input', { name: 'name', required: true, maxlength: 200 });
    const role = withRole ? roleSelect('viewer') : null;
    const days = h('input', { name: 'valid_days', type: 'number', min: 1, max: 36500, placeholder: 'no expiry' });
    const problem = h('p', { class: 'error', role: 'alert' });
    async function load() {
      try {
        const tokens = await api.request(path);
        replace(
          listPlace,
          table(
            [
              ['Name', token => token.name],
              ...(withRole ? [['Role', token => token.role]] : []),
              ['Created', token => formatTime(token.created_at)],
              ['Expires', token => (token.expires_at ? formatTime(token.expires_at) : 'never')],
              ['Last used', token => formatTime(token.last_used_at) || 'never'],
              ['State', token => (token.revoked_at ? `revoked ${formatTime(token.revoked_at)}` : 'active')],
              ['Actions', token => (token.revoked_at ? '' : h('button', { type: 'button', class: 'danger', onclick: () => revoke(token), 'aria-label': `Revoke ${token.name}` }, 'Revoke'))],
            ],
            tokens,
            'No API token yet.',
          ),
        );
      } catch (error) {
        failure(listPlace, error, 'Tokens could not be listed');
      }
    }
    async function revoke(token) {
      if (!(await confirmAction(`Revoke ${token.name}?`, 'Scripts and nodes using it are refused from now on.', 'Revoke'))) return;
      try {
        await api.request(`${path}/${token.id}`, { method: 'DELETE' });
        announce(`Revoked ${token.name}.`);
        load();
      } catch (error) {
        announce(`Not revoked: ${error.message}`, 'error');
      }
    }
    async function create(event) {
      event.preventDefault();
      problem.textContent = '';
      const body = { name: name.value.trim() };
      if (role) body.role = role.value;
      if (days.value) body.valid_days = Number(days.value);
      try {
        const answer = await api.request(path, { method: 'POST', json: body });
        const value = h('input', { readonly: true, value: answer.token, class: 'share-url', 'aria-label': 'New token' });
        replace(minted, h('p', {}, 'The new token, shown only now:'), h('div', { class: 'copy-row' }, value, h('button', { type: 'button', onclick: () => copyText(answer.token, value) }, 'Copy')));
        value.select();
        load();
      } catch (error) {
        problem.textContent = `No token created: ${error.message}`;
      }
    }
    replace(
      container,
      section(
        title,
        listPlace,
        h('h2', {}, 'New token'),
        h('form', { onsubmit: create }, problem, h('div', { class: 'grid' }, field('Name', name), role ? field('Role', role) : null, field('Valid for (days)', days)),
          h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create token'))),
        minted,
      ),
    );
    await load();
  };
}

// --- DICOM nodes ---------------------------------------------------------------------------------

async function nodesView(container) {
  const listPlace = h('div');
  const formPlace = h('div');
  function nodeForm(node) {
    const ae = h('input', { name: 'ae_title', required: true, maxlength: 16, value: node ? node.ae_title : '' });
    const host = h('input', { name: 'host', required: true, value: node ? node.host : '' });
    const port = h('input', { name: 'port', type: 'number', min: 1, max: 65535, required: true, value: node ? node.port : 104 });
    const description = h('input', { name: 'description', value: node ? node.description : '' });
    const allow = Object.fromEntries(['store', 'find', 'move'].map(kind => [kind, h('input', { type: 'checkbox', name: `allow_${kind}`, checked: node ? node[`allow_${kind}`] : true })]));
    const problem = h('p', { class: 'error', role: 'alert' });
    const submit = async event => {
      event.preventDefault();
      const body = {
        ae_title: ae.value.trim(), host: host.value.trim(), port: Number(port.value), description: description.value,
        allow_store: allow.store.checked, allow_find: allow.find.checked, allow_move: allow.move.checked,
      };
      try {
        if (node) await api.request(`/api/dicom-nodes/${encodeURIComponent(node.ae_title)}`, { method: 'PUT', json: body });
        else await api.request('/api/dicom-nodes', { method: 'POST', json: body });
        announce(`Saved ${body.ae_title}.`);
        show(null);
        load();
      } catch (error) {
        problem.textContent = `Not saved: ${error.message}`;
      }
    };
    const labels = { store: 'May store (C-STORE)', find: 'May query (C-FIND)', move: 'May retrieve (C-MOVE, C-GET)' };
    return h('form', { onsubmit: submit }, problem,
      h('div', { class: 'grid' }, field('AE title', ae), field('Host', host), field('Port', port), field('Description', description)),
      h('div', { class: 'checks' }, Object.entries(allow).map(([kind, box]) => h('label', {}, box, ' ', labels[kind]))),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, node ? 'Save' : 'Add node'),
        node ? h('button', { type: 'button', onclick: () => show(null) }, 'Cancel') : null));
  }
  function show(node) {
    replace(formPlace, h('h2', {}, node ? `Edit ${node.ae_title}` : 'New DICOM node'), nodeForm(node));
  }
  async function load() {
    try {
      const nodes = await api.request('/api/dicom-nodes');
      const yes = flag => (flag ? 'yes' : 'no');
      replace(listPlace, table(
        [
          ['AE title', node => node.ae_title],
          ['Address', node => `${node.host}:${node.port}`],
          ['Description', node => node.description],
          ['Store', node => yes(node.allow_store)],
          ['Query', node => yes(node.allow_find)],
          ['Retrieve', node => yes(node.allow_move)],
          ['Actions', node => [
            h('button', { type: 'button', onclick: () => show(node), 'aria-label': `Edit ${node.ae_title}` }, 'Edit'),
            h('button', { type: 'button', class: 'danger', onclick: () => remove(node), 'aria-label': `Remove ${node.ae_title}` }, 'Remove'),
          ]],
        ],
        nodes,
        'No DICOM node registered.',
      ));
    } catch (error) {
      failure(listPlace, error, 'Nodes could not be listed');
    }
  }
  async function remove(node) {
    if (!(await confirmAction(`Remove ${node.ae_title}?`, 'It can no longer associate with this archive.', 'Remove'))) return;
    try {
      await api.request(`/api/dicom-nodes/${encodeURIComponent(node.ae_title)}`, { method: 'DELETE' });
      load();
    } catch (error) {
      announce(`Not removed: ${error.message}`, 'error');
    }
  }
  replace(container, section('DICOM nodes', listPlace, formPlace));
  show(null);
  await load();
}

// --- Audit log -----------------------------------------------------------------------------------

async function auditView(container) {
  const PAGE = 50;
  const inputs = {
    user: h('input', { name: 'user' }),
    action: h('select', { name: 'action' }, h('option', { value: '' }, 'Any'), AUDIT_ACTIONS.map(action => h('option', { value: action }, action))),
    study_uid: h('input', { name: 'study_uid' }),
    since: h('input', { name: 'since', type: 'datetime-local' }),
    until: h('input', { name: 'until', type: 'datetime-local' }),
  };
  const results = h('div');
  let offset = 0;
  // The opening load and a Filter click can overlap; only the newest search may fill the table.
  let newest = 0;
  const query = extra => {
    const params = new URLSearchParams();
    for (const [name, input] of Object.entries(inputs)) {
      if (!input.value) continue;
      params.set(name, input.type === 'datetime-local' ? new Date(input.value).toISOString() : input.value.trim());
    }
    for (const [name, value] of Object.entries(extra || {})) params.set(name, value);
    return params.toString();
  };
  async function load(start) {
    const search = ++newest;
    offset = start;
    try {
      const events = await api.request(`/api/audit?${query({ limit: PAGE + 1, offset })}`);
      if (search !== newest) return;
      const page = events.slice(0, PAGE);
      replace(
        results,
        h('div', { class: 'pager' },
          h('span', {}, page.length ? `Events ${offset + 1}–${offset + page.length}` : 'No event matches.'),
          h('button', { type: 'button', disabled: offset === 0, onclick: () => load(Math.max(0, offset - PAGE)) }, 'Previous'),
          h('button', { type: 'button', disabled: events.length <= PAGE, onclick: () => load(offset + PAGE) }, 'Next')),
        table(
          [
            ['When', event => formatTime(event.at)],
            ['Who', event => `${event.actor || ''}${event.actor_kind ? ` (${event.actor_kind})` : ''}`],
            ['Action', event => event.action],
            ['Outcome', event => event.outcome],
            ['Study', event => event.study_uid || ''],
            ['From', event => event.source || ''],
            ['Detail', event => (typeof event.detail === 'string' ? event.detail : JSON.stringify(event.detail || ''))],
          ],
          page,
          '',
        ),
      );
    } catch (error) {
      if (search === newest) failure(results, error, 'The audit log could not be read');
    }
  }
  async function exportAll() {
    try {
      const response = await api.request(`/api/audit/export?${query()}`, { raw: true });
      saveBlob(await response.blob(), 'webpacs-audit.jsonl');
    } catch (error) {
      announce(`Export failed: ${error.message}`, 'error');
    }
  }
  replace(
    container,
    section(
      'Audit log',
      h('form', { role: 'search', onsubmit: event => { event.preventDefault(); load(0); } },
        h('div', { class: 'grid' }, field('User', inputs.user), field('Action', inputs.action), field('Study UID', inputs.study_uid), field('Since', inputs.since), field('Until', inputs.until)),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'), h('button', { type: 'button', onclick: exportAll }, 'Export (JSON lines)'))),
      results,
    ),
  );
  await load(0);
}

// --- Server status -------------------------------------------------------------------------------

async function statusView(container) {
  const place = h('div');
  replace(container, section('Server status', place));
  try {
    const [status, health] = await Promise.all([
      api.request('/api/status'),
      fetch('/healthz').then(response => response.json()).catch(() => ({ status: 'unreachable' })),
    ]);
    const facts = [
      ['Version', status.version],
      ['Ready', health.status === 'ok' ? 'yes' : JSON.stringify(health)],
      ['Studies', status.studies.toLocaleString()],
      ['Series', status.series.toLocaleString()],
      ['Instances', status.instances.toLocaleString()],
      ['Storage used', formatBytes(status.bytes)],
    ];
    replace(place, h('dl', { class: 'facts' }, facts.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)])));
  } catch (error) {
    failure(place, error, 'Status could not be read');
  }
}

/** The account and admin views, for the router in app.js (`kinds`: only principals of these kinds). */
export const adminViews = [
  { route: 'my-tokens', title: 'My tokens', needs: 'read', kinds: ['user', 'oidc'], render: tokensView('My API tokens', '/api/me/tokens', false) },
  { route: 'admin/users', title: 'Users', needs: 'administer', render: usersView },
  { route: 'admin/tokens', title: 'API tokens', needs: 'administer', render: tokensView('API tokens', '/api/tokens', true) },
  { route: 'admin/nodes', title: 'DICOM nodes', needs: 'administer', render: nodesView },
  { route: 'admin/audit', title: 'Audit log', needs: 'administer', render: auditView },
  { route: 'admin/status', title: 'Status', needs: 'administer', render: statusView },
];
