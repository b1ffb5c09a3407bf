"""Forwarding (auto-routing): rules, the durable job queue, and the rule engine that follows the change feed.

- A **rule** names a trigger (`stored`: each stored instance; `stable`: a study that got no new
  instance for a while, see storage/index/changes.py), conditions on the instance or study, and a
  destination: a registered AE title (C-STORE by the bridge) or a DICOMweb STOW-RS URL, optionally
  transcoded (`model.py`, `rules.py`).
- A **job** is one delivery (a study, or some of its instances, to one destination), claimed by a
  bridge under a lease, retried after growing back-off delays (`queue.py`).
- The **rule engine** turns changes into jobs, each change exactly once (`engine.py`).

Blocking functions over an Engine; the HTTP edge runs them in worker threads. The schema is in
storage/index/forwarding.py.
"""

from __future__ import annotations

from storage.forwarding.engine import RuleEngine
from storage.forwarding.model import (
    CONDITION_KEYS,
    TRIGGERS,
    Conditions,
    Destination,
    DuplicateRule,
    ForwardingError,
    InvalidRule,
    JobConflict,
    JobState,
    RuleFields,
    Subject,
    Trigger,
    parse_backoff,
)
from storage.forwarding.queue import (
    MAX_JOB_PAGE,
    cancel_job,
    claim_jobs,
    enqueue,
    get_job,
    job_instances,
    list_jobs,
    queue_depth,
    report_progress,
    report_result,
    retry_job,
)
from storage.forwarding.rules import (
    create_rule,
    delete_rule,
    get_rule,
    list_rules,
    rule_conditions,
    rule_destination,
    update_rule,
)
from storage.index.forwarding import ForwardingJob, ForwardingRule

__all__ = [
    "CONDITION_KEYS",
    "MAX_JOB_PAGE",
    "TRIGGERS",
    "Conditions",
    "Destination",
    "DuplicateRule",
    "ForwardingError",
    "ForwardingJob",
    "ForwardingRule",
    "InvalidRule",
    "JobConflict",
    "JobState",
    "RuleEngine",
    "RuleFields",
    "Subject",
    "Trigger",
    "cancel_job",
    "claim_jobs",
    "create_rule",
    "delete_rule",
    "enqueue",
    "get_job",
    "get_rule",
    "job_instances",
    "list_jobs",
    "list_rules",
    "parse_backoff",
    "queue_depth",
    "report_progress",
    "report_result",
    "retry_job",
    "rule_conditions",
    "rule_destination",
    "update_rule",
]
