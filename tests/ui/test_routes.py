"""The UI's routes on a real server: public static files, the viewer's SPA fallback, its rebased bundles."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
from ui_helpers import VIEWER_DIST

if TYPE_CHECKING:
    from conftest import LiveServer  # tests/conftest.py

STUDY_ROUTE = "/viewer/viewer?StudyInstanceUIDs=1.2.3"


class TestPublicPages:
    def test_the_study_list_page_loads_without_a_token_and_allows_only_our_own_assets(
        self, ui_server: LiveServer
    ) -> None:
        page = httpx.get(ui_server.url + "/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
            assert httpx.get(ui_server.url + asset).status_code == 200, asset

    def test_the_share_landing_page_loads_for_any_token_shape(self, ui_server: LiveServer) -> None:
        page = httpx.get(ui_server.url + "/share/anything-at-all")
        assert page.status_code == 200
        assert "landing.js" in page.text

    def test_data_behind_the_pages_still_needs_a_token(self, ui_server: LiveServer) -> None:
        assert httpx.get(ui_server.url + "/dicomweb/studies").status_code == 401
        assert httpx.get(ui_server.url + "/api/status").status_code == 401


class TestViewerRoutes:
    def test_a_viewer_route_is_answered_with_index_html_so_reload_and_deep_links_work(
        self, ui_server: LiveServer
    ) -> None:
        for path in (STUDY_ROUTE, "/viewer/", "/viewer", "/viewer/some/deeper/route"):
            answer = httpx.get(ui_server.url + path)
            assert answer.status_code == 200, path
            assert 'window.PUBLIC_URL="/viewer/"' in answer.text, path
            assert answer.headers["cache-control"] == "no-cache"

    def test_every_script_and_style_of_index_html_is_served_under_viewer(self, ui_server: LiveServer) -> None:
        index = httpx.get(ui_server.url + "/viewer/").text
        assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', index)
        assert assets
        for asset in assets:
            assert asset.startswith("/viewer/"), asset
            answer = httpx.get(ui_server.url + asset)
            assert answer.status_code == 200, asset

    def test_bundles_load_their_chunks_and_codec_workers_from_viewer(self, ui_server: LiveServer) -> None:
        index = httpx.get(ui_server.url + "/viewer/").text
        app_bundle = re.search(r'src="(/viewer/app\.bundle\.[^"]+\.js)"', index)
        assert app_bundle is not None
        body = httpx.get(ui_server.url + app_bundle.group(1)).text
        assert '__webpack_require__.p = "/viewer/"' in body
        assert '__webpack_require__.p = "/"' not in body

    def test_the_codecs_webassembly_is_served_as_application_wasm(self, ui_server: LiveServer) -> None:
        wasm = next(VIEWER_DIST.glob("*.wasm"))
        answer = httpx.get(f"{ui_server.url}/viewer/{wasm.name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/wasm"

    def test_the_viewer_config_points_at_this_servers_dicomweb(self, ui_server: LiveServer) -> None:
        config = httpx.get(ui_server.url + "/viewer/app-config.js")
        assert config.status_code == 200
        assert config.headers["content-type"].startswith("text/javascript")
        assert "routerBasename: '/viewer'" in config.text
        assert "window.location.origin + '/dicomweb'" in config.text

    def test_a_missing_viewer_file_is_a_404_not_the_html_page(self, ui_server: LiveServer) -> None:
        answer = httpx.get(ui_server.url + "/viewer/no-such-chunk.bundle.js")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/problem+json"

    def test_paths_out_of_the_viewer_folder_are_refused(self, ui_server: LiveServer) -> None:
        for path in (
            "/viewer/..%2F..%2Fpyproject.toml",
            "/viewer/%2e%2e/%2e%2e/pyproject.toml",
            "/ui/../pyproject.toml",
        ):
            answer = httpx.get(ui_server.url + path)
            assert answer.status_code == 404, path
            assert "[project]" not in answer.text
