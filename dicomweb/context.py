"""What every handler needs from the app: the archive, the settings, the public base URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine

from auth.access import AccessControl
from dicomweb.settings import Settings
from dicomweb.visibility import VisibleStudies
from storage.archive import Archive
from storage.errors import InvalidQuery

if TYPE_CHECKING:
    from litestar import Request


__all__ = ["AppContext", "app_context", "dicomweb_base", "query_pairs", "refuse_nul"]

DICOMWEB_ROOT = "/dicomweb"


@dataclass(frozen=True)
class AppContext:
    """The composition root's objects, kept in `app.state.context`."""

    settings: Settings
    archive: Archive
    access: AccessControl
    visible_studies: VisibleStudies
    engine: Engine


def app_context(request: Request[Any, Any, Any]) -> AppContext:
    """The AppContext of the app serving `request`."""
    context: AppContext = request.app.state.context
    return context


def dicomweb_base(request: Request[Any, Any, Any]) -> str:
    """The DICOMweb base URL clients should use (RetrieveURL, BulkDataURI)."""
    public = app_context(request).settings.public_url
    root = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return root + DICOMWEB_ROOT


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Refuse a URL holding a NUL character before any handler reads it (a before-request hook).

    No DICOM UID, value or name holds NUL, and PostgreSQL text cannot store one: let through, it
    turned a client's mistake into a database error (500). A coroutine, so that Litestar runs it on
    the loop: a plain function it would hand to a worker thread on every request.

    Raises:
        InvalidQuery: the path or the query string holds NUL (%00).
    """
    if "\x00" in request.scope["path"] or b"%00" in request.scope.get("query_string", b""):
        raise InvalidQuery("the URL holds a NUL character (%00), which no DICOM UID, value or name contains")


def query_pairs(request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
    """The query string as decoded (name, value) pairs, repeats kept, '+' read as a space.

    Raises:
        InvalidQuery: the percent-encoding does not decode to UTF-8.
    """
    raw = request.scope.get("query_string", b"")
    try:
        text = raw.decode("ascii")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidQuery(f"the query string is not percent-encoded UTF-8 ({exc})") from exc
