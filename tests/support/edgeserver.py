"""The in-process edge app (tests.support.edgeapp) behind a real uvicorn on 127.0.0.1.

For clients that are synchronous and speak real HTTP (schemathesis): the app, its database and
uvicorn run on an event loop in a thread of their own; ``edge_server`` yields the base URL and
an admin's Bearer header, and stops the server and the loop on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from tests.support.edgeapp import edge_app


@dataclass
class EdgeServer:
    base: str
    admin: dict[str, str]


@contextlib.contextmanager
def edge_server(tmp: Path, max_document_bytes: int = 64 * 1024) -> Iterator[EdgeServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    ready = threading.Event()
    stop = threading.Event()
    found: dict[str, object] = {}

    async def serve() -> None:
        async with edge_app(tmp, max_document_bytes) as app:
            server = uvicorn.Server(uvicorn.Config(app.app, log_level="warning", access_log=False, lifespan="off"))
            task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
            for _ in range(400):
                if server.started or task.done():
                    break
                await asyncio.sleep(0.01)
            found["admin"] = app.admin
            ready.set()
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.05)
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the test thread
            found["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="edge-server", daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the edge server did not start"
        if "error" in found:
            raise AssertionError(f"the edge server failed: {found['error']!r}")
        yield EdgeServer(f"http://127.0.0.1:{sock.getsockname()[1]}", found["admin"])  # type: ignore[arg-type]
    finally:
        stop.set()
        thread.join(15)
        sock.close()
