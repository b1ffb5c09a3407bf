"""`webpacs forward ...`: forwarding rules and jobs from the shell (the same operations as /api/forwarding-*)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from storage.errors import ArchiveError
from storage.forwarding import (
    MAX_JOB_PAGE,
    TRIGGERS,
    Conditions,
    Destination,
    JobState,
    RuleFields,
    cancel_job,
    create_rule,
    delete_rule,
    list_jobs,
    list_rules,
    retry_job,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

__all__ = ["add_forward_command"]


def add_forward_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `webpacs forward rules|add-rule|delete-rule|jobs|retry|cancel`."""
    from dicomweb.cli import storage_flags

    forward = commands.add_parser("forward", help="forwarding rules and jobs").add_subparsers(
        required=True, metavar="ACTION"
    )
    rules = forward.add_parser("rules", help="list the rules", description=_rules.__doc__)
    rules.set_defaults(run=_rules)

    add = forward.add_parser("add-rule", help="add a rule", description=_add_rule.__doc__)
    add.add_argument("name")
    add.add_argument("--trigger", choices=TRIGGERS, default="stable", help="each stored instance, or stable studies")
    where = add.add_mutually_exclusive_group(required=True)
    where.add_argument("--ae-title", help="a registered DICOM node (C-STORE through the bridge)")
    where.add_argument("--dicomweb-url", help="a DICOMweb service root (STOW-RS to <url>/studies)")
    add.add_argument("--dicomweb-token-stdin", action="store_true", help="read the STOW-RS bearer token from stdin")
    add.add_argument("--transfer-syntax", help="transcode to this transfer syntax UID first")
    add.add_argument("--conditions", default="{}", help='JSON, e.g. \'{"modality": ["CT"], "calling_ae": ["CT_*"]}\'')
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    add.set_defaults(run=_add_rule)

    remove = forward.add_parser("delete-rule", help="remove a rule", description=_delete_rule.__doc__)
    remove.add_argument("rule_id", type=int)
    remove.set_defaults(run=_delete_rule)

    jobs = forward.add_parser("jobs", help="list jobs, newest first", description=_jobs.__doc__)
    jobs.add_argument("--state", choices=[state.value for state in JobState], help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=100, help=f"at most this many (default 100, at most {MAX_JOB_PAGE})")
    jobs.set_defaults(run=_jobs)

    for name, run in (("retry", _retry), ("cancel", _cancel)):
        action = forward.add_parser(name, help=f"{name} a job", description=run.__doc__)
        action.add_argument("job_id", type=int)
        action.set_defaults(run=run)

    for parser in (rules, add, remove, jobs, *[forward.choices[name] for name in ("retry", "cancel")]):
        storage_flags(parser)


def _engine(args: argparse.Namespace) -> Engine:
    from dicomweb.cli import prepared_settings
    from storage.index.database import open_engine

    return open_engine(prepared_settings(args).effective_database_url, pool_size=1, max_overflow=0)


def _run(action: str, step: Callable[[], object]) -> int:
    try:
        step()
    except (ArchiveError, ValueError) as exc:
        sys.stderr.write(f"webpacs: cannot {action}: {exc}\n")
        return 1
    return 0


def _rules(args: argparse.Namespace) -> int:
    """List rules: id, name, trigger, state, destination, conditions."""
    for rule in list_rules(_engine(args)):
        where = rule.ae_title or rule.dicomweb_url
        state = "enabled" if rule.enabled else "disabled"
        print(f"{rule.id}\t{rule.name}\t{rule.trigger}\t{state}\t{where}\t{rule.conditions}")  # noqa: T201
    return 0


def _add_rule(args: argparse.Namespace) -> int:
    """Add a forwarding rule (conditions as JSON; see the README, section Forwarding)."""
    engine = _engine(args)
    token = sys.stdin.readline().strip() if args.dicomweb_token_stdin else None

    def add() -> None:
        conditions = json.loads(args.conditions)
        if not isinstance(conditions, dict):
            msg = f"--conditions {args.conditions!r}: give a JSON object"
            raise ValueError(msg)
        destination = Destination(args.ae_title, args.dicomweb_url, token, args.transfer_syntax)
        fields = RuleFields(
            args.name, args.trigger, Conditions.from_mapping(conditions), destination, not args.disabled
        )
        print(f"created rule {create_rule(engine, fields).id}")  # noqa: T201

    return _run("add the rule", add)


def _delete_rule(args: argparse.Namespace) -> int:
    """Remove a rule (its queued jobs stay until they finish)."""
    engine = _engine(args)
    return _run("delete the rule", lambda: delete_rule(engine, args.rule_id))


def _jobs(args: argparse.Namespace) -> int:
    """List jobs: id, state, attempts, study, destination, progress, next attempt, last error."""
    state = JobState(args.state) if args.state else None
    for job in list_jobs(_engine(args), state=state, limit=max(1, min(args.limit, MAX_JOB_PAGE))):
        where = job.ae_title or job.dicomweb_url
        progress = f"{job.instances_sent}/{job.instances_total}"
        print(  # noqa: T201
            f"{job.id}\t{job.state}\t{job.attempts}\t{job.study_instance_uid}\t{where}\t{progress}\t"
            f"{job.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}\t{job.last_error or '-'}"
        )
    return 0


def _retry(args: argparse.Namespace) -> int:
    """Make a job due now with fresh attempts (a done job is sent again)."""
    engine = _engine(args)
    return _run("retry the job", lambda: retry_job(engine, args.job_id))


def _cancel(args: argparse.Namespace) -> int:
    """Cancel a job that is not done."""
    engine = _engine(args)
    return _run("cancel the job", lambda: cancel_job(engine, args.job_id))
