"""One log line per request, with a request id the client also gets back (X-Request-ID).

Only method, path, status, duration, size and principal name are logged: never query strings
(they can hold patient names) nor tokens (a share link's page path holds one: it is cut out).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import ASGIMiddleware

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestLog"]

log = logging.getLogger("webpacs.request")

_SHARE_TOKEN_IN_PATH = re.compile(r"^(/share/)[^/]+")


class RequestLog(ASGIMiddleware):
    """Logs each HTTP request when its response is complete."""

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Wrap `send` to learn the status and size, then log."""
        headers = dict(scope.get("headers", []))
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or secrets.token_hex(8)
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 0, "bytes": 0}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await next_app(scope, receive, send_logged)
        except Exception as exc:
            # Answered by Litestar's exception handling, which sits outside the middleware stack.
            state["status"] = getattr(exc, "status_code", 500)
            raise
        finally:
            user = scope.get("user")
            log.info(
                "%s %s %s %d %.1fms %dB id=%s by=%s",
                scope.get("method", "-"),
                _SHARE_TOKEN_IN_PATH.sub(r"\1…", scope.get("path", "-")),
                scope.get("http_version", "-"),
                state["status"],
                (time.perf_counter() - started) * 1000,
                state["bytes"],
                request_id,
                getattr(user, "name", "-"),
            )
