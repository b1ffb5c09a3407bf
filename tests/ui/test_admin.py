"""Administration in chromium: users with study filters (and their sign-in), tokens, DICOM nodes, audit, status."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from playwright.sync_api import expect
from ui_helpers import new_context, sign_in_with_token

if TYPE_CHECKING:
    from conftest import Seeded  # tests/ui/conftest.py
    from playwright.sync_api import Browser, Page


def admin_page(page: Page, seeded: Seeded, title: str) -> None:
    sign_in_with_token(page, seeded.server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name=title, exact=True).click()


class TestUsers:
    def test_a_user_made_here_signs_in_with_a_password_and_sees_only_the_studies_of_the_filter(
        self, page: Page, browser: Browser, seeded: Seeded
    ) -> None:
        name = f"rad{uuid.uuid4().hex[:6]}"
        admin_page(page, seeded, "Users")
        form = page.locator("form.user-form")
        form.get_by_label("User name").fill(name)
        form.get_by_label("Password").fill("correct horse battery")
        form.get_by_label("Role").select_option("radiologist")
        form.get_by_label("Study descriptions").fill("MR*")
        form.get_by_role("button", name="Create user").click()
        row = page.locator("tr", has_text=name)
        expect(row).to_contain_text("radiologist")
        expect(row).to_contain_text("StudyDescription: MR*")

        user = new_context(browser)
        try:
            own = user.new_page()
            own.goto(seeded.server.url + "/")
            own.get_by_label("User name").fill(name)
            own.get_by_label("Password").fill("correct horse battery")
            own.get_by_role("button", name="Sign in", exact=True).click()
            rows = own.locator("table.studies tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("LOVELACE")
            # A radiologist may share but not delete, and has no admin pages.
            expect(rows.first.get_by_role("button", name="Share")).to_be_visible()
            expect(rows.first.get_by_role("button", name="Delete")).to_have_count(0)
            expect(own.get_by_role("link", name="Users")).to_have_count(0)
            expect(own.get_by_role("link", name="My tokens")).to_be_visible()
        finally:
            user.close()

    def test_a_wrong_password_is_refused_on_the_sign_in_page(self, page: Page, seeded: Seeded) -> None:
        page.goto(seeded.server.url + "/")
        page.get_by_label("User name").fill("nobody-here")
        page.get_by_label("Password").fill("wrong password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Not signed in")


class TestTokens:
    def test_a_token_is_shown_once_listed_and_revoked(self, page: Page, seeded: Seeded) -> None:
        name = f"script-{uuid.uuid4().hex[:6]}"
        admin_page(page, seeded, "API tokens")
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Role", exact=True).select_option("uploader")
        page.get_by_role("button", name="Create token").click()
        token = page.get_by_label("New token").input_value()
        assert token.startswith("wp_")
        row = page.locator("tr", has_text=name)
        expect(row).to_contain_text("uploader")
        row.get_by_role("button", name=f"Revoke {name}").click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
        expect(page.locator("tr", has_text=name)).to_contain_text("revoked")
        with seeded.server.client() as client:
            client.headers["Authorization"] = f"Bearer {token}"
            assert client.get("/dicomweb/studies").status_code == 401


class TestDicomNodes:
    def test_a_node_is_added_and_removed(self, page: Page, seeded: Seeded) -> None:
        ae = f"UI{uuid.uuid4().hex[:6].upper()}"
        admin_page(page, seeded, "DICOM nodes")
        page.get_by_label("AE title").fill(ae)
        page.get_by_label("Host").fill("127.0.0.1")
        page.get_by_label("Port").fill("11113")
        page.get_by_role("button", name="Add node").click()
        expect(page.locator("tr", has_text=ae)).to_contain_text("127.0.0.1:11113")
        page.get_by_role("button", name=f"Remove {ae}").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove").click()
        expect(page.locator("tr", has_text=ae)).to_have_count(0)


class TestAuditAndStatus:
    def test_the_audit_log_filters_by_action(self, page: Page, seeded: Seeded) -> None:
        admin_page(page, seeded, "Audit log")
        page.get_by_label("Action").select_option("search")
        page.get_by_role("button", name="Filter").click()
        cells = page.locator("td[data-label='Action']")
        expect(cells.first).to_have_text("search")
        assert set(cells.all_inner_texts()) == {"search"}

    def test_the_status_page_shows_the_archives_counts(self, page: Page, seeded: Seeded) -> None:
        admin_page(page, seeded, "Status")
        facts = page.locator("dl.facts")
        expect(facts).to_contain_text("Version")
        studies = facts.locator("dt:has-text('Studies') + dd")
        assert int(studies.inner_text().replace(",", "")) >= 33
