// Send a study to a registered DICOM node (C-STORE through the bridge) or to a DICOMweb server
// (STOW-RS): POST /api/studies/{study}/send queues a forwarding job, whose progress is shown here.

import * as api from './api.js';
import { announce, dialog, field, h, replace } from './dom.js';
import { follow } from './jobs.js';

/** The registered nodes that accept C-STORE, or null when this role may not read the registry. */
async function storeNodes() {
  try {
    const nodes = await api.request('/api/dicom-nodes');
    return nodes.filter(node => node.allow_store);
  } catch (error) {
    if (error.status === 403) return null;
    throw error;
  }
}

/** The send dialog of study `uid` (`label` names it for people). */
export async function sendDialog(uid, label) {
  await dialog(`Send ${label}`, close => {
    const problem = h('p', { class: 'error', role: 'alert' });
    const progress = h('div', { class: 'send-progress', 'aria-live': 'polite' });
    const kind = h('select', { name: 'kind' }, h('option', { value: 'node' }, 'DICOM node (C-STORE)'), h('option', { value: 'dicomweb' }, 'DICOMweb server (STOW-RS)'));
    // Roles that may send but not read the node registry type the AE title.
    const node = h('input', { name: 'ae_title', maxlength: 16, autocomplete: 'off', required: true });
    const nodePlace = h('div', {}, field('AE title', node));
    const url = h('input', { name: 'dicomweb_url', type: 'url', placeholder: 'https://archive.example/dicomweb' });
    const token = h('input', { name: 'dicomweb_token', type: 'password', autocomplete: 'off' });
    const webPlace = h('div', { hidden: true }, field('DICOMweb URL', url, 'The service root; instances go to <url>/studies.'), field('Bearer token', token, 'Optional.'));
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Send');
    let chosen = node;

    storeNodes()
      .then(nodes => {
        if (nodes === null) return;
        chosen = h(
          'select',
          { name: 'ae_title', required: true },
          nodes.length ? null : h('option', { value: '' }, 'No node accepts C-STORE'),
          nodes.map(entry => h('option', { value: entry.ae_title }, `${entry.ae_title} — ${entry.host}:${entry.port}${entry.description ? ` (${entry.description})` : ''}`)),
        );
        replace(nodePlace, field('DICOM node', chosen));
      })
      .catch(error => {
        problem.textContent = `Nodes could not be listed: ${error.message}`;
      });
    kind.addEventListener('change', () => {
      const web = kind.value === 'dicomweb';
      nodePlace.hidden = web;
      webPlace.hidden = !web;
      chosen.required = !web;
      url.required = web;
    });

    const send = async event => {
      event.preventDefault();
      problem.textContent = '';
      const body = kind.value === 'dicomweb' ? { dicomweb_url: url.value.trim(), dicomweb_token: token.value || null } : { ae_title: chosen.value.trim() };
      submit.disabled = true;
      try {
        const job = await api.request(`/api/studies/${encodeURIComponent(uid)}/send`, { method: 'POST', json: body });
        announce(`Sending ${label}: job ${job.id} queued.`);
        const last = await follow(job, progress);
        if (last.state === 'done') announce(`Sent ${label} to ${body.ae_title || body.dicomweb_url}.`);
        else if (last.state === 'failed') announce(`Sending ${label} failed: ${last.last_error}`, 'error');
      } catch (error) {
        problem.textContent = `Not sent: ${error.message}`;
      } finally {
        submit.disabled = false;
      }
    };
    return h(
      'form',
      { onsubmit: send },
      problem,
      field('Send to', kind),
      nodePlace,
      webPlace,
      h('div', { class: 'actions' }, submit, h('button', { type: 'button', onclick: () => close(null) }, 'Close')),
      progress,
    );
  });
}
