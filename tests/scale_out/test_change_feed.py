"""The change feed over HTTP with two workers: ordered, resumable, each quiet study announced once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dicomdata import sample_study, uids_of
from scale_out_pacs import STABLE_SECONDS

if TYPE_CHECKING:
    from scale_out_pacs import ScaleOut

READERS = 6


def read_all(scale_out: ScaleOut, since: int = 0, limit: int = 7) -> list[dict[str, Any]]:
    """Follow the feed from `since` page by page to its end."""
    changes: list[dict[str, Any]] = []
    while True:
        response = scale_out.http.get("/api/changes", params={"since": since, "limit": limit})
        assert response.status_code == 200, response.text
        page = response.json()
        changes += page["changes"]
        if not page["changes"]:
            assert page["next"] == since
            return changes
        since = page["next"]


class TestChangeFeed:
    def test_stores_and_deletes_are_listed_once_each_in_order(self, scale_out: ScaleOut) -> None:
        start = read_all(scale_out)
        since = start[-1]["seq"] if start else 0
        _, instances = sample_study(instances=5)
        assert scale_out.stow(instances).status_code == 200
        study, series, sop = uids_of(instances[0])
        assert scale_out.http.delete(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}").status_code == 200
        changes = [c for c in read_all(scale_out, since) if c["kind"] != "stable"]
        assert [c["kind"] for c in changes] == ["stored"] * 5 + ["deleted"]
        assert sorted(c["sop_instance_uid"] for c in changes[:5]) == sorted(uids_of(i)[2] for i in instances)
        assert changes[5]["sop_instance_uid"] == sop
        positions = [c["seq"] for c in changes]
        assert positions == sorted(set(positions))

    def test_readers_on_both_workers_at_once_see_each_quiet_study_announced_exactly_once(
        self, scale_out: ScaleOut
    ) -> None:
        studies = []
        for _ in range(3):
            _, instances = sample_study(instances=2)
            assert scale_out.stow(instances).status_code == 200
            studies.append(uids_of(instances[0])[0])
        time.sleep(STABLE_SECONDS)  # the quiet period itself is what is under test
        barrier = threading.Barrier(READERS)

        def read(_: int) -> int:
            barrier.wait()
            with scale_out.server.client() as http:
                return http.get("/api/changes", params={"limit": 1000}).status_code

        with ThreadPoolExecutor(READERS) as pool:
            assert list(pool.map(read, range(READERS))) == [200] * READERS
        stable = [c["study_instance_uid"] for c in read_all(scale_out) if c["kind"] == "stable"]
        for study in studies:
            assert stable.count(study) == 1

    def test_the_feed_is_for_admins_only(self, scale_out: ScaleOut) -> None:
        minted = scale_out.http.post("/api/tokens", json={"name": "feed-viewer", "role": "viewer"})
        assert minted.status_code == 201, minted.text
        headers = {"Authorization": f"Bearer {minted.json()['token']}"}
        assert scale_out.http.get("/api/changes", headers=headers).status_code == 403

    def test_a_negative_position_or_a_too_large_page_is_a_bad_request(self, scale_out: ScaleOut) -> None:
        assert scale_out.http.get("/api/changes", params={"since": -1}).status_code == 400
        assert scale_out.http.get("/api/changes", params={"limit": 1001}).status_code == 400
