"""One instance per STOW-RS request over kept-alive connections; prints instances/s.

Each thread owns one http.client connection (TCP_NODELAY, like the bridge's `StowConnection`) and
posts its share of the files one by one as `multipart/related; type="application/dicom"`, the
file's bytes handed to the kernel with sendfile. Any answer but 200 fails the run.

    .venv/bin/python bench/peer/floor_stow.py --url http://127.0.0.1:8090 --threads 4 FILE...
"""

from __future__ import annotations

import argparse
import http.client
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit


def post_all(url: str, token: str | None, files: list[Path], errors: list[str]) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    path = parts.path.rstrip("/") + "/dicomweb/studies"
    try:
        connection.connect()
        sock = connection.sock
        assert isinstance(sock, socket.socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for file in files:
            connection.putrequest("POST", path, skip_accept_encoding=True)
            if token:
                connection.putheader("Authorization", f"Bearer {token}")
            connection.putheader("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
            connection.putheader("Content-Length", str(len(head) + file.stat().st_size + len(tail)))
            connection.putheader("Accept", "application/dicom+json")
            connection.endheaders()
            sock.sendall(head)
            with file.open("rb") as body:
                sock.sendfile(body)
            sock.sendall(tail)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                errors.append(f"{file}: HTTP {response.status} {answer[:200]!r}")
                return
    except (OSError, http.client.HTTPException) as exc:
        errors.append(f"{url}: {exc!r}")  # a thread's exception would otherwise only be printed
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="server base URL; requests go to <url>/dicomweb/studies")
    parser.add_argument("--token", help="bearer token (webpacs); none for the floor server")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()

    errors: list[str] = []
    threads = [
        threading.Thread(target=post_all, args=(args.url, args.token, args.files[i :: args.threads], errors))
        for i in range(args.threads)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit("\n".join(errors[:3]))
    print(f"{len(args.files) / wall:.1f}")


if __name__ == "__main__":
    main()
