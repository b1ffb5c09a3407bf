"""The AE registry as the bridge sees it: `GET /api/dicom-nodes`, reused for a few seconds."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Literal

from dimse_bridge.client import BridgeError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dimse_bridge.client import DicomNode, DicomWebClient

__all__ = ["NodeRegistry", "Permission"]

_LOG = logging.getLogger(__name__)

Permission = Literal["store", "find", "move"]


class NodeRegistry:
    """Cached view of the registered DICOM nodes, refreshed when older than `ttl` seconds.

    When the server cannot be reached the last known list is kept (a short outage of the API must
    not turn every modality away); before the first successful read the registry is empty.
    """

    def __init__(
        self,
        client: DicomWebClient,
        *,
        ttl: float,
        accept_unregistered: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is fetched until first use."""
        self._client = client
        self._ttl = ttl
        self._accept_unregistered = accept_unregistered
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: dict[str, DicomNode] = {}
        self._fetched_at: float | None = None

    def nodes(self, *, max_age: float | None = None) -> Mapping[str, DicomNode]:
        """Every registered node by AE title, refreshed if older than `max_age` (default: the TTL)."""
        limit = self._ttl if max_age is None else min(max_age, self._ttl)
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= limit:
                try:
                    self._nodes = {node.ae_title: node for node in self._client.list_nodes()}
                except BridgeError as exc:
                    _LOG.warning("cannot read the AE registry, keeping the last known: %s", exc)
                self._fetched_at = now
            return self._nodes

    def get(self, ae_title: str, *, refresh_on_miss: bool = False) -> DicomNode | None:
        """The registered node with that AE title (padding ignored), or None.

        With `refresh_on_miss`, a title not in the cached list is looked up again at once, so a
        C-MOVE destination registered a moment ago is found without waiting for the TTL (one GET
        is little next to a retrieval). Permission checks do not: an unregistered caller would
        cost a GET per C-STORE.
        """
        title = ae_title.strip()
        node = self.nodes().get(title)
        if node is None and refresh_on_miss:
            node = self.nodes(max_age=0).get(title)
        return node

    def accepts(self, calling_ae_title: str) -> bool:
        """Whether an association from that calling AE is accepted at all."""
        return self._accept_unregistered or self.get(calling_ae_title) is not None

    def permits(self, calling_ae_title: str, permission: Permission) -> bool:
        """Whether the calling AE may store, find or move/get.

        A registered node has the permissions the registry gives it; an unregistered one, only
        reachable when unregistered callers are accepted, may do everything.
        """
        node = self.get(calling_ae_title)
        if node is None:
            return self._accept_unregistered
        return {"store": node.allow_store, "find": node.allow_find, "move": node.allow_move}[permission]
