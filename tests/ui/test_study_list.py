"""The study list in chromium: sign in, search, date shortcuts, paging, sorting, tablet width, keyboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.sync_api import expect
from ui_helpers import TABLET, new_context, sign_in_with_token

if TYPE_CHECKING:
    from conftest import Seeded  # tests/ui/conftest.py
    from playwright.sync_api import Browser, Page

ROWS = "table.studies tbody tr"


def search(page: Page, **fields: str) -> None:
    for label, value in fields.items():
        page.get_by_label(label.replace("_", " "), exact=True).fill(value)
    page.get_by_role("button", name="Search", exact=True).click()


class TestSignIn:
    def test_an_api_token_signs_in_and_shows_the_study_list(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        expect(page.locator(ROWS).first).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    def test_a_wrong_token_is_refused_with_the_reason(self, page: Page, seeded: Seeded) -> None:
        page.goto(seeded.server.url + "/")
        page.get_by_text("Use an API token instead").click()
        page.get_by_label("API token").fill("wp_not-a-real-token")
        page.get_by_role("button", name="Use token").click()
        expect(page.get_by_role("alert")).to_contain_text("Not signed in")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    def test_sign_out_forgets_the_token(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert page.evaluate("window.localStorage.getItem('webpacs.session')") is None


class TestSearch:
    def test_a_name_wildcard_finds_the_patient_and_only_that_patient(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        search(page, Patient_name="LOVEL*")
        rows = page.locator(ROWS)
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("LOVELACE, ADA")
        expect(rows.first).to_contain_text("UI-ADA")
        expect(rows.first.locator("td[data-label='Series']")).to_have_text("1")
        expect(rows.first.locator("td[data-label='Images']")).to_have_text("3")

    def test_patient_id_accession_modality_and_description_narrow_the_list(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        turing = seeded.studies["turing"]
        search(page, Patient_ID="UI-ALAN")
        expect(page.locator(ROWS)).to_have_count(1)
        search(page, Patient_ID="", Accession=turing.accession)
        expect(page.locator(ROWS)).to_have_count(1)
        expect(page.locator(ROWS).first).to_contain_text("TURING")
        page.get_by_label("Accession", exact=True).fill("")
        page.get_by_label("Modality", exact=True).select_option("MR")
        search(page, Description="MR*")
        expect(page.locator(ROWS)).to_have_count(1)
        expect(page.locator(ROWS).first).to_contain_text("LOVELACE")

    def test_referring_physician_and_institution_are_search_keys(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        search(page, Referring_physician="WELBY*", Patient_ID="UI-GRACE")
        expect(page.locator(ROWS)).to_have_count(1)
        search(page, Referring_physician="NOBODY*")
        expect(page.get_by_text("No study matches.")).to_be_visible()
        search(page, Referring_physician="", Patient_ID="", Institution="NO SUCH PLACE")
        expect(page.get_by_text("No study matches.")).to_be_visible()

    def test_the_today_shortcut_finds_todays_study_and_not_older_ones(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        page.get_by_role("button", name="Today").click()
        rows = page.locator(ROWS)
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("LOVELACE")
        page.get_by_role("button", name="Yesterday").click()
        expect(page.get_by_text("No study matches.")).to_be_visible()
        page.get_by_role("button", name="Any date").click()
        expect(rows).to_have_count(25)


class TestPagingAndSorting:
    def test_next_and_previous_page_through_the_matches(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        search(page, Patient_name="CROWD*")
        expect(page.locator(ROWS)).to_have_count(25)
        expect(page.get_by_text("Studies 1–25")).to_be_visible()
        first_page = set(page.locator(f"{ROWS} td[data-label='Patient ID']").all_inner_texts())
        page.get_by_role("button", name="Next").click()
        expect(page.get_by_text("Studies 26–30")).to_be_visible()
        expect(page.locator(ROWS)).to_have_count(5)
        expect(page.get_by_role("button", name="Next")).to_be_disabled()
        second_page = set(page.locator(f"{ROWS} td[data-label='Patient ID']").all_inner_texts())
        assert not first_page & second_page
        assert len(first_page | second_page) == 30
        page.get_by_role("button", name="Previous").click()
        expect(page.get_by_text("Studies 1–25")).to_be_visible()

    def test_a_column_header_sorts_the_page_both_ways(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        search(page, Patient_name="CROWD*")
        header = page.get_by_role("button", name="Patient ID")
        header.click()
        ids = page.locator(f"{ROWS} td[data-label='Patient ID']").all_inner_texts()
        assert ids == sorted(ids)
        expect(page.locator("th[aria-sort='ascending']")).to_have_count(1)
        page.get_by_role("button", name="Patient ID").click()
        ids = page.locator(f"{ROWS} td[data-label='Patient ID']").all_inner_texts()
        assert ids == sorted(ids, reverse=True)
        expect(page.locator("th[aria-sort='descending']")).to_have_count(1)


class TestLayoutAndKeyboard:
    def test_on_a_tablet_the_list_fits_the_screen_without_sideways_scrolling(
        self, browser: Browser, seeded: Seeded
    ) -> None:
        context = new_context(browser, viewport=TABLET)
        try:
            page = context.new_page()
            sign_in_with_token(page, seeded.server)
            expect(page.locator(ROWS).first).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            open_button = page.locator(ROWS).first.get_by_role("link", name="Open")
            box = open_button.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= TABLET["width"]
        finally:
            context.close()

    def test_search_works_from_the_keyboard_alone(self, page: Page, seeded: Seeded) -> None:
        sign_in_with_token(page, seeded.server)
        page.get_by_label("Patient name", exact=True).focus()
        page.keyboard.type("HOPPER*")
        page.keyboard.press("Enter")
        expect(page.locator(ROWS)).to_have_count(1)
        # Tab order reaches the study's actions, and Enter on "Open" goes to the viewer.
        page.locator(ROWS).first.get_by_role("link", name="Open").focus()
        assert page.evaluate("document.activeElement.textContent") == "Open"
        page.keyboard.press("Enter")
        page.wait_for_url("**/viewer/viewer**")
