"""Reports and attachments (issue #9): PDF, pictures and text reports become instances of the study."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
from dicomdata import dataset_of, sample_study, uids_of
from PIL import Image

if TYPE_CHECKING:
    import httpx
    from live_pacs import Pacs

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _attach(pacs: Pacs, study: str, headers: dict[str, str] | None = None, **form: object) -> httpx.Response:
    # Every field as a multipart/form-data part, as a browser's FormData sends them.
    parts = {name: value if isinstance(value, tuple) else (None, str(value)) for name, value in form.items()}
    return pacs.http.post(f"/api/studies/{study}/attachments", files=parts, headers=headers)


def _png() -> bytes:
    picture = io.BytesIO()
    Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)).save(picture, "PNG")
    return picture.getvalue()


class TestAttachments:
    def test_a_pdf_becomes_an_encapsulated_pdf_of_the_study(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        pacs.store(data)
        study = uids_of(data)[0]
        response = _attach(
            pacs, study, title="Radiology report", status="final", file=("r.pdf", PDF, "application/pdf")
        )
        assert response.status_code == 201, response.text
        attached = response.json()
        assert (attached["kind"], attached["status"], attached["title"]) == ("pdf", "final", "Radiology report")
        (part,) = pacs.retrieve(urlsplit(attached["retrieve_url"]).path)
        stored = dataset_of(part.content)
        assert stored.EncapsulatedDocument[: len(PDF)] == PDF
        assert stored.EncapsulatedDocumentLength == len(PDF)
        assert (stored.StudyInstanceUID, stored.PatientID) == (study, dataset_of(data).PatientID)
        assert stored.VerificationFlag == "VERIFIED"

    def test_pictures_and_text_reports_are_listed_newest_first(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        pacs.store(data)
        study = uids_of(data)[0]
        assert _attach(pacs, study, title="Key image", file=("k.png", _png(), "image/png")).status_code == 201
        report = _attach(pacs, study, title="Findings", status="preliminary", text="No acute findings.")
        assert report.status_code == 201, report.text
        listed = pacs.http.get(f"/api/studies/{study}/attachments").json()
        assert [(item["kind"], item["status"]) for item in listed] == [
            ("text", "preliminary"),
            ("image", "preliminary"),
        ]
        (sr,) = pacs.retrieve(urlsplit(listed[0]["retrieve_url"]).path)
        content = dataset_of(sr.content)
        assert content.ContentSequence[0].TextValue == "No acute findings."
        assert content.CompletionFlag == "PARTIAL"
        studies = pacs.http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()
        assert studies[0]["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances

    def test_what_is_not_a_pdf_or_picture_is_refused_and_nothing_is_stored(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        pacs.store(data)
        study = uids_of(data)[0]
        response = _attach(pacs, study, title="Bad", file=("x.pdf", b"MZ\x90\x00 not a pdf", "application/pdf"))
        assert response.status_code == 400
        assert "JPEG or PNG" in response.json()["detail"]
        assert pacs.http.get(f"/api/studies/{study}/attachments").json() == []

    def test_an_unknown_study_is_404_and_a_viewer_may_not_attach(self, pacs: Pacs) -> None:
        assert _attach(pacs, "1.2.3.999", title="x", text="y").status_code == 404
        _, (data,) = sample_study()
        pacs.store(data)
        viewer = pacs.auth(pacs.mint_token("viewer"))
        assert _attach(pacs, uids_of(data)[0], viewer, title="x", text="y").status_code == 403
