"""DIMSE latency: Nagle off, and pynetdicom's reactor loops woken by events instead of 1 ms polls.

pynetdicom 3.0 runs two polling loops per association. The DUL thread sleeps 1 ms whenever a pass
found nothing to do (`DULServiceProvider.run_reactor`, `_run_loop_delay`), and the association
thread sleeps 1 ms before each look at its DIMSE message queue (`Association._run_reactor`). Each
DIMSE exchange crosses them several times: on the bridge's side a C-ECHO on a new association paid
about six of these sleeps, a C-FIND three or more, every C-STORE (and every sub-operation) one or two.

`install()` keeps both loops, each still bounded (timers, kill flags and release requests are still
seen: the reactor's wait keeps pynetdicom's 1 ms, the DUL's is 10 ms), but ends each wait as soon as
there is work:
- the DUL waits in `select()` on its socket and on a wake-up socket that a primitive queued for
  sending, or a request to stop, pokes (`_PromptDUL`);
- the association reactor's 1 ms sleep waits on its DIMSE message queue instead, and on requests to
  pause it (`_ReactorClock`).
These are the only two pynetdicom internals the bridge touches; tests/dimse_bridge/test_latency.py
checks they still apply to the installed pynetdicom (a new version that renames them fails there).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final

import pynetdicom.association
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["install", "set_tcp_nodelay"]

# The sleep of `Association._run_reactor`: pynetdicom's own 1 ms, kept as the bound of its wait.
_POLL: Final = 0.001
# The DUL's idle wait. Data, primitives to send and stop requests end it at once; only pynetdicom's
# ARTIM timer (seconds) waits for its end, so it can be longer than pynetdicom's 1 ms sleep and cost
# less CPU while an association is idle.
_DUL_IDLE: Final = 0.01
# The sleep of a thread waiting for an association's reactor to pause (`send_c_store` and the like).
_PAUSE_POLL: Final = 0.0001


def set_tcp_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: send each PDU at once (no Nagle).

    Otherwise every DIMSE round trip can wait on the peer's delayed ACK (~40 ms). Bound to the
    bridge's listening AE and to the associations it opens (C-MOVE destinations).
    """
    sock = event.assoc.dul.socket
    raw = getattr(sock, "socket", None)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _WakingQueue(queue.Queue[Any]):
    """The DUL's queue of primitives to send: a put into the empty queue wakes the DUL from its idle wait."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def _put(self, item: Any) -> None:
        # Called under the queue's lock. The DUL only waits after it found the queue empty, so only
        # a put into an empty queue needs to wake it (one byte, not one per PDU of a data set). A full
        # buffer means a wake-up is already pending; a closed one, that the DUL has ended.
        if not self.queue:
            with contextlib.suppress(OSError):
                self._wake.send(b"\0")
        super()._put(item)


class _PromptDUL(DULServiceProvider):
    """pynetdicom's DUL, idling in `select()` (≤ 10 ms) on its socket and its wake-up socket."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_in, wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        wake_out.setblocking(False)
        self._wake_out = wake_out
        self.to_provider_queue = _WakingQueue(wake_out)
        # The loop's own sleep becomes a yield: the waiting happens in `_is_transport_event`.
        self._run_loop_delay = 0

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        if self.event_queue.empty() and self.to_provider_queue.empty():
            self._idle_wait()
        return False

    def _idle_wait(self) -> None:
        connection = self.socket
        raw = getattr(connection, "socket", None) if getattr(connection, "_is_connected", False) else None
        watched: list[socket.socket] = [self._wake_in] if raw is None else [self._wake_in, raw]
        try:
            readable, _, _ = select.select(watched, [], [], _DUL_IDLE)
        except (OSError, ValueError):
            # The connection closed under us; the next pass of the loop sees it.
            time.sleep(_POLL)
            return
        if self._wake_in in readable:
            with contextlib.suppress(OSError):
                self._wake_in.recv(4096)

    def stop_dul(self) -> bool:
        # pynetdicom sets the kill flag and spins until the thread has ended: end its wait now.
        stopping = self.state_machine.current_state == "Sta1"
        if stopping:
            self._kill_thread = True
            with contextlib.suppress(OSError):
                self._wake_out.send(b"\0")
        return super().stop_dul() if stopping else False

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._wake_in.close()
            self._wake_out.close()


class _ReactorClock:
    """`time` as `pynetdicom.association` sees it: the reactor's poll waits on its message queue.

    It also ends that wait when another thread asks the reactor to pause (the C-STORE
    sub-operations of a C-MOVE do, once each): that thread clears `_reactor_checkpoint` and polls
    every 0.1 ms until the reactor has reached it, which took up to the reactor's whole 1 ms.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Every association whose reactor ever waited here; gone with the association.
        self._reactors: weakref.WeakSet[Association] = weakref.WeakSet()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        if seconds == _POLL and isinstance(thread, Association):
            self._reactor_wait(thread, seconds)
            return
        if seconds == _PAUSE_POLL:
            self._wake_pausing_reactors()
        time.sleep(seconds)

    def _reactor_wait(self, assoc: Association, seconds: float) -> None:
        if assoc not in self._reactors:
            with self._lock:
                self._reactors.add(assoc)
        messages = assoc.dimse.msg_queue
        # Queue.put notifies `not_empty`; the queue's own deque is read under the same lock.
        with messages.not_empty:
            if not messages.queue and assoc._reactor_checkpoint.is_set():
                messages.not_empty.wait(seconds)

    def _wake_pausing_reactors(self) -> None:
        with self._lock:
            pausing = [assoc for assoc in self._reactors if not assoc._reactor_checkpoint.is_set()]
        for assoc in pausing:
            condition = assoc.dimse.msg_queue.not_empty
            with condition:
                condition.notify_all()


def install() -> None:
    """Make every association created from now on in this process use the prompt reactors."""
    # Association.__init__ looks the DUL class up in its module at each call.
    setattr(pynetdicom.association, "DULServiceProvider", _PromptDUL)  # noqa: B010
    setattr(pynetdicom.association, "time", _ReactorClock())  # noqa: B010
