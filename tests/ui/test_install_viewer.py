"""ui/install_viewer.py: the public path rewrite and the idempotent set-up (on a small stand-in dist)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

INSTALLER = Path(__file__).resolve().parents[2] / "ui" / "install_viewer.py"

INDEX = (
    '<html><head><meta name="msapplication-TileImage" content="/assets/tile.png">'
    '<script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<script src="/app-config.js"></script><script defer src="/app.bundle.1.js"></script>'
    '<a href="//example.org/x">x</a></head></html>'
)


@pytest.fixture(scope="module")
def installer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_viewer", INSTALLER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["install_viewer"] = module
    spec.loader.exec_module(module)
    return module


def stand_in_dist(folder: Path) -> Path:
    folder.mkdir()
    (folder / "index.html").write_text(INDEX)
    (folder / "app.bundle.1.js").write_text('x=1;\n__webpack_require__.p = "/";\ny="/";\n')
    (folder / "sub").mkdir()
    (folder / "sub" / "codec.worker.js").write_text('__webpack_require__.p = "/";')
    (folder / "plain.js").write_text('const root = "/";')
    return folder


class TestRebase:
    def test_index_html_and_every_bundle_including_workers_point_at_viewer(
        self, installer: ModuleType, tmp_path: Path
    ) -> None:
        dist = stand_in_dist(tmp_path / "dist")
        assert installer._rebase(dist) == 2
        html = (dist / "index.html").read_text()
        assert 'window.PUBLIC_URL="/viewer/"' in html
        assert 'src="/viewer/app-config.js"' in html
        assert 'src="/viewer/app.bundle.1.js"' in html
        assert 'href="/viewer/manifest.json"' in html
        assert 'content="/viewer/assets/tile.png"' in html
        assert 'href="//example.org/x"' in html  # protocol-relative URLs are not ours to move
        assert (dist / "app.bundle.1.js").read_text() == 'x=1;\n__webpack_require__.p = "/viewer/";\ny="/";\n'
        assert (dist / "sub" / "codec.worker.js").read_text() == '__webpack_require__.p = "/viewer/";'
        assert (dist / "plain.js").read_text() == 'const root = "/";'

    def test_a_build_without_the_known_public_path_is_refused(self, installer: ModuleType, tmp_path: Path) -> None:
        dist = stand_in_dist(tmp_path / "dist")
        (dist / "index.html").write_text("<html></html>")
        with pytest.raises(installer.InstallError, match="PUBLIC_URL"):
            installer._rebase(dist)


class TestIdempotence:
    def test_an_installed_viewer_with_the_current_config_is_left_alone(
        self, installer: ModuleType, tmp_path: Path
    ) -> None:
        target = tmp_path / "viewer-dist"
        target.mkdir()
        (target / installer.STAMP).write_text(json.dumps(installer._wanted_stamp()))
        assert installer.install(target) is False

    def test_a_changed_config_or_version_triggers_a_new_install(self, installer: ModuleType, tmp_path: Path) -> None:
        target = tmp_path / "viewer-dist"
        target.mkdir()
        (target / installer.STAMP).write_text(json.dumps({**installer._wanted_stamp(), "version": "3.0.0"}))
        assert installer._installed(target) is False
