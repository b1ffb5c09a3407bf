"""Run the app and learn the response's status: what the audit trail and the metrics both need."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["call_with_status"]


async def call_with_status(
    next_app: ASGIApp, scope: Scope, receive: Receive, send: Send, done: Callable[[int], None]
) -> None:
    """Call `next_app`, then `done(status)` with the status it answered (also when it raised)."""
    status = 500

    async def watched(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await next_app(scope, receive, watched)
    except Exception as exc:
        status = getattr(exc, "status_code", 500)  # answered by Litestar's exception handling, outside
        raise
    finally:
        done(status)
