"""What the browser tests do often: seed studies, sign in as a person would, read the viewer's pixels."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import httpx
    from conftest import LiveServer  # tests/conftest.py
    from playwright.sync_api import Browser, BrowserContext, Page

VIEWER_DIST: Final = Path(__file__).resolve().parents[2] / "ui" / "viewer-dist"
LAPTOP: Final = {"width": 1366, "height": 820}
TABLET: Final = {"width": 768, "height": 1024}

# What a viewport canvas shows, read from its pixels (cornerstone draws each viewport into a 2D
# canvas): size, pixels that are not black, and distinct colours among a sample (capped at 300).
CANVAS_STATS: Final = """
window.__canvasStats = () => {
  const canvas = document.querySelector('canvas.cornerstone-canvas');
  if (!canvas || !canvas.width) return null;
  const context = canvas.getContext('2d');
  if (!context) return null;
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4 * 7) {
    const value = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16);
    if (value) lit += 1;
    if (seen.size < 300) seen.add(value);
  }
  return { width: canvas.width, height: canvas.height, lit, distinct: seen.size };
};
"""


def store(client: httpx.Client, files: list[bytes]) -> None:
    """STOW-RS `files`, up to 50 per request; fails unless every one is stored."""
    for start in range(0, len(files), 50):
        boundary = uuid.uuid4().hex.encode()
        parts = b"".join(
            b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
            for data in files[start : start + 50]
        )
        answer = client.post(
            "/dicomweb/studies",
            content=parts + b"--" + boundary + b"--\r\n",
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}',
                "Accept": "application/dicom+json",
            },
        )
        assert answer.status_code == 200, answer.text


def new_context(browser: Browser, *, viewport: dict[str, int] = LAPTOP) -> BrowserContext:
    """A fresh browser profile (no storage, no cookies) with the canvas probe installed."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.add_init_script(CANVAS_STATS)
    context.set_default_timeout(30_000)
    return context


def sign_in_with_token(page: Page, server: LiveServer, token: str | None = None) -> None:
    """Sign in on the login page with an API token, as a person would (the 'API token' field)."""
    page.goto(server.url + "/")
    page.get_by_text("Use an API token instead").click()
    page.get_by_label("API token").fill(token or server.token)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("heading", name="Studies").wait_for()


def wait_for_pixels(page: Page, timeout: float = 90_000) -> dict[str, int]:
    """Wait until the viewer's canvas shows an image (many distinct pixel values); its stats."""
    handle = page.wait_for_function(
        "() => { const stats = window.__canvasStats(); return stats && stats.distinct > 10 ? stats : null; }",
        timeout=timeout,
        polling=100,
    )
    stats: dict[str, int] = handle.json_value()
    return stats
