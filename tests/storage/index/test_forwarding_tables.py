"""Forwarding's conditions, and its queue and rule engine on the forwarding tables (SQLite and PostgreSQL).

Concurrency is what the tables are for: several workers run the rule engine and several bridges
claim jobs, and no change may be matched twice nor a job handed out twice.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from index_samples import Spec, make_instance

from storage.forwarding import (
    Conditions,
    Destination,
    InvalidRule,
    RuleEngine,
    RuleFields,
    Subject,
    claim_jobs,
    create_rule,
    enqueue,
    job_instances,
    list_jobs,
)
from storage.index.changes import ChangeFeed
from storage.index.nodes import NodeFields, create_node

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from storage.index import Index

PARIS_EVENING = datetime(2026, 1, 15, 21, 30, tzinfo=UTC)  # 22:30 in Paris (UTC+1 in winter)


def subject(calling_ae: Callable[[], str] = lambda: "CT_ROOM_1", **values: object) -> Subject:
    fields: dict[str, object] = {
        "modalities": ("CT",),
        "referring_physician": "Müller^Hans",
        "institution": "ST. MARY'S",
        "study_description": "CT HEAD [contrast]",
        "transfer_syntaxes": ("1.2.840.10008.1.2.1",),
    }
    fields.update(values)
    return Subject(calling_ae=calling_ae, **fields)  # type: ignore[arg-type]


def add(index: Index, spec: Spec) -> None:
    parsed, sha = make_instance(spec)
    index.add_instance(parsed, blob_key=f"blobs/{spec.sop_uid}", size=100, sha256=sha)


class TestConditions:
    @pytest.mark.parametrize(
        ("given", "matches"),
        [
            ({"referring_physician": ["MULLER^*"]}, True),  # accents and case folded, as PN matching
            ({"institution": ["st. mary?s"]}, True),
            ({"study_description": ["CT HEAD [contrast]"]}, True),  # brackets are not a character class
            ({"modality": ["MR", "C?"]}, True),
            ({"modality": ["MR"]}, False),
            ({"modality": ["CT"], "institution": ["GENERAL*"]}, False),  # every key must match
            ({"calling_ae": ["CT_ROOM_*"]}, True),
            ({"transfer_syntax": ["1.2.840.10008.1.2.4.*"]}, False),
        ],
    )
    def test_values_match_with_dicom_wildcards(self, given: dict[str, list[str]], matches: bool) -> None:
        assert Conditions.from_mapping(given).matches(subject(), PARIS_EVENING) is matches

    @pytest.mark.parametrize(
        ("window", "zone", "matches"),
        [
            ("20:00-06:00", "Europe/Paris", True),  # wraps past midnight
            ("06:00-20:00", "Europe/Paris", False),
            ("22:00-23:00", "Europe/Paris", True),
            ("22:00-23:00", "UTC", False),  # 21:30 UTC
        ],
    )
    def test_the_time_window_is_read_in_its_zone(self, window: str, zone: str, matches: bool) -> None:
        conditions = Conditions.from_mapping({"time_window": window, "time_zone": zone})
        assert conditions.matches(subject(), PARIS_EVENING) is matches

    def test_the_stored_file_is_read_only_for_a_calling_ae_condition(self) -> None:
        def unreadable() -> str:
            raise AssertionError("the Source AE Title was read for a rule that does not need it")

        assert Conditions.from_mapping({"modality": ["CT"]}).matches(subject(unreadable), PARIS_EVENING)

    @pytest.mark.parametrize(
        "given", [{"colour": ["red"]}, {"modality": [""]}, {"modality": [3]}, {"time_window": "8-9"}]
    )
    def test_malformed_conditions_are_refused(self, given: dict[str, object]) -> None:
        with pytest.raises(InvalidRule):
            Conditions.from_mapping(given)


@pytest.fixture
def node(engine: Engine) -> Destination:
    create_node(engine, NodeFields(ae_title="DEST", host="127.0.0.1", port=104))
    return Destination(ae_title="DEST")


class TestRuleEngine:
    def test_engines_running_at_once_match_each_change_exactly_once(
        self, engine: Engine, index: Index, node: Destination
    ) -> None:
        feed = ChangeFeed(engine, stable_after=timedelta(hours=1))
        create_rule(engine, RuleFields("all-ct", "stored", Conditions.from_mapping({"modality": ["CT"]}), node))
        stored = [f"1.2.3.9.1.{n}" for n in range(40)]
        for uid in stored:
            add(index, Spec(study_uid="1.2.3.9", series_uid="1.2.3.9.1", sop_uid=uid))
        add(index, Spec(study_uid="1.2.3.8", series_uid="1.2.3.8.1", sop_uid="1.2.3.8.1.1", modality="MR"))
        engines = [RuleEngine(engine, feed, lambda *_: "") for _ in range(4)]
        errors: list[BaseException] = []

        def run(rule_engine: RuleEngine) -> None:
            try:
                while rule_engine.step(limit=5):
                    pass
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        while engines[0].step():  # what a skipped round (PostgreSQL: row locked) left
            pass
        jobs = list_jobs(engine)
        assert {job.study_instance_uid for job in jobs} == {"1.2.3.9"}
        matched = [uid for job in jobs for uid in job_instances(job)]
        assert sorted(matched) == sorted(stored)  # each once: none lost, none twice


class TestClaims:
    def test_concurrent_claims_never_hand_out_a_job_twice(
        self, engine: Engine, index: Index, node: Destination
    ) -> None:
        add(index, Spec())
        queued = {enqueue(engine, "1.2.3.1", node, requested_by="test").id for _ in range(30)}
        claimed: list[int] = []
        lock = threading.Lock()

        def run() -> None:
            while jobs := claim_jobs(engine, limit=2, lease=timedelta(minutes=5)):
                with lock:
                    claimed.extend(job.id or 0 for job in jobs)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(claimed) == sorted(queued)
