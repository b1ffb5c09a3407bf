"""The index writer: a lone store indexes in its own thread, stores that wait share one transaction."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import pytest
from polling import wait_for

from storage.errors import ArchiveError, ConflictingInstance
from storage.group_commit import IndexWriter
from storage.index import AddOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from storage.index import Index, NewInstance

REFUSED = "refused"


class FakeIndex:
    """Records each transaction (its items and thread); item "refused" is refused, "fail" fails all."""

    def __init__(self, hold_first: threading.Event | None = None) -> None:
        self.transactions: list[tuple[list[str], int]] = []
        self.entered = threading.Event()
        self._hold_first = hold_first

    def add_instances(self, items: Sequence[str]) -> list[AddOutcome | ArchiveError]:
        self.transactions.append((list(items), threading.get_ident()))
        self.entered.set()
        if self._hold_first is not None and len(self.transactions) == 1:
            assert self._hold_first.wait(10)
        if "fail" in items:
            raise RuntimeError("the database went away")
        return [ConflictingInstance(item) if item == REFUSED else AddOutcome("stored") for item in items]


def writer_over(index: FakeIndex) -> tuple[IndexWriter, Callable[[str], AddOutcome]]:
    writer = IndexWriter(cast("Index", index))
    return writer, lambda item: writer.add(cast("NewInstance", item))


class TestOneStoreAtATime:
    def test_a_lone_store_is_indexed_in_its_own_thread(self) -> None:
        index = FakeIndex()
        _, add = writer_over(index)
        assert add("a") == AddOutcome("stored")
        assert add("b") == AddOutcome("stored")
        assert index.transactions == [(["a"], threading.get_ident()), (["b"], threading.get_ident())]

    def test_a_refused_instance_raises_its_error(self) -> None:
        _, add = writer_over(FakeIndex())
        with pytest.raises(ConflictingInstance):
            add(REFUSED)

    def test_a_failed_transaction_raises_and_the_next_store_still_goes_through(self) -> None:
        index = FakeIndex()
        _, add = writer_over(index)
        with pytest.raises(RuntimeError, match="went away"):
            add("fail")
        assert add("a") == AddOutcome("stored")


def behind_a_transaction(
    items: Sequence[str],
) -> tuple[FakeIndex, list[BaseException | None], Callable[[str], AddOutcome]]:
    """Store `items` while another store's transaction runs, then let it end: their errors, in order."""
    release = threading.Event()
    index = FakeIndex(hold_first=release)
    writer, add = writer_over(index)
    with ThreadPoolExecutor(max_workers=len(items) + 1) as pool:
        first = pool.submit(add, "first")
        assert index.entered.wait(10)
        others = [pool.submit(add, item) for item in items]
        wait_for("the other stores to queue", lambda: len(writer._waiting) == len(items), timeout=10, interval=0.001)
        release.set()
        assert first.result(10) == AddOutcome("stored")
        return index, [future.exception(10) for future in others], add


class TestConcurrentStores:
    def test_stores_arriving_during_a_transaction_share_the_next_one(self) -> None:
        index, errors, _ = behind_a_transaction(["b", REFUSED, "d", "e"])
        assert [type(error) for error in errors] == [type(None), ConflictingInstance, type(None), type(None)]
        assert [sorted(items) for items, _ in index.transactions] == [["first"], sorted(["b", REFUSED, "d", "e"])]

    def test_a_failed_batch_reaches_every_store_in_it(self) -> None:
        _, errors, add = behind_a_transaction(["fail", "b"])
        assert [type(error) for error in errors] == [RuntimeError, RuntimeError]
        assert add("after") == AddOutcome("stored")
