"""Operations pages in chromium (issue #9): forwarding rules and jobs, retention, patient merge, and who sees what.

Shares the `operations` server (a bridge delivering to DCMTK storescp, a recycle bin) with
test_study_actions.py.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from playwright.sync_api import expect
from ui_helpers import sign_in_with_token

if TYPE_CHECKING:
    from conftest import Operations  # tests/ui/conftest.py
    from playwright.sync_api import Page

# Nothing listens on the discard port: a job sent there fails its attempts with the reason.
UNREACHABLE = "http://127.0.0.1:9/dicomweb"


def open_page(page: Page, operations: Operations, title: str, token: str | None = None) -> None:
    sign_in_with_token(page, operations.server, token)
    page.get_by_role("navigation", name="Main").get_by_role("link", name=title, exact=True).click()


def token_of(operations: Operations, role: str) -> str:
    """A new API token of `role`, minted by the admin."""
    with operations.server.client() as client:
        made = client.post("/api/tokens", json={"name": f"ui-{role}-{uuid.uuid4().hex[:6]}", "role": role})
        assert made.status_code == 201, made.text
        token: str = made.json()["token"]
        return token


class TestForwardingRules:
    def test_a_rule_is_created_listed_with_its_conditions_and_removed(self, page: Page, operations: Operations) -> None:
        name = f"ct-{uuid.uuid4().hex[:6]}"
        open_page(page, operations, "Forwarding")
        form = page.locator("form.rule-form")
        form.get_by_label("Rule name").fill(name)
        form.get_by_label("Trigger").select_option("stable")
        form.get_by_label("To DICOM node (AE title)").fill("STORESCP")
        form.get_by_label("Modalities").fill("CT, MR")
        form.get_by_label("Time window").fill("20:00-06:00")
        form.get_by_role("button", name="Add rule").click()
        row = page.locator("tr", has_text=name)
        expect(row).to_contain_text("AE STORESCP")
        expect(row).to_contain_text("modality: CT, MR; time_window: 20:00-06:00")
        with operations.server.client() as client:
            (rule,) = [rule for rule in client.get("/api/forwarding-rules").json() if rule["name"] == name]
        assert rule["conditions"] == {"modality": ["CT", "MR"], "time_window": "20:00-06:00", "time_zone": "UTC"}
        assert rule["trigger"] == "stable"
        row.get_by_role("button", name=f"Remove rule {name}").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        expect(page.locator("tr", has_text=name)).to_have_count(0)


class TestJobs:
    def test_a_failing_job_shows_its_attempts_and_last_error_and_is_cancelled(
        self, page: Page, operations: Operations
    ) -> None:
        study = operations.studies["curie"].study_uid
        with operations.server.client() as client:
            sent = client.post(f"/api/studies/{study}/send", json={"dicomweb_url": UNREACHABLE})
            assert sent.status_code == 202, sent.text
        job = sent.json()["id"]
        open_page(page, operations, "Jobs")
        page.get_by_label("Study UID").fill(study)
        page.get_by_role("button", name="Filter").click()
        row = page.locator("tr", has=page.locator("td[data-label='Job']", has_text=re.compile(f"^{job}$")))
        expect(row.locator("td[data-label='Last error']")).not_to_be_empty(timeout=60_000)
        expect(row.locator("td[data-label='To']")).to_have_text(UNREACHABLE)
        assert int(row.locator("td[data-label='Attempts']").inner_text()) >= 1
        expect(row.locator("td[data-label='State']")).to_have_text("pending")
        row.get_by_role("button", name=f"Cancel job {job}").click()
        expect(row.locator("td[data-label='State']")).to_have_text("cancelled")
        expect(row.get_by_role("button", name=f"Retry job {job}")).to_be_visible()


class TestRetention:
    def test_a_policy_is_added_and_its_dry_run_lists_the_old_study_only(
        self, page: Page, operations: Operations
    ) -> None:
        name = f"ct-10y-{uuid.uuid4().hex[:6]}"
        open_page(page, operations, "Retention")
        page.get_by_label("Policy name").fill(name)
        page.get_by_label("Delete after (days)").fill("3653")
        page.get_by_label("Modality").fill("CT")
        page.get_by_role("button", name="Add policy").click()
        expect(page.locator("tr", has_text=name)).to_contain_text("3653 days")
        page.get_by_role("button", name="Preview").click()
        listed = page.locator("td[data-label='Study']")
        expect(listed).to_have_count(1)
        expect(listed).to_have_text(operations.studies["franklin"].study_uid)
        page.get_by_role("button", name=f"Remove policy {name}").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        expect(page.get_by_role("button", name=f"Remove policy {name}")).to_have_count(0)


class TestMergePatients:
    def test_the_studies_of_a_merged_patient_take_the_other_patients_id(
        self, page: Page, operations: Operations
    ) -> None:
        open_page(page, operations, "Merge patients")
        page.get_by_label("Patient ID to merge").fill("OPS-LINUS-TMP")
        page.get_by_label("Patient ID to keep").fill("OPS-LINUS")
        page.get_by_role("button", name="Merge patients").click()
        page.get_by_role("dialog").get_by_role("button", name="Merge").click()
        expect(page.get_by_text("Merged: 1 study now belong")).to_be_visible()
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Studies").click()
        page.get_by_label("Patient ID", exact=True).fill("OPS-LINUS")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator("table.studies tbody tr")).to_have_count(2)


class TestWhoSeesWhat:
    def test_the_admin_lists_every_role_and_audit_action(self, page: Page, operations: Operations) -> None:
        open_page(page, operations, "API tokens")
        roles = page.get_by_label("Role", exact=True).locator("option").all_inner_texts()
        assert roles == ["admin", "manager", "radiologist", "referring", "viewer", "uploader", "service", "monitoring"]
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
        page.get_by_label("Action").select_option("send")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("td[data-label='Action']").first).to_have_text("send", timeout=30_000)

    def test_a_manager_sends_and_edits_but_has_no_admin_pages_and_picks_the_node(
        self, page: Page, operations: Operations
    ) -> None:
        sign_in_with_token(page, operations.server, token_of(operations, "manager"))
        nav = page.get_by_role("navigation", name="Main")
        for title in ("Jobs", "Recycle bin", "Merge patients"):
            expect(nav.get_by_role("link", name=title)).to_be_visible()
        for title in ("Forwarding", "Retention", "Users"):
            expect(nav.get_by_role("link", name=title, exact=True)).to_have_count(0)
        row = page.locator("table.studies tbody tr").first
        expect(row.get_by_role("button", name="Edit")).to_be_visible()
        row.get_by_role("button", name="Send").click()
        expect(page.get_by_role("dialog").get_by_label("DICOM node", exact=True)).to_contain_text("STORESCP")

    def test_a_viewer_reads_reports_but_may_not_send_edit_or_attach(self, page: Page, operations: Operations) -> None:
        sign_in_with_token(page, operations.server, token_of(operations, "viewer"))
        row = page.locator("table.studies tbody tr").first
        expect(row.get_by_role("button", name="Reports")).to_be_visible()
        for action in ("Send", "Edit", "Delete"):
            expect(row.get_by_role("button", name=action)).to_have_count(0)
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs")).to_have_count(0)
        row.get_by_role("button", name="Reports").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator(".attachment-list")).not_to_be_empty()
        expect(dialog.get_by_role("button", name="Attach")).to_have_count(0)
