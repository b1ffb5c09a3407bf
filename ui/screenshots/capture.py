"""Take the README's screenshots of the main screens (headless Debian chromium, a throwaway archive).

    .venv/bin/python ui/screenshots/capture.py

Writes study-list.png, upload.png, share.png, reports.png, viewer.png, users.png, forwarding.png,
share-landing.png and tablet.png beside this file, on pydicom's bundled sample images.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path += [str(_REPO / "tests"), str(_REPO / "tests" / "ui")]
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above
from dicomdata import bundled, dataset_of, part10  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from ui_helpers import TABLET, new_context, sign_in_with_token, store, wait_for_pixels  # noqa: E402

HERE = Path(__file__).resolve().parent
SAMPLES = {
    "CT_small.dcm": ("ROENTGEN^WILHELM", "PID-0001", "CT chest", "ST. MARY"),
    "MR_small.dcm": ("CURIE^MARIE", "PID-0002", "MR brain", "ST. MARY"),
    "JPEG2000.dcm": ("HOUNSFIELD^GODFREY", "PID-0003", "CT abdomen", "GENERAL"),
    "SC_rgb_jpeg_dcmtk.dcm": ("DAMADIAN^RAYMOND", "PID-0004", "Secondary capture", "GENERAL"),
}


def samples() -> list[bytes]:
    """The bundled sample images as four named patients' studies (Part-10 bytes, as stored)."""
    files = []
    for name, (patient, patient_id, description, institution) in SAMPLES.items():
        dataset = dataset_of(bundled(name))
        dataset.PatientName, dataset.PatientID = patient, patient_id
        dataset.StudyDescription, dataset.InstitutionName = description, institution
        dataset.ReferringPhysicianName = "WELBY^MARCUS"
        dataset.AccessionNumber = patient_id.replace("PID", "ACC")
        files.append(part10(dataset, dataset.file_meta.TransferSyntaxUID))
    return files


def shot(page: Page, name: str) -> None:
    """Save what `page` shows as <name>.png beside this script."""
    page.screenshot(path=str(HERE / f"{name}.png"))


def main() -> int:
    """Fill a throwaway archive, walk through the main screens and save each one."""
    with tempfile.TemporaryDirectory(prefix="webpacs-screens-") as folder:
        server = start_server(Path(folder))
        try:
            with server.client() as client:
                store(client, samples())
                node = {"ae_title": "READING1", "host": "10.0.0.21", "port": 104, "description": "reading room"}
                client.post("/api/dicom-nodes", json=node).raise_for_status()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--headless=new", "--no-sandbox", "--enable-unsafe-swiftshader"],
                )
                context = new_context(browser, viewport={"width": 1280, "height": 720})
                page = context.new_page()
                sign_in_with_token(page, server)
                page.locator("table.studies tbody tr").first.wait_for()
                shot(page, "study-list")
                page.get_by_role("link", name="Upload").click()
                page.locator("input[type=file]:not([webkitdirectory])").set_input_files(
                    [
                        {"name": "CT_small.dcm", "mimeType": "application/dicom", "buffer": bundled("CT_small.dcm")},
                        {"name": "MR_small.dcm", "mimeType": "application/dicom", "buffer": bundled("MR_small.dcm")},
                        {"name": "report.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 not DICOM"},
                    ]
                )
                page.locator(".upload-summary", has_text="Done:").wait_for()
                shot(page, "upload")
                page.get_by_role("link", name="Studies").click()
                page.get_by_label("Patient ID", exact=True).fill("PID-0002")
                page.get_by_role("button", name="Search", exact=True).click()
                page.get_by_role("button", name="Share").first.click()
                dialog = page.get_by_role("dialog")
                dialog.get_by_label("PIN (optional)").fill("2468")
                dialog.get_by_role("button", name="Create link").click()
                link = dialog.get_by_label("Share link").input_value()
                shot(page, "share")
                page.keyboard.press("Escape")
                page.get_by_role("button", name="Reports").first.click()
                dialog = page.get_by_role("dialog")
                dialog.get_by_label("Title").fill("MR brain report")
                dialog.get_by_label("Status").select_option("final")
                dialog.get_by_label("Or a text report").fill("No acute intracranial findings.")
                dialog.get_by_role("button", name="Attach").click()
                dialog.get_by_role("button", name="Open MR brain report").click()
                dialog.locator("article.report").wait_for()
                shot(page, "reports")
                page.keyboard.press("Escape")
                page.get_by_role("link", name="Users").click()
                page.get_by_label("User name").fill("dr.welby")
                page.get_by_label("Password").fill("a long passphrase")
                page.get_by_label("Role").select_option("referring")
                page.get_by_label("Referring physicians").fill("WELBY^MARCUS")
                page.get_by_role("button", name="Create user").click()
                page.locator("tr", has_text="dr.welby").wait_for()
                shot(page, "users")
                page.get_by_role("link", name="Forwarding").click()
                rule = page.locator("form.rule-form")
                rule.get_by_label("Rule name").fill("ct-to-reading-room")
                rule.get_by_label("Trigger").select_option("stable")
                rule.get_by_label("To DICOM node (AE title)").fill("READING1")
                rule.get_by_label("Modalities").fill("CT")
                rule.get_by_label("Institutions").fill("ST. MARY*")
                rule.get_by_role("button", name="Add rule").click()
                page.locator("tr", has_text="ct-to-reading-room").wait_for()
                shot(page, "forwarding")
                page.get_by_role("link", name="Studies").click()
                page.get_by_label("Patient ID", exact=True).fill("PID-0001")
                page.get_by_role("button", name="Search", exact=True).click()
                page.get_by_role("link", name="Open").first.click()
                wait_for_pixels(page)
                page.get_by_role("button", name="Skip all").click()
                page.wait_for_timeout(1500)  # thumbnails finish drawing; only for the picture
                shot(page, "viewer")
                context.close()
                recipient = new_context(browser, viewport={"width": 800, "height": 600})
                landing = recipient.new_page()
                landing.goto(link)
                landing.get_by_label("PIN").wait_for()
                shot(landing, "share-landing")
                recipient.close()
                tablet = new_context(browser, viewport=TABLET)
                page = tablet.new_page()
                sign_in_with_token(page, server)
                page.locator("table.studies tbody tr").first.wait_for()
                shot(page, "tablet")
                tablet.close()
                browser.close()
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
