// A share link's landing page (/share/<token>): ask what the link needs (a PIN, the patient's
// birth date, or nothing), redeem it, then open the viewer on that one study with the link's
// read-only token.

import { field, h, replace } from './dom.js';

const token = decodeURIComponent(window.location.pathname.split('/').pop() || '');
const status = document.getElementById('status-line');
const place = document.getElementById('landing');

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  });
  let answer = null;
  try {
    answer = await response.json();
  } catch (error) {
    answer = null;
  }
  return { status: response.status, body: answer, detail: (answer && (answer.detail || answer.title)) || '' };
}

function say(message, kind = '') {
  status.className = `status-line ${kind}`.trim();
  status.textContent = message;
}

function refused(answer) {
  replace(place);
  if (answer.status === 429) say('Too many attempts. Wait a few minutes, then reload this page.', 'error');
  else say(`This link does not open any study: it was revoked, has expired or is not complete. ${answer.detail}`.trim(), 'error');
}

function open(session) {
  // This tab's viewer uses the link's token (app-config.js reads it): it reads only this study.
  window.sessionStorage.setItem('webpacs.shareToken', session.access_token);
  say('Opening the viewer…');
  window.location.replace(`/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(session.study_uid)}`);
}

async function redeem(factors) {
  const answer = await post('/api/share-links/redeem', { token, ...factors });
  if (answer.status === 200) open(answer.body);
  return answer;
}

function askFor(challenge) {
  const pin = challenge.has_pin ? h('input', { name: 'pin', inputmode: 'numeric', autocomplete: 'off', required: true }) : null;
  const birthDate = challenge.requires_birth_date ? h('input', { name: 'birth_date', type: 'date', required: true }) : null;
  const problem = h('p', { class: 'error', role: 'alert' });
  const asked = [pin ? 'the PIN you were given' : null, birthDate ? 'the patient’s date of birth' : null].filter(Boolean);
  say(`This link is protected: enter ${asked.join(' and ')}.`);
  replace(
    place,
    h(
      'form',
      {
        onsubmit: async event => {
          event.preventDefault();
          problem.textContent = '';
          const factors = {};
          if (pin) factors.pin = pin.value.trim();
          if (birthDate) factors.birth_date = birthDate.value.replaceAll('-', '');
          const answer = await redeem(factors);
          if (answer.status === 429 || answer.status === 404 || answer.status === 410) refused(answer);
          else if (answer.status !== 200) problem.textContent = `Not opened: ${answer.detail || 'check what you typed'}`;
        },
      },
      problem,
      pin ? field('PIN', pin) : null,
      birthDate ? field('Patient’s date of birth', birthDate) : null,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Open the study')),
    ),
  );
  (pin || birthDate).focus();
}

async function start() {
  let challenge;
  try {
    challenge = await post('/api/share-links/challenge', { token });
  } catch (error) {
    say(`The server could not be reached: ${error.message}`, 'error');
    return;
  }
  if (challenge.status !== 200) {
    refused(challenge);
    return;
  }
  if (challenge.body.has_pin || challenge.body.requires_birth_date) {
    askFor(challenge.body);
    return;
  }
  const answer = await redeem({});
  if (answer.status !== 200) refused(answer);
}

start();
