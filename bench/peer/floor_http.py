"""The HTTP floor: the cheapest durable STOW-like endpoint on the server's stack (litestar + uvicorn).

POST /dicomweb/studies streams the body into a temporary file, fsyncs it, renames it and fsyncs the
folder (the rename is only durable then), and answers a tiny JSON 200: no multipart parsing, no
index, no auth. What one request per instance costs on this stack before webpacs does any work.

    .venv/bin/python bench/peer/floor_http.py --port 8090 --dir /tmp/floor-http
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

import anyio.to_thread
import uvicorn
from litestar import Litestar, Request, post


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_app(folder: Path) -> Litestar:
    @post("/dicomweb/studies", status_code=200)
    async def store(request: Request) -> dict[str, int]:
        name = uuid.uuid4().hex
        temporary = folder / f".{name}"
        size = 0
        with temporary.open("wb") as file:
            async for chunk in request.stream():
                file.write(chunk)
                size += len(chunk)
        # fsync blocks for milliseconds: in a worker thread, so parallel requests overlap their waits.
        await anyio.to_thread.run_sync(_fsync, temporary)
        temporary.rename(folder / name)
        await anyio.to_thread.run_sync(_fsync, folder)
        return {"stored": size}

    return Litestar(route_handlers=[store])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(make_app(args.dir), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
