"""Study actions in chromium (issues #7, #9): send to a DICOM node, reports and attachments, editing, recycle bin.

One server (the `operations` fixture) whose bridge really delivers to a DCMTK storescp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.sync_api import expect
from ui_helpers import TABLET, new_context, sign_in_with_token

if TYPE_CHECKING:
    from conftest import Operations  # tests/ui/conftest.py
    from playwright.sync_api import Browser, Locator, Page

ROWS = "table.studies tbody tr"
# A small PDF (the server checks the "%PDF-" signature), padded by a comment past the 1 KiB under which
# the metadata carries a value inline, so that the UI reads it from its BulkDataURI.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    + b"%"
    + b"x" * 2000
    + b"\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


# Keeps every Blob the page turns into a URL, to read back what a new tab was given.
KEEP_BLOBS = """
window.__blobs = [];
const createObjectURL = URL.createObjectURL;
URL.createObjectURL = blob => { window.__blobs.push(blob); return createObjectURL(blob); };
"""


def study_row(page: Page, operations: Operations, patient_id: str) -> Locator:
    """Sign in as the admin, search one patient and return the study's row."""
    sign_in_with_token(page, operations.server)
    page.get_by_label("Patient ID", exact=True).fill(patient_id)
    page.get_by_role("button", name="Search", exact=True).click()
    rows = page.locator(ROWS)
    expect(rows).to_have_count(1)
    return rows.first


class TestSendToNode:
    def test_a_study_sent_to_a_node_shows_its_progress_until_the_bridge_delivered_every_instance(
        self, page: Page, operations: Operations
    ) -> None:
        row = study_row(page, operations, "OPS-MARIE")
        row.get_by_role("button", name="Send").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("DICOM node").select_option("STORESCP")
        dialog.get_by_role("button", name="Send", exact=True).click()
        expect(dialog.locator(".job-state")).to_have_text("done", timeout=60_000)
        expect(dialog.locator(".job-progress")).to_contain_text("2 of 2 sent")
        sop_uids = {f.name for f in operations.received.iterdir()}
        assert len(sop_uids) >= 2, sop_uids


class TestReports:
    def test_a_pdf_and_a_text_report_are_attached_listed_and_opened(self, page: Page, operations: Operations) -> None:
        page.add_init_script(KEEP_BLOBS)
        row = study_row(page, operations, "OPS-EMMY")
        row.get_by_role("button", name="Reports").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("No report or attachment yet.")
        dialog.get_by_label("Title").fill("Referral letter")
        dialog.get_by_label("File (PDF, JPEG or PNG)").set_input_files(
            {"name": "letter.pdf", "mimeType": "application/pdf", "buffer": PDF}
        )
        dialog.get_by_role("button", name="Attach").click()
        expect(dialog.locator("tr", has_text="Referral letter")).to_contain_text("PDF")
        dialog.get_by_label("Title").fill("MR brain report")
        dialog.get_by_label("Status").select_option("final")
        dialog.get_by_label("Or a text report").fill("No acute findings.")
        dialog.get_by_role("button", name="Attach").click()
        report = dialog.locator("tr", has_text="MR brain report")
        expect(report).to_contain_text("Text report")
        expect(report).to_contain_text("final")

        report.get_by_role("button", name="Open MR brain report").click()
        expect(dialog.locator("article.report")).to_contain_text("No acute findings.")
        with page.context.expect_page() as opened:
            dialog.get_by_role("button", name="Open Referral letter").click()
        tab = opened.value
        assert tab.url.startswith("blob:"), tab.url
        pdf = page.evaluate("async () => Array.from(new Uint8Array(await window.__blobs.at(-1).arrayBuffer()))")
        assert bytes(pdf).rstrip(b"\0") == PDF


class TestEditing:
    def test_a_changed_description_is_written_and_the_study_list_shows_it(
        self, page: Page, operations: Operations
    ) -> None:
        row = study_row(page, operations, "OPS-ROSALIND")
        row.get_by_role("button", name="Edit").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_label("Patient ID", exact=True)).to_have_value("OPS-ROSALIND")
        dialog.get_by_label("Description", exact=True).fill("DNA X-RAY DIFFRACTION")
        dialog.get_by_role("button", name="Save changes").click()
        expect(page.get_by_role("dialog")).to_have_count(0)
        expect(page.locator(ROWS).first.locator("td[data-label='Description']")).to_have_text("DNA X-RAY DIFFRACTION")

    def test_a_series_moved_to_another_study_changes_both_studies_counts(
        self, page: Page, operations: Operations
    ) -> None:
        target = operations.studies["curie"].study_uid
        row = study_row(page, operations, "OPS-LISE")
        row.get_by_role("button", name="Edit").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Target study UID").fill(target)
        dialog.get_by_role("button", name="Move series 1").click()
        expect(page.locator("#status-line")).to_contain_text("Moved series")
        dialog.get_by_role("button", name="Cancel").click()
        expect(page.locator("dialog")).to_have_count(0)
        # The moved study was the source's only series: the source is gone, the target has one more image.
        page.get_by_label("Patient ID", exact=True).fill("OPS-MARIE")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator(ROWS).first.locator("td[data-label='Images']")).to_have_text("3")


class TestRecycleBin:
    def test_a_deleted_study_waits_in_the_recycle_bin_and_comes_back_when_restored(
        self, page: Page, operations: Operations
    ) -> None:
        row = study_row(page, operations, "OPS-EMMY")
        row.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(page.get_by_text("No study matches.")).to_be_visible()
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Recycle bin").click()
        entry = page.locator("tr", has_text="OPS-EMMY")
        expect(entry).to_contain_text("NOETHER")
        entry.get_by_role("button", name="Restore").click()
        expect(page.locator("tr", has_text="OPS-EMMY")).to_have_count(0)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Studies").click()
        page.get_by_label("Patient ID", exact=True).fill("OPS-EMMY")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.locator(ROWS)).to_have_count(1)


class TestTablet:
    def test_at_tablet_width_the_send_and_edit_actions_are_reachable_by_keyboard(
        self, browser: Browser, operations: Operations
    ) -> None:
        context = new_context(browser, viewport=TABLET)
        try:
            page = context.new_page()
            row = study_row(page, operations, "OPS-MARIE")
            send = row.get_by_role("button", name="Send")
            expect(send).to_be_in_viewport()
            send.focus()
            page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_label("DICOM node")).to_be_visible()
            page.keyboard.press("Escape")
            expect(dialog).to_have_count(0)
        finally:
            context.close()
