"""The DIMSE floor: a pynetdicom C-STORE SCP that acknowledges every instance with 0x0000 and stores nothing.

What pynetdicom alone costs per C-STORE (PDU decoding, DIMSE state machine, one Python thread per
association), with the bridge's PDU size and TCP_NODELAY, so no bridge on pynetdicom can beat it.
With `--forward URL` it is the cheapest bridge the design allows: each data set is POSTed as it
arrived to URL/dicomweb/studies (one kept-alive connection per association thread) and acknowledged
only after the 200, as webpacs' bridge does, with no parsing on either side (bench/peer/floor_http.py).

    .venv/bin/python bench/peer/floor_scp.py --port 11199 --ae-title FLOOR [--forward http://127.0.0.1:8090]
"""

from __future__ import annotations

import argparse
import http.client
import signal
import threading
from typing import Any
from urllib.parse import urlsplit

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt

from dimse_bridge.latency import set_tcp_nodelay


def acknowledge(_event: Any) -> int:
    return 0x0000


class Forwarder:
    """EVT_C_STORE: POST the data set, then acknowledge (0x0000) or refuse (0xA700, out of resources)."""

    def __init__(self, url: str) -> None:
        self._address = urlsplit(url)
        self._connections = threading.local()

    def __call__(self, event: Any) -> int:
        connection = getattr(self._connections, "http", None)
        if connection is None:
            connection = self._connections.http = http.client.HTTPConnection(self._address.hostname, self._address.port)
        body = event.request.DataSet.getvalue()
        connection.request("POST", "/dicomweb/studies", body, {"Content-Type": "application/dicom"})
        response = connection.getresponse()
        response.read()
        return 0x0000 if response.status == 200 else 0xA700


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11199)
    parser.add_argument("--ae-title", default="FLOOR")
    # The bridge's dimse_bridge.server._MAX_PDU (private there, hence repeated here).
    parser.add_argument("--max-pdu", type=int, default=262144)
    parser.add_argument("--forward", metavar="URL", help="POST each data set here before acknowledging it")
    args = parser.parse_args()

    ae = AE(ae_title=args.ae_title)
    ae.maximum_pdu_size = args.max_pdu
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    on_store = Forwarder(args.forward) if args.forward else acknowledge
    handlers = [(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_C_STORE, on_store)]
    serve_until_signalled(ae, args.port, handlers)


def serve_until_signalled(ae: AE, port: int, handlers: list[Any]) -> None:
    """Serve `ae` on 127.0.0.1:`port` until SIGTERM or SIGINT (the benchmark scripts stop it so)."""
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
