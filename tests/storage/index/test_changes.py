"""The change feed: commit order, resumable reads, stable studies announced exactly once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from index_samples import Spec, create_database, drop_database, make_instance
from polling import wait_for
from sqlalchemy import insert

from storage.index.changes import ChangeFeed, ChangeRecord
from storage.index.database import migrate, open_engine, write_transaction
from storage.index.models import change_table

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from storage.index import Index

QUIET = timedelta(seconds=1)


def add(index: Index, spec: Spec) -> None:
    parsed, sha = make_instance(spec)
    index.add_instance(parsed, blob_key=f"blobs/{spec.sop_uid}", size=100, sha256=sha)


def kinds(records: list[ChangeRecord]) -> list[tuple[str, str]]:
    return [(record.kind, record.sop_instance_uid or record.study_instance_uid) for record in records]


@pytest.fixture
def feed(engine: Engine) -> ChangeFeed:
    feed = ChangeFeed(engine, stable_after=QUIET)
    feed.read()  # starts announcing quiet studies from now
    return feed


class TestOrderAndResume:
    def test_stores_and_deletes_come_in_order_with_growing_positions(self, index: Index, feed: ChangeFeed) -> None:
        add(index, Spec(sop_uid="1.2.3.1.1.1"))
        add(index, Spec(sop_uid="1.2.3.1.1.2"))
        index.delete("1.2.3.1", "1.2.3.1.1", "1.2.3.1.1.1")
        records = feed.read()
        assert kinds(records) == [("stored", "1.2.3.1.1.1"), ("stored", "1.2.3.1.1.2"), ("deleted", "1.2.3.1.1.1")]
        assert [record.seq for record in records] == [1, 2, 3]
        assert records[0].study_instance_uid == "1.2.3.1"
        assert records[0].series_instance_uid == "1.2.3.1.1"

    def test_reading_on_from_the_last_position_gives_only_what_is_new(self, index: Index, feed: ChangeFeed) -> None:
        add(index, Spec(sop_uid="1.2.3.1.1.1"))
        last = feed.read()[-1].seq
        assert feed.read(since=last) == []
        add(index, Spec(sop_uid="1.2.3.1.1.2"))
        assert kinds(feed.read(since=last)) == [("stored", "1.2.3.1.1.2")]

    def test_limit_pages_through_the_feed(self, index: Index, feed: ChangeFeed) -> None:
        for n in range(5):
            add(index, Spec(sop_uid=f"1.2.3.1.1.{n + 1}"))
        first = feed.read(limit=2)
        second = feed.read(since=first[-1].seq, limit=2)
        third = feed.read(since=second[-1].seq, limit=2)
        assert [r.sop_instance_uid for r in first + second + third] == [f"1.2.3.1.1.{n + 1}" for n in range(5)]

    @pytest.mark.parametrize(("since", "limit"), [(-1, 10), (0, 0), (0, 1001)])
    def test_a_negative_position_or_a_limit_out_of_range_is_refused(
        self, feed: ChangeFeed, since: int, limit: int
    ) -> None:
        with pytest.raises(ValueError, match="limit 1 to 1000"):
            feed.read(since=since, limit=limit)


class TestCommitOrder:
    def test_a_change_committed_late_with_a_smaller_seq_is_still_read_after_the_position_seen(
        self, postgres_engine: Engine
    ) -> None:
        """Transaction A inserts first (smaller seq) and commits last: a reader must not skip it."""
        feed = ChangeFeed(postgres_engine, stable_after=QUIET)
        row = {"kind": "stored", "series_instance_uid": "1", "study_instance_uid": "1", "at": datetime.now(UTC)}
        with write_transaction(postgres_engine) as slow:
            slow.execute(insert(change_table), {**row, "sop_instance_uid": "early-seq-late-commit"})
            with write_transaction(postgres_engine) as fast:
                fast.execute(insert(change_table), {**row, "sop_instance_uid": "late-seq-early-commit"})
            seen = feed.read()
            assert kinds(seen) == [("stored", "late-seq-early-commit")]
        assert kinds(feed.read(since=seen[-1].seq)) == [("stored", "early-seq-late-commit")]


class TestStableStudies:
    def test_a_study_is_announced_once_after_it_went_quiet(self, index: Index, feed: ChangeFeed) -> None:
        add(index, Spec(sop_uid="1.2.3.1.1.1"))
        wait_for("the stable study", lambda: any(r.kind == "stable" for r in feed.read()), timeout=20)
        records = feed.read()
        assert kinds(records) == [("stored", "1.2.3.1.1.1"), ("stable", "1.2.3.1")]
        assert records[1].series_instance_uid == records[1].sop_instance_uid == ""

    def test_a_new_instance_after_stable_makes_it_stable_again_later(self, index: Index, feed: ChangeFeed) -> None:
        add(index, Spec(sop_uid="1.2.3.1.1.1"))
        wait_for("the first stable", lambda: any(r.kind == "stable" for r in feed.read()), timeout=20)
        add(index, Spec(sop_uid="1.2.3.1.1.2"))
        wait_for("the second stable", lambda: sum(r.kind == "stable" for r in feed.read()) == 2, timeout=20)
        assert [kind for kind, _ in kinds(feed.read())] == ["stored", "stable", "stored", "stable"]

    def test_many_readers_at_once_announce_each_quiet_study_exactly_once(self, engine: Engine, index: Index) -> None:
        feeds = [ChangeFeed(engine, stable_after=QUIET) for _ in range(6)]
        feeds[0].read()
        for study in range(3):
            add(index, Spec(study_uid=f"1.2.9.{study}", series_uid=f"1.2.9.{study}.1", sop_uid=f"1.2.9.{study}.1.1"))
        time.sleep(QUIET.total_seconds())  # the quiet period itself is what is under test
        barrier = threading.Barrier(len(feeds))
        errors: list[BaseException] = []

        def read(feed: ChangeFeed) -> None:
            barrier.wait()
            try:
                feed.read()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=read, args=(feed,)) for feed in feeds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        stable = [r.study_instance_uid for r in feeds[0].read() if r.kind == "stable"]
        assert sorted(stable) == ["1.2.9.0", "1.2.9.1", "1.2.9.2"]

    def test_a_new_feed_does_not_announce_studies_that_were_quiet_before_it(self, engine: Engine, index: Index) -> None:
        add(index, Spec(sop_uid="1.2.3.1.1.1"))
        feed = ChangeFeed(engine, stable_after=timedelta(0))
        time.sleep(0.01)
        assert [r.kind for r in feed.read()] == ["stored"]


@pytest.fixture
def postgres_engine(tmp_path: Path) -> Iterator[Engine]:
    url = create_database("postgresql", tmp_path)
    migrate(url)
    engine = open_engine(url)
    yield engine
    engine.dispose()
    drop_database(url)
