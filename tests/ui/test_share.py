"""Share links in chromium: created in the study list, opened in a fresh browser with the PIN, revoked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.sync_api import expect
from ui_helpers import new_context, sign_in_with_token, wait_for_pixels

if TYPE_CHECKING:
    from conftest import Seeded  # tests/ui/conftest.py
    from playwright.sync_api import Browser, Page

# What the share-link session may read, asked from inside the recipient's page with its own token.
READ_AS_RECIPIENT = """async other => {
  const token = sessionStorage.getItem('webpacs.shareToken');
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/dicom+json' };
  const studies = await fetch('/dicomweb/studies', { headers });
  const rows = studies.status === 200 ? await studies.json() : [];
  const foreign = await fetch(`/dicomweb/studies/${other}/metadata`, { headers });
  const list = await fetch('/api/share-links', { headers });
  const uids = rows.map(row => row['0020000D'].Value[0]);
  return { status: studies.status, uids, foreign: foreign.status, admin: list.status };
}"""


def create_link(page: Page, seeded: Seeded, patient_id: str, *, pin: str = "") -> str:
    sign_in_with_token(page, seeded.server)
    page.get_by_label("Patient ID", exact=True).fill(patient_id)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("table.studies tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Valid for").select_option("1d")
    if pin:
        dialog.get_by_label("PIN (optional)").fill(pin)
    dialog.get_by_role("button", name="Create link").click()
    url = dialog.get_by_label("Share link").input_value()
    assert f"{seeded.server.url}/share/" in url
    expect(dialog.locator(".share-list li")).not_to_have_count(0)
    return url


class TestShareWithPin:
    def test_the_recipient_types_the_pin_and_sees_that_one_study_and_nothing_else(
        self, page: Page, browser: Browser, seeded: Seeded
    ) -> None:
        url = create_link(page, seeded, "UI-GRACE", pin="4321")
        recipient = new_context(browser)
        try:
            landing = recipient.new_page()
            landing.goto(url)
            landing.get_by_label("PIN").fill("0000")
            landing.get_by_role("button", name="Open the study").click()
            expect(landing.get_by_role("alert")).to_contain_text("Not opened")
            landing.get_by_label("PIN").fill("4321")
            landing.get_by_role("button", name="Open the study").click()
            landing.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=**")
            hopper = seeded.studies["hopper"].study_uid
            assert hopper in landing.url
            assert wait_for_pixels(landing)["distinct"] > 50
            seen = landing.evaluate(READ_AS_RECIPIENT, seeded.studies["turing"].study_uid)
            assert seen["status"] == 200
            assert seen["uids"] == [hopper]
            assert seen["foreign"] in (403, 404)
            assert seen["admin"] in (401, 403)
            # The recipient's browser holds no session of the sender's: the study list asks to sign in.
            landing.goto(seeded.server.url + "/")
            expect(landing.get_by_role("heading", name="Sign in")).to_be_visible()
        finally:
            recipient.close()


class TestRevoke:
    def test_a_revoked_link_is_refused_in_a_fresh_browser(self, page: Page, browser: Browser, seeded: Seeded) -> None:
        url = create_link(page, seeded, "UI-ALAN")
        before = new_context(browser)
        try:
            opened = before.new_page()
            opened.goto(url)
            opened.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=**")
        finally:
            before.close()
        dialog = page.get_by_role("dialog")
        dialog.locator(".share-list li").last.get_by_role("button", name="Revoke").click()
        expect(page.locator("#status-line")).to_contain_text("Share link revoked")
        after = new_context(browser)
        try:
            refused = after.new_page()
            refused.goto(url)
            expect(refused.locator("#status-line")).to_contain_text("does not open any study")
            assert "/viewer/" not in refused.url
        finally:
            after.close()
