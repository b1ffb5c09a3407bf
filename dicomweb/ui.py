"""The browser side: the web UI at `/`, its assets at `/ui/`, the OHIF viewer at `/viewer/`, share links.

Every route here is public (see PUBLIC_PATHS): these are static files, and the data they show comes
from the API with the user's or the share link's token.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.response import File
from litestar.static_files import create_static_files_router

from dicomweb.context import app_context

if TYPE_CHECKING:
    from dicomweb.settings import Settings

__all__ = ["ui_routes"]

WEB_DIR: Final = "web"
VIEWER_DIR: Final = "viewer-dist"

# The pages themselves must never come stale from a cache: they decide which bundles load.
_NO_CACHE: Final = {"Cache-Control": "no-cache"}
_NO_CACHE_FILES: Final = frozenset({"index.html", "app-config.js"})
# The UI pages load nothing from elsewhere (hospital networks are often offline; no CDN), embed in
# no other site, and run only our own scripts.
_UI_POLICY: Final = {
    **_NO_CACHE,
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _ui_dir(request: Request[Any, Any, Any]) -> Path:
    return app_context(request).settings.effective_ui_dir


def _page(request: Request[Any, Any, Any], name: str) -> File:
    path = _ui_dir(request) / WEB_DIR / name
    if not path.is_file():
        raise ServiceUnavailableException(f"the web UI is missing ({path}); set WEBPACS_UI_DIR to the ui/ folder")
    return _file(path, _UI_POLICY)


@get("/", include_in_schema=False)
async def study_list(request: Request[Any, Any, Any]) -> File:
    """The study list, upload and administration pages (one page; the script shows the right one)."""
    return _page(request, "index.html")


@get("/share/{token:str}", include_in_schema=False)
async def share_landing(request: Request[Any, Any, Any], token: str) -> File:
    """A share link's landing page: it redeems `token` (asking for the PIN when needed) in the browser."""
    return _page(request, "share.html")


# Litestar treats /viewer and /viewer/ as one path: both get index.html.
@get(["/viewer", "/viewer/{file_path:path}"], include_in_schema=False)
async def viewer(request: Request[Any, Any, Any], file_path: str = "/") -> File:
    """A file of the installed OHIF dist, or its index.html for the viewer's own routes (reload, deep links).

    Raises:
        ServiceUnavailableException: the viewer is not installed (`make viewer`).
        NotFoundException: a file that looks like an asset (has a suffix) does not exist.
    """
    dist = _ui_dir(request) / VIEWER_DIR
    index = dist / "index.html"
    if not index.is_file():
        raise ServiceUnavailableException(f"the OHIF viewer is not installed in {dist}; run 'make viewer'")
    relative = PurePosixPath(file_path.lstrip("/"))
    if ".." in relative.parts:
        raise NotFoundException(f"{file_path!r} is not a viewer file")
    candidate = dist.joinpath(*relative.parts) if relative.parts else index
    if candidate.is_file():
        return _file(candidate, _cache_headers(candidate.name))
    if relative.suffix:
        # A missing chunk or image must fail loudly, not come back as the HTML page.
        raise NotFoundException(f"the viewer has no file {file_path!r}")
    # Any other path is one of the single-page app's routes (/viewer/viewer?StudyInstanceUIDs=...).
    return _file(index, _NO_CACHE)


def _file(path: Path, headers: dict[str, str]) -> File:
    # The handler's own default media type would win over the file's: name it from the suffix
    # (WebAssembly must be application/wasm for the codecs' streaming compile).
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return File(path, media_type=media_type, content_disposition_type="inline", headers=headers)


def _cache_headers(name: str) -> dict[str, str]:
    return _NO_CACHE if name in _NO_CACHE_FILES else {"Cache-Control": "public, max-age=3600"}


def ui_routes(settings: Settings) -> list[Any]:
    """The UI's route handlers and its asset router (the assets' folder comes from `settings`)."""
    assets: Router = create_static_files_router(
        path="/ui",
        directories=[settings.effective_ui_dir / WEB_DIR],
        name="ui-assets",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
    )
    return [study_list, share_landing, viewer, assets]
