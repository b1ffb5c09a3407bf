"""The retrieval floor: a Study Root C-GET / C-MOVE SCP on the bridge's own pynetdicom set-up and
send path, serving Part-10 files straight from a folder: no QIDO-RS, no WADO-RS, no spooling.

What a sub-operation costs the bridge minus DICOMweb (its reactors, PDU batching, command-set
encoder, as-stored sending): no bridge on pynetdicom that fetches over HTTP can beat it.

    .venv/bin/python bench/peer/floor_qr.py --data /tmp/peer-bench/data/dimse --port 11198 \
        --destination BENCHSCP=127.0.0.1:11113
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from floor_scp import serve_until_signalled  # this folder: scripts run with it on sys.path
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dimse_bridge.handlers.retrieve import (
    InstanceRef,
    accepted_syntaxes,
    prepare_instance,
    requested_contexts,
    send_as_stored,
)
from dimse_bridge.latency import set_tcp_nodelay
from dimse_bridge.server import configure_pynetdicom
from dimse_bridge.settings import BridgeSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

_PENDING = 0xFF00


def index(folder: Path) -> dict[str, list[tuple[Path, InstanceRef]]]:
    """Every Part-10 file under `folder`, by Study Instance UID."""
    studies: dict[str, list[tuple[Path, InstanceRef]]] = defaultdict(list)
    for path in sorted(folder.rglob("*.dcm")):
        header = dcmread(path, stop_before_pixels=True)
        ref = InstanceRef(
            study=str(header.StudyInstanceUID),
            series=str(header.SeriesInstanceUID),
            sop_instance=str(header.SOPInstanceUID),
            sop_class=str(header.SOPClassUID),
            transfer_syntax=str(header.file_meta.TransferSyntaxUID),
        )
        studies[ref.study].append((path, ref))
    return studies


def sub_operations(
    files: list[tuple[Path, InstanceRef]], usable: Callable[[], Mapping[str, set[str]]]
) -> Iterator[tuple[int, Any]]:
    """As the bridge does per part: read the File Meta, then send as stored (or converted)."""
    for path, _ in files:
        yield _PENDING, prepare_instance(path, usable(), read_file_meta_info(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of Part-10 files to serve")
    parser.add_argument("--port", type=int, default=11198)
    parser.add_argument("--ae-title", default="FLOOR")
    parser.add_argument("--max-pdu", type=int, default=262144)
    parser.add_argument("--destination", action="append", default=[], help="C-MOVE destination AE=HOST:PORT")
    args = parser.parse_args()
    studies = index(args.data)
    destinations = {}
    for entry in args.destination:
        title, address = entry.split("=", 1)
        host, port = address.rsplit(":", 1)
        destinations[title] = (host, int(port))
    configure_pynetdicom(BridgeSettings(server_url="http://unused.invalid", token="unused"))

    def on_get(event: Any) -> Iterator[Any]:
        files = studies.get(str(event.identifier.StudyInstanceUID), [])
        send_as_stored(event.assoc)
        yield len(files)
        yield from sub_operations(files, lambda: accepted_syntaxes(event.assoc.accepted_contexts))

    def on_move(event: Any) -> Iterator[Any]:
        destination = destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield None, None
            return
        files = studies.get(str(event.identifier.StudyInstanceUID), [])
        accepted: list[Any] = []

        def on_accepted(accept_event: Any) -> None:
            accepted.append(accept_event.assoc.accepted_contexts)
            send_as_stored(accept_event.assoc)

        handlers = [(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_ACCEPTED, on_accepted)]
        yield *destination, {"contexts": requested_contexts([ref for _, ref in files]), "evt_handlers": handlers}
        yield len(files)
        yield from sub_operations(files, lambda: accepted_syntaxes(accepted[0] if accepted else []))

    ae = AE(ae_title=args.ae_title)
    ae.maximum_pdu_size = args.max_pdu
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    handlers = [(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)]
    serve_until_signalled(ae, args.port, handlers)


if __name__ == "__main__":
    main()
