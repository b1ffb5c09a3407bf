"""Upload in chromium: files chosen or dropped are stored by STOW-RS; failures are listed with reasons."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from dicomdata import sample_study
from playwright.sync_api import expect
from ui_helpers import sign_in_with_token

if TYPE_CHECKING:
    from conftest import Seeded  # tests/ui/conftest.py
    from playwright.sync_api import Page


def open_upload(page: Page, seeded: Seeded) -> None:
    sign_in_with_token(page, seeded.server)
    page.get_by_role("link", name="Upload").click()
    page.get_by_role("heading", name="Upload").wait_for()


def stored_instances(seeded: Seeded, study_uid: str) -> int:
    with seeded.server.client() as client:
        answer = client.get(f"/dicomweb/studies/{study_uid}/instances")
        return 0 if answer.status_code == 204 else len(answer.json())


class TestChosenFiles:
    def test_dicom_files_are_stored_and_a_text_file_is_listed_as_failed_with_the_reason(
        self, page: Page, seeded: Seeded
    ) -> None:
        spec, files = sample_study(instances=2, size=32)
        open_upload(page, seeded)
        page.locator("input[type=file]:not([webkitdirectory])").set_input_files(
            [
                {"name": "one.dcm", "mimeType": "application/dicom", "buffer": files[0]},
                {"name": "two.dcm", "mimeType": "application/dicom", "buffer": files[1]},
                {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a DICOM file at all"},
            ]
        )
        expect(page.locator(".upload-summary")).to_contain_text("Done: 2 instance(s) stored, 1 file(s) failed.")
        expect(page.locator(".upload-list li.ok")).to_have_count(2)
        failure = page.locator(".failure-list li")
        expect(failure).to_have_count(1)
        expect(failure).to_contain_text("notes.txt")
        # The reason is the server's own words (ErrorComment or problem detail), not a bare status.
        assert len(failure.inner_text().split(":", 1)[1].strip()) > 10
        assert stored_instances(seeded, spec.study_uid) == 2
        for bar in page.locator(".upload-list progress").all():
            assert bar.get_attribute("value") == bar.get_attribute("max")


class TestDroppedFiles:
    def test_files_dropped_on_the_zone_are_stored(self, page: Page, seeded: Seeded) -> None:
        spec, files = sample_study(instances=3, size=32)
        open_upload(page, seeded)
        payload = [base64.b64encode(data).decode() for data in files]
        page.evaluate(
            """payload => {
                const transfer = new DataTransfer();
                payload.forEach((data, index) => {
                    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                    transfer.items.add(new File([bytes], `image${index}.dcm`, { type: 'application/dicom' }));
                });
                const zone = document.querySelector('.drop-zone');
                zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true }));
                zone.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true }));
            }""",
            payload,
        )
        expect(page.locator(".upload-summary")).to_contain_text("Done: 3 instance(s) stored, 0 file(s) failed.")
        expect(page.locator(".failure-list")).to_have_count(0)
        assert stored_instances(seeded, spec.study_uid) == 3
