"""OHIF in chromium on our DICOMweb: a study opens from the list, its pixels render, reload works, tools measure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dicomdata import bundled, uids_of
from playwright.sync_api import expect
from ui_helpers import sign_in_with_token, store, wait_for_pixels

if TYPE_CHECKING:
    from conftest import Seeded  # tests/ui/conftest.py
    from playwright.sync_api import Page


def open_in_viewer(page: Page, seeded: Seeded, patient_id: str) -> None:
    sign_in_with_token(page, seeded.server)
    page.get_by_label("Patient ID", exact=True).fill(patient_id)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("table.studies tbody tr")).to_have_count(1)
    page.get_by_role("link", name="Open").click()
    page.wait_for_url("**/viewer/viewer?StudyInstanceUIDs=**")


class TestOpenStudy:
    def test_open_shows_the_studys_pixels_on_the_canvas(self, page: Page, seeded: Seeded) -> None:
        thumbnails: list[int] = []
        page.on("response", lambda answer: thumbnails.append(answer.status) if "/thumbnail" in answer.url else None)
        open_in_viewer(page, seeded, "UI-ADA")
        stats = wait_for_pixels(page)
        # The seeded images are noise: a rendered one has many grey levels over much of the canvas.
        assert stats["distinct"] > 50
        assert stats["lit"] > 1000
        assert seeded.studies["lovelace"].study_uid in page.url
        # The token never stays in the address bar (OHIF reads it once and removes it).
        assert "token=" not in page.url
        # The study browser's thumbnail is the server's JPEG (WADO-RS /thumbnail), fetched with the token.
        expect(page.locator("[data-cy='study-browser-thumbnail'] img").first).to_be_visible()
        assert thumbnails
        assert set(thumbnails) == {200}

    def test_a_reload_of_the_viewer_shows_the_study_again(self, page: Page, seeded: Seeded) -> None:
        open_in_viewer(page, seeded, "UI-ALAN")
        wait_for_pixels(page)
        page.reload()
        stats = wait_for_pixels(page)
        assert stats["distinct"] > 50

    def test_a_deep_link_opens_the_study_for_a_signed_in_browser(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        uid = seeded.studies["hopper"].study_uid
        page.goto(f"{seeded.server.url}/viewer/viewer?StudyInstanceUIDs={uid}")
        assert wait_for_pixels(page)["distinct"] > 50

    def test_without_a_session_the_viewer_sends_the_browser_to_sign_in(self, page: Page, seeded: Seeded) -> None:
        uid = seeded.studies["hopper"].study_uid
        page.goto(f"{seeded.server.url}/viewer/viewer?StudyInstanceUIDs={uid}")
        page.wait_for_url("**/?next=**")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


class TestCompressedImages:
    # Frames travel as stored (transfer-syntax=*) and are decoded in the browser by OHIF's codec
    # workers, which load only when their public path was rebased to /viewer/.
    @pytest.mark.parametrize(
        "name",
        [
            "JPEG2000.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_RLE.dcm",
            "SC_rgb_jpeg_dcmtk.dcm",
            "SC_rgb_jpeg_gdcm.dcm",
        ],
    )
    def test_a_compressed_image_is_decoded_and_drawn(self, page: Page, seeded: Seeded, name: str) -> None:
        data = bundled(name)
        with seeded.server.client() as client:
            store(client, [data])
        study_uid = uids_of(data)[0]
        sign_in_with_token(page, seeded.server)
        page.goto(f"{seeded.server.url}/viewer/viewer?StudyInstanceUIDs={study_uid}")
        assert wait_for_pixels(page)["distinct"] > 20


class TestTools:
    def test_the_length_tool_measures_on_the_image(self, page: Page, seeded: Seeded) -> None:
        open_in_viewer(page, seeded, "UI-ADA")
        wait_for_pixels(page)
        # OHIF's first-visit tour covers the toolbar in a fresh profile: skip it as a person would.
        page.get_by_role("button", name="Skip all").click()
        page.locator("[data-cy='Length']").first.click()
        canvas = page.locator("canvas.cornerstone-canvas").first
        box = canvas.bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 100, y)
        page.mouse.down()
        page.mouse.move(x, y, steps=5)
        page.mouse.move(x + 100, y, steps=5)
        page.mouse.up()
        # The annotation's label, drawn over the image, states the length in millimetres.
        label = page.locator("svg text", has_text="mm").first
        expect(label).to_be_visible()
        millimetres = float(label.text_content().split()[0])
        assert millimetres > 0
