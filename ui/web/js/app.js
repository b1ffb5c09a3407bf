// The single page: sign-in, then the views the signed-in role may use (hash routes, no build step).

import * as api from './api.js';
import { announce, field, h, replace } from './dom.js';
import { adminViews } from './admin.js';
import { forwardingViews } from './forwarding.js';
import { recordsViews } from './records.js';
import { studiesView } from './studies.js';
import { uploadView } from './upload.js';

/** Every view: its hash route, its name in the menu, the permission it needs (and `kinds`, `unfiltered`). */
const VIEWS = [
  { route: 'studies', title: 'Studies', needs: 'read', render: studiesView },
  { route: 'upload', title: 'Upload', needs: 'store', render: uploadView },
  ...forwardingViews,
  ...recordsViews,
  ...adminViews,
];

const main = () => document.getElementById('main');
let principal = null;

/** Whether the signed-in principal may use `view`: its permission, kind, and (`unfiltered`) no study filter. */
function allowed(view) {
  if (!principal || !principal.permissions.includes(view.needs)) return false;
  if (view.kinds && !view.kinds.includes(principal.kind)) return false;
  return !view.unfiltered || !Object.values(principal.study_filter || {}).some(list => list && list.length);
}

function renderChrome() {
  const current = currentRoute();
  replace(
    document.getElementById('nav'),
    principal
      ? h(
          'ul',
          {},
          VIEWS.filter(allowed).map(view =>
            h(
              'li',
              {},
              h('a', { href: `#/${view.route}`, 'aria-current': view.route === current ? 'page' : null }, view.title),
            ),
          ),
        )
      : null,
  );
  replace(
    document.getElementById('who'),
    principal
      ? [
          h('span', { class: 'who-name', title: `${principal.kind}` }, principal.name),
          h('span', { class: 'badge' }, principal.role),
          h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'),
        ]
      : null,
  );
}

function currentRoute() {
  const hash = window.location.hash.replace(/^#\/?/, '');
  return hash.split('?')[0] || 'studies';
}

async function signOut() {
  await api.logout();
  principal = null;
  window.location.hash = '#/studies';
  show();
}

function loginView() {
  const username = h('input', { name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const token = h('input', { name: 'token', autocomplete: 'off', spellcheck: 'false' });
  const problem = h('p', { class: 'error', role: 'alert' });
  const signIn = async (event, attempt) => {
    event.preventDefault();
    problem.textContent = '';
    try {
      await attempt();
      await show();
    } catch (error) {
      problem.textContent =
        error.status === 429 ? 'Too many attempts; wait a minute and try again.' : `Not signed in: ${error.message}`;
    }
  };
  return h(
    'section',
    { class: 'card narrow' },
    h('h1', {}, 'Sign in'),
    problem,
    h(
      'form',
      { onsubmit: event => signIn(event, () => api.login(username.value, password.value)) },
      field('User name', username),
      field('Password', password),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
    ),
    h(
      'details',
      {},
      h('summary', {}, 'Use an API token instead'),
      h(
        'form',
        { onsubmit: event => signIn(event, () => api.useApiToken(token.value)) },
        field('API token', token, 'From "webpacs token create" or the API tokens page.'),
        h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Use token')),
      ),
    ),
  );
}

async function show() {
  if (!api.session()) {
    principal = null;
    renderChrome();
    replace(main(), loginView());
    document.title = 'Sign in — webpacs';
    return;
  }
  if (!principal) {
    try {
      principal = await api.me();
    } catch (error) {
      principal = null;
      if (error.status === 401) {
        await api.logout();
        announce(`Signed out: ${error.message}`, 'error');
        return show();
      }
      renderChrome();
      replace(
        main(),
        h('section', { class: 'card' }, h('h1', {}, 'The server did not answer'), h('p', { class: 'error' }, error.message),
          h('button', { type: 'button', onclick: () => show() }, 'Try again')),
      );
      return;
    }
    const next = new URLSearchParams(window.location.search).get('next');
    if (next && next.startsWith('/viewer/')) {
      window.location.assign(next);
      return;
    }
  }
  const route = currentRoute();
  const view = VIEWS.find(candidate => candidate.route === route) || VIEWS[0];
  renderChrome();
  document.title = `${view.title} — webpacs`;
  if (!allowed(view)) {
    replace(main(), h('section', { class: 'card' }, h('h1', {}, view.title), h('p', {}, 'Your role does not allow this page.')));
    return;
  }
  replace(main(), h('p', {}, 'Loading…'));
  await view.render(main(), principal);
}

window.addEventListener('hashchange', () => {
  announce('');
  show().then(() => main().focus({ preventScroll: true }));
});
show();
