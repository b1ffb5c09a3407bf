// Share links for one study: create (expiry, PIN, birth date), copy, list and revoke (/api/share-links).

import * as api from './api.js';
import { announce, copyText, dialog, field, formatTime, h, replace } from './dom.js';

const VALIDITY = [
  ['1d', '1 day'],
  ['2d', '2 days'],
  ['30d', '30 days'],
  ['never', 'No expiry'],
];

/** The share dialog of study `uid` (`label` names it for people). */
export async function shareDialog(uid, label) {
  await dialog(`Share ${label}`, close => {
    const list = h('div', { class: 'share-list' });
    const created = h('div', { class: 'share-created', 'aria-live': 'polite' });
    const validity = h('select', { name: 'validity' }, VALIDITY.map(([value, text]) => h('option', { value, selected: value === '2d' }, text)));
    const pin = h('input', { name: 'pin', inputmode: 'numeric', autocomplete: 'off', pattern: '[0-9]{4,12}', title: '4 to 12 digits' });
    const birthDate = h('input', { name: 'require_birth_date', type: 'checkbox' });
    const problem = h('p', { class: 'error', role: 'alert' });

    async function refresh() {
      try {
        const links = await api.request(`/api/share-links?study_uid=${encodeURIComponent(uid)}`);
        replace(
          list,
          links.length
            ? h(
                'ul',
                {},
                links.map(link =>
                  h(
                    'li',
                    { dataset: { id: link.id } },
                    h('span', {}, describe(link)),
                    h('button', { type: 'button', class: 'danger', onclick: () => revoke(link) }, 'Revoke'),
                  ),
                ),
              )
            : h('p', { class: 'muted' }, 'No share link yet.'),
        );
      } catch (error) {
        replace(list, h('p', { class: 'error' }, `Share links could not be listed: ${error.message}`));
      }
    }

    async function revoke(link) {
      try {
        await api.request(`/api/share-links/${encodeURIComponent(link.id)}`, { method: 'DELETE' });
        announce('Share link revoked: it no longer opens the study.');
        replace(created);
        refresh();
      } catch (error) {
        problem.textContent = `Not revoked: ${error.message}`;
      }
    }

    async function create(event) {
      event.preventDefault();
      problem.textContent = '';
      const body = { study_uid: uid, validity: validity.value };
      if (pin.value.trim()) body.pin = pin.value.trim();
      if (birthDate.checked) body.require_birth_date = true;
      try {
        const link = await api.request('/api/share-links', { method: 'POST', json: body });
        const url = h('input', { readonly: true, value: link.url, class: 'share-url', 'aria-label': 'Share link' });
        replace(
          created,
          h('p', {}, 'New link (send the PIN separately):'),
          h('div', { class: 'copy-row' }, url, h('button', { type: 'button', onclick: () => copyText(link.url, url) }, 'Copy')),
        );
        url.focus();
        url.select();
        refresh();
      } catch (error) {
        problem.textContent = `No link created: ${error.message}`;
      }
    }

    refresh();
    return h(
      'div',
      {},
      problem,
      h(
        'form',
        { onsubmit: create, class: 'share-form' },
        field('Valid for', validity),
        field('PIN (optional)', pin, 'The recipient types it to open the study.'),
        h('div', { class: 'field check' }, birthDate, h('label', { for: (birthDate.id = 'share-birth-date') }, "Ask for the patient's birth date")),
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create link')),
      ),
      created,
      h('h3', {}, 'Links to this study'),
      list,
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => close(null) }, 'Close')),
    );
  });
}

function describe(link) {
  const parts = [link.expires_at ? `expires ${formatTime(link.expires_at)}` : 'no expiry'];
  if (link.has_pin) parts.push('PIN');
  if (link.requires_birth_date) parts.push('birth date');
  return `Link ${link.id}: ${parts.join(', ')}`;
}
