"""Install the pinned prebuilt OHIF viewer under ui/viewer-dist/, served by webpacs at /viewer/.

Run by `make serve` and `make test` (target `viewer`); quiet, and a no-op when the pinned version is
already installed with the current config. The dist comes from the npm registry (`npm pack`, the
ordinary client) and is never committed.

The prebuilt dist bakes its public path "/" into index.html and into every bundle, codec workers
included (`__webpack_require__.p = "/"`). Served under /viewer/ those must be rewritten, or chunks
and workers 404 and JPEG 2000 frames fail to decode; the router also needs `routerBasename`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["install", "main"]

PACKAGE: Final = "@ohif/app"
VERSION: Final = "3.13.2"
# The registry's own integrity value for that tarball: a changed download is refused.
INTEGRITY: Final = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
BASE: Final = "/viewer/"

HERE: Final = Path(__file__).resolve().parent
CONFIG: Final = HERE / "viewer" / "app-config.js"
DEFAULT_TARGET: Final = HERE / "viewer-dist"
STAMP: Final = ".webpacs-installed.json"

# Root-relative references in index.html: attributes and the PUBLIC_URL global.
_HTML_PATHS: Final = re.compile(r'((?:href|src|content)=")/(?!/)')
_HTML_PUBLIC_URL: Final = 'window.PUBLIC_URL="/"'
# webpack's runtime public path in the app bundle, its chunks and its workers.
_BUNDLE_PUBLIC_PATH: Final = re.compile(r'(__webpack_require__\.p\s*=\s*)"/"')


class InstallError(RuntimeError):
    """The viewer could not be installed; the message says why and what to do."""


def _wanted_stamp() -> dict[str, str]:
    return {
        "package": PACKAGE,
        "version": VERSION,
        "base": BASE,
        "config_sha256": hashlib.sha256(CONFIG.read_bytes()).hexdigest(),
        "installer_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }


def _installed(target: Path) -> bool:
    try:
        return bool(json.loads((target / STAMP).read_text()) == _wanted_stamp())
    except (OSError, ValueError):
        return False


def _fetch(workdir: Path) -> Path:
    """`npm pack` the pinned version into `workdir`; the tarball's path after checking its integrity.

    Raises:
        InstallError: npm is missing or fails, or the tarball's digest differs from the pinned one.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed: apt-get install -y npm (it fetches the OHIF viewer)")
    done = subprocess.run(  # noqa: S603 (fixed arguments, npm found on PATH)
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise InstallError(f"npm pack {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-2000:]}")
    tarball = workdir / done.stdout.strip().splitlines()[-1]
    algorithm, _, expected = INTEGRITY.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise InstallError(f"{tarball.name}: {algorithm} {digest} is not the pinned {expected}; refusing it")
    return tarball


def _extract_dist(tarball: Path, staging: Path) -> None:
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("package/dist/")]
        if not members:
            raise InstallError(f"{tarball.name} holds no package/dist/: not a prebuilt {PACKAGE}")
        archive.extractall(staging, members=members, filter="data")


def _rebase(dist: Path) -> int:
    """Rewrite the public path "/" to BASE in index.html and every bundle; the number of bundles changed.

    Raises:
        InstallError: index.html or the bundles no longer look as expected (another OHIF build).
    """
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    if _HTML_PUBLIC_URL not in html:
        raise InstallError(f"{index}: no {_HTML_PUBLIC_URL}; the installer does not know this OHIF build")
    html = _HTML_PATHS.sub(rf"\1{BASE}", html).replace(_HTML_PUBLIC_URL, f'window.PUBLIC_URL="{BASE}"')
    index.write_text(html, encoding="utf-8")
    changed = 0
    for bundle in dist.rglob("*.js"):
        text = bundle.read_text(encoding="utf-8", errors="surrogateescape")
        rebased, count = _BUNDLE_PUBLIC_PATH.subn(rf'\1"{BASE}"', text)
        if count:
            bundle.write_text(rebased, encoding="utf-8", errors="surrogateescape")
            changed += 1
    if changed == 0:
        raise InstallError(f"no bundle in {dist} sets __webpack_require__.p; the installer does not know this build")
    return changed


def install(target: Path = DEFAULT_TARGET, *, force: bool = False) -> bool:
    """Install the pinned viewer into `target` unless it is there already; whether anything was done.

    The new dist is prepared next to `target` and swapped in whole, so a failed run never leaves a
    half-rewritten viewer behind.

    Raises:
        InstallError: fetching, checking or rewriting failed (the message says why).
    """
    if not force and _installed(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".viewer-") as work:
        workdir = Path(work)
        _extract_dist(_fetch(workdir), workdir)
        dist = workdir / "package" / "dist"
        _rebase(dist)
        shutil.copyfile(CONFIG, dist / "app-config.js")
        (dist / STAMP).write_text(json.dumps(_wanted_stamp(), indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        dist.rename(target)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: `python ui/install_viewer.py [--target DIR] [--force]`."""
    parser = argparse.ArgumentParser(description=f"Install {PACKAGE}@{VERSION} for webpacs under {BASE}")
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="where to put it (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="reinstall even when up to date")
    args = parser.parse_args(argv)
    try:
        if install(args.target, force=args.force):
            sys.stderr.write(f"installed {PACKAGE}@{VERSION} in {args.target}\n")
    except InstallError as exc:
        sys.stderr.write(f"viewer install: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
