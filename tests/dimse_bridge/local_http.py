"""A real HTTP/1.1 server on 127.0.0.1 for the bridge's STOW-RS client, in a thread of the test."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# What a test answers a POST with: status, Content-Type, body.
Answer = tuple[int, str, bytes]


class LocalHttpServer(ThreadingHTTPServer):
    """Answers every POST with `respond(path, headers, body)` and records the bodies and connections.

    With `hang_up`, it closes each connection after its answer without announcing it, as a server
    whose keep-alive timer ran out does. `stop()` ends it.
    """

    daemon_threads = True

    def __init__(self, respond: Callable[[str, dict[str, str], bytes], Answer], *, hang_up: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                server.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                server.bodies.append(body)
                status, content_type, content = respond(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                self.close_connection = hang_up

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
