"""The durable job queue: manual sends, listing, retry, cancel, and the bridge's claim / progress / result.

A job is claimed with a lease (a random token and an expiry). The bridge reports progress, which
extends the lease, and the outcome; a bridge that dies lets its lease run out and the next claim
takes the job again. A failed attempt is retried after the next back-off delay; after the last,
the job is `failed`.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import and_, func, or_, select
from sqlmodel import Session, col
from sqlmodel import select as select_model

from storage.errors import NotFound
from storage.forwarding.model import (
    Destination,
    JobConflict,
    JobState,
)
from storage.index.database import write_transaction
from storage.index.forwarding import (
    ForwardingJob,
    forwarding_job_table,
)
from storage.index.models import study_table

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Engine


__all__ = [
    "MAX_JOB_PAGE",
    "cancel_job",
    "claim_jobs",
    "enqueue",
    "get_job",
    "job_instances",
    "list_jobs",
    "queue_depth",
    "report_progress",
    "report_result",
    "retry_job",
]

_MAX_ERROR: Final = 2000
MAX_JOB_PAGE: Final = 1000


def job_instances(job: ForwardingJob) -> list[str]:
    """The SOP Instance UIDs a job sends ([] : the whole study or series)."""
    uids: list[str] = json.loads(job.sop_instance_uids)
    return uids


def enqueue(
    engine: Engine,
    study_uid: str,
    destination: Destination,
    *,
    requested_by: str,
    series_uid: str = "",
    instance_uids: Sequence[str] = (),
) -> ForwardingJob:
    """Queue a manual send of a study (or a series, or some instances); due at once.

    Raises:
        NotFound: the study is not in the archive.
        InvalidRule: the destination is not acceptable.
    """
    target = destination.validated(engine)
    with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
        found = connection.execute(
            select(study_table.c.id).where(study_table.c.study_instance_uid == study_uid)
        ).scalar_one_or_none()
        if found is None:
            msg = f"there is no study {study_uid}"
            raise NotFound(msg)
        job = ForwardingJob(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uids=json.dumps(list(instance_uids)),
            requested_by=requested_by[:200],
            state=JobState.PENDING.value,
            ae_title=target.ae_title,
            dicomweb_url=target.dicomweb_url,
            dicomweb_token=target.dicomweb_token,
            transfer_syntax=target.transfer_syntax,
        )
        session.add(job)
        session.flush()
        session.refresh(job)
    return job


def get_job(engine: Engine, job_id: int) -> ForwardingJob:
    """One job.

    Raises:
        NotFound: no such job.
    """
    with Session(engine, expire_on_commit=False) as session:
        job = session.get(ForwardingJob, job_id)
    if job is None:
        msg = f"there is no forwarding job {job_id}"
        raise NotFound(msg)
    return job


def list_jobs(
    engine: Engine,
    *,
    state: JobState | None = None,
    study_uid: str | None = None,
    rule_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ForwardingJob]:
    """Jobs, newest first, optionally of one state, study or rule."""
    query = select_model(ForwardingJob).order_by(col(ForwardingJob.id).desc()).limit(limit).offset(offset)
    if state is not None:
        query = query.where(col(ForwardingJob.state) == state.value)
    if study_uid is not None:
        query = query.where(col(ForwardingJob.study_instance_uid) == study_uid)
    if rule_id is not None:
        query = query.where(col(ForwardingJob.rule_id) == rule_id)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query).all())


def _locked_job(session: Session, job_id: int) -> ForwardingJob:
    job = session.exec(select_model(ForwardingJob).where(col(ForwardingJob.id) == job_id).with_for_update()).first()
    if job is None:
        msg = f"there is no forwarding job {job_id}"
        raise NotFound(msg)
    return job


def _change_job(engine: Engine, job_id: int, change: Callable[[ForwardingJob, datetime], None]) -> ForwardingJob:
    with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
        job = _locked_job(session, job_id)
        now = _now()
        change(job, now)
        job.updated_at = now
        session.flush()
        session.refresh(job)
    return job


def retry_job(engine: Engine, job_id: int) -> ForwardingJob:
    """Make a job due now with a fresh series of attempts (a done job is sent again).

    Raises:
        NotFound: no such job.
        JobConflict: the job is running (a bridge holds it).
    """

    def change(job: ForwardingJob, now: datetime) -> None:
        if job.state == JobState.RUNNING:
            msg = f"forwarding job {job_id} is running: wait for its outcome or cancel it first"
            raise JobConflict(msg)
        job.state = JobState.PENDING.value
        job.attempts = 0
        job.next_attempt_at = now
        job.finished_at = None

    return _change_job(engine, job_id, change)


def cancel_job(engine: Engine, job_id: int) -> ForwardingJob:
    """Cancel a job that has not finished; a bridge delivering it stops at its next progress report.

    Raises:
        NotFound: no such job.
        JobConflict: the job is done already.
    """

    def change(job: ForwardingJob, now: datetime) -> None:
        if job.state == JobState.DONE:
            msg = f"forwarding job {job_id} is done: there is nothing to cancel"
            raise JobConflict(msg)
        job.state = JobState.CANCELLED.value
        job.lease_owner = None
        job.lease_until = None
        job.finished_at = now

    return _change_job(engine, job_id, change)


def claim_jobs(engine: Engine, *, limit: int, lease: timedelta) -> list[ForwardingJob]:
    """Lease up to `limit` due jobs to the caller: each gets a new lease token (`lease_owner`).

    Due: pending with its attempt time reached, or running under a lease that ran out (its bridge
    stopped answering). Concurrent claims never get the same job: PostgreSQL skips rows another
    claim has locked, SQLite lets one writer at a time in.
    """
    now = _now()
    due = or_(
        and_(col(ForwardingJob.state) == JobState.PENDING, col(ForwardingJob.next_attempt_at) <= now),
        and_(col(ForwardingJob.state) == JobState.RUNNING, col(ForwardingJob.lease_until) < now),
    )
    query = (
        select_model(ForwardingJob)
        .where(due)
        .order_by(col(ForwardingJob.next_attempt_at), col(ForwardingJob.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
        jobs = list(session.exec(query).all())
        for job in jobs:
            if job.state == JobState.RUNNING:
                job.last_error = "the bridge delivering it stopped answering (its lease ran out)"
            job.state = JobState.RUNNING.value
            job.attempts += 1
            job.lease_owner = secrets.token_hex(16)
            job.lease_until = now + lease
            job.updated_at = now
        session.flush()
        for job in jobs:
            session.refresh(job)
    return jobs


def _leased(session: Session, job_id: int, lease_token: str) -> ForwardingJob:
    job = _locked_job(session, job_id)
    if (
        job.state != JobState.RUNNING
        or job.lease_owner is None
        or not secrets.compare_digest(job.lease_owner, lease_token)
    ):
        msg = f"forwarding job {job_id} is no longer leased to you (it is {job.state}): stop delivering it"
        raise JobConflict(msg)
    return job


def report_progress(
    engine: Engine, job_id: int, lease_token: str, *, sent: int, total: int, lease: timedelta
) -> ForwardingJob:
    """Record progress and extend the lease.

    Raises:
        NotFound: no such job.
        JobConflict: the lease is not the caller's any more (cancelled, or claimed by another).
    """
    with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
        job = _leased(session, job_id, lease_token)
        now = _now()
        job.instances_sent = max(0, sent)
        job.instances_total = max(0, total)
        job.lease_until = now + lease
        job.updated_at = now
        session.flush()
        session.refresh(job)
    return job


def report_result(
    engine: Engine,
    job_id: int,
    lease_token: str,
    *,
    error: str | None,
    sent: int,
    total: int,
    backoff: Sequence[timedelta],
) -> ForwardingJob:
    """End an attempt: done, or (with `error`) pending again after the back-off, or failed after the last.

    Attempt n failed -> the next one after backoff[n-1]; once every back-off was waited, failed.

    Raises:
        NotFound: no such job.
        JobConflict: the lease is not the caller's any more.
    """
    with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
        job = _leased(session, job_id, lease_token)
        now = _now()
        job.instances_sent = max(0, sent)
        job.instances_total = max(0, total)
        job.lease_owner = None
        job.lease_until = None
        job.updated_at = now
        if error is None:
            job.state = JobState.DONE.value
            job.finished_at = now
        else:
            job.last_error = error[:_MAX_ERROR]
            if job.attempts > len(backoff):
                job.state = JobState.FAILED.value
                job.finished_at = now
            else:
                job.state = JobState.PENDING.value
                job.next_attempt_at = now + backoff[job.attempts - 1]
        session.flush()
        session.refresh(job)
    return job


def queue_depth(engine: Engine) -> dict[str, int]:
    """How many jobs are in each state (for metrics)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(forwarding_job_table.c.state, func.count()).group_by(forwarding_job_table.c.state)
        ).all()
    return {state: 0 for state in JobState} | {row[0]: int(row[1]) for row in rows}


def _now() -> datetime:
    return datetime.now(UTC)
