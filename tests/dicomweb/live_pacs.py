"""A running webpacs seen from outside: a thin HTTP helper over one live server for the DICOMweb suite."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from dicomdata import ReceivedPart, multipart_body, split_multipart, uids_of

__all__ = ["AS_STORED", "STOW_STATUS", "Pacs", "first", "sequence", "tag_values"]

# Accept header asking for the instance exactly as stored (PS3.18 §8.7.3.5.2: transfer-syntax=*).
AS_STORED: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'

# Store Instances response attributes (PS3.18 §10.5.3).
STOW_STATUS: Final = {
    "RetrieveURL": "00081190",
    "FailedSOPSequence": "00081198",
    "ReferencedSOPSequence": "00081199",
    "ReferencedSOPInstanceUID": "00081155",
    "ReferencedSOPClassUID": "00081150",
    "FailureReason": "00081197",
    "ErrorComment": "00000902",
}


def tag_values(item: dict[str, Any], tag: str) -> list[Any]:
    """The Value list of attribute `tag` of a DICOM JSON object ([] when absent or empty)."""
    return list(item.get(tag, {}).get("Value", []))


def first(item: dict[str, Any], tag: str) -> Any:
    """The first value of attribute `tag` (None when absent or empty)."""
    values = tag_values(item, tag)
    return values[0] if values else None


def sequence(item: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    """The items of sequence `tag` ([] when absent)."""
    return tag_values(item, tag)


@dataclass
class Pacs:
    """One live server (`backend`: sqlite or postgresql) and an admin HTTP client for it."""

    url: str
    token: str
    data_dir: Path
    backend: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, headers=self.auth(), timeout=120)

    def auth(self, token: str | None = None) -> dict[str, str]:
        """The Authorization header for `token` (default: the admin token)."""
        return {"Authorization": f"Bearer {token or self.token}"}

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    def mint_token(self, role: str, name: str | None = None) -> str:
        """A new token with `role`, minted through the management API."""
        response = self.http.post("/api/tokens", json={"name": name or f"tests-{role}", "role": role})
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def log_in_new_user(self, role: str, study_filter: dict[str, list[str]] | None = None) -> str:
        """Create a user with `role` (and study filter) through the API, log in; the access token."""
        username = f"{role}-{uuid.uuid4().hex[:8]}"
        password = "a long enough password"
        body = {"username": username, "password": password, "role": role, "study_filter": study_filter or {}}
        created = self.http.post("/api/users", json=body)
        assert created.status_code == 201, created.text
        login = self.http.post("/api/auth/login", json={"username": username, "password": password}, headers={})
        assert login.status_code == 201, login.text
        return str(login.json()["access_token"])

    # STOW-RS

    def stow(self, parts: list[bytes], *, study: str | None = None) -> httpx.Response:
        """POST the parts as a multipart/related; type="application/dicom" body."""
        body, content_type = multipart_body(parts)
        path = "/dicomweb/studies" + (f"/{study}" if study else "")
        return self.http.post(path, content=body, headers={"Content-Type": content_type})

    def store(self, *parts: bytes) -> dict[str, Any]:
        """STOW the parts and insist that every one was stored (200); the response's DICOM JSON."""
        response = self.stow(list(parts))
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    # QIDO-RS

    def search(
        self, path: str = "/studies", params: dict[str, str] | list[tuple[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """QIDO-RS under /dicomweb; insists on 200 and returns the results."""
        response = self.http.get("/dicomweb" + path, params=params)
        assert response.status_code == 200, f"GET {path} {params}: {response.status_code} {response.text}"
        results: list[dict[str, Any]] = response.json()
        return results

    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) in the archive, by QIDO-RS."""
        return (len(self.search("/studies")), len(self.search("/series")), len(self.search("/instances")))

    def has_instance(self, sop_uid: str) -> bool:
        """Whether QIDO-RS lists the instance."""
        return bool(self.search("/instances", {"SOPInstanceUID": sop_uid}))

    # WADO-RS

    @staticmethod
    def instance_path(data: bytes) -> str:
        """The WADO-RS path of the instance whose Part-10 bytes are `data`."""
        study, series, sop = uids_of(data)
        return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"

    def retrieve(self, path: str, accept: str | None = AS_STORED) -> list[ReceivedPart]:
        """GET a WADO-RS resource; insists on 200 and returns its parts.

        A single-part answer (allowed for one item asked without multipart/related) is one part.
        """
        headers = {"Accept": accept} if accept else {}
        response = self.http.get(path, headers=headers)
        assert response.status_code == 200, f"GET {path} ({accept}): {response.status_code} {response.text}"
        content_type = response.headers["content-type"]
        if not content_type.startswith("multipart/") and accept and not accept.startswith("multipart/"):
            return [ReceivedPart({"content-type": content_type}, response.content)]
        return split_multipart(response.content, content_type)

    def stored_bytes(self, data: bytes) -> bytes:
        """The instance whose bytes are `data` as the server holds it (transfer-syntax=*)."""
        (part,) = self.retrieve(self.instance_path(data))
        return part.content

    def blob_files(self) -> set[Path]:
        """Every blob file in the data dir (the staging folder and temporary files excluded)."""
        root = self.data_dir / "blobs"
        return {
            path
            for path in root.rglob("*")
            if path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts)
        }
