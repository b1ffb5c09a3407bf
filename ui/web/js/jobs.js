// Forwarding jobs (/api/forwarding-jobs): how a job reads for people, and following one to its end.

import * as api from './api.js';
import { h, replace } from './dom.js';

/** The states after which a job no longer changes by itself. */
export const FINISHED = ['done', 'failed', 'cancelled'];
const POLL_MS = 1000;

/** Where a job sends: the AE title of a DICOM node or a DICOMweb URL. */
export function destination(job) {
  return job.ae_title ? `AE ${job.ae_title}` : job.dicomweb_url || '';
}

/** A job's progress: a <progress> bar with "sent of total" (the total is known once a bridge runs it). */
export function progressOf(job) {
  const total = job.instances_total || job.instances || 0;
  const text = `${job.instances_sent} of ${total || '?'} sent`;
  return h(
    'span',
    { class: 'job-progress' },
    h('progress', { max: total || 1, value: job.state === 'done' && !total ? 1 : job.instances_sent, 'aria-label': text }),
    ' ',
    text,
  );
}

/** One job as a status block: state, progress, attempts and last error. */
export function jobSummary(job) {
  return h(
    'div',
    { class: `job job-${job.state}`, dataset: { job: job.id } },
    h('p', {}, h('strong', { class: 'job-state' }, job.state), ` — job ${job.id} to ${destination(job)}`),
    progressOf(job),
    h('p', { class: 'muted' }, `Attempts: ${job.attempts}`),
    job.last_error ? h('p', { class: 'error' }, `Last error: ${job.last_error}`) : null,
  );
}

/**
 * Show job `job` in `place` and poll it until it is finished or `place` leaves the page.
 * Resolves with the job's last known state.
 */
export async function follow(job, place) {
  let current = job;
  replace(place, jobSummary(current));
  while (!FINISHED.includes(current.state) && place.isConnected) {
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
    try {
      current = await api.request(`/api/forwarding-jobs/${current.id}`);
    } catch (error) {
      replace(place, jobSummary(current), h('p', { class: 'error', role: 'alert' }, `Progress unknown: ${error.message}`));
      return current;
    }
    if (place.isConnected) replace(place, jobSummary(current));
  }
  return current;
}
