"""The HTTPS server: uvicorn's HTTP/1.1 protocol behind our own capped, timed listener.

uvicorn alone holds every accepted connection as long as the peer likes: a TLS handshake gets
asyncio's 60 s, and a connection that never completes a request head (slowloris: a byte now and
then, or nothing at all after the handshake) is never closed, since its keep-alive timer starts
only after a response. So uvicorn serves here without a listener of its own
(``serve(sockets=[])``: its lifecycle, date header and graceful shutdown), and
broker.limits.CappedListener accepts for it:

- at most ``max_connections`` connections, TLS handshakes included; when full, the oldest
  connection with no request in flight (in its handshake, sending a head, or idle between
  requests) is closed for the newcomer;
- the TLS handshake must finish within ``tls_handshake_timeout``;
- each request head must be complete within ``header_timeout`` of the connection or of the
  previous response (``HeaderTimeoutProtocol``); an idle keep-alive connection is closed after
  ``keep_alive_timeout`` (uvicorn's own timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the C parser (uvicorn[standard]); h11 serves where it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from broker.limits import Admission, CappedListener


class HeaderTimeout:
    """A deadline on every request head for uvicorn's HTTP/1.1 protocols (h11 or httptools),
    telling the listener whether a request is in flight (only a connection without one is
    closed when the server is full). Mixed in before the protocol class."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any], *,
                 admission: Admission | None = None, header_timeout: float = 10.0) -> None:
        super().__init__(config, server_state, app_state)  # type: ignore[call-arg]
        self.admission = admission
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            self._arm()  # part of a head, or the start of the next one: the clock is running
        else:
            self._disarm()
        self._mark()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle keep-alive now: uvicorn's keep-alive timer closes it
        self._mark()

    def _mark(self) -> None:
        if self.admission is not None:
            self.admission.active = not self._waiting_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._header_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            # abort, not close: a TLS close waits for the peer's close_notify, and this peer is
            # the one that does not answer.
            self.transport.abort()


class HeaderTimeoutProtocol(HeaderTimeout, H11Protocol):
    """uvicorn's h11 protocol with the head deadline."""


PROTOCOLS: dict[str, type[HeaderTimeout]] = {"h11": HeaderTimeoutProtocol}
if HttpToolsProtocol is not None:
    class HttpToolsHeaderTimeoutProtocol(HeaderTimeout, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head deadline."""

    PROTOCOLS["httptools"] = HttpToolsHeaderTimeoutProtocol


def protocol_class(parser: str = "auto") -> type[HeaderTimeout]:
    """The protocol for ``http_parser``: ``auto`` is httptools where installed, else h11."""
    if parser == "auto":
        parser = "httptools" if "httptools" in PROTOCOLS else "h11"
    if parser not in PROTOCOLS:
        raise ValueError(f"http_parser {parser!r} is not available (pip install httptools)")
    return PROTOCOLS[parser]


class HttpsServer:
    """uvicorn for ``app`` on the bound, listening ``sock``; ``await start()`` / ``await stop()``."""

    def __init__(self, app: Any, sock: socket.socket, *, certfile: str, keyfile: str, max_connections: int,
                 tls_handshake_timeout: float, header_timeout: float, keep_alive_timeout: float,
                 http_parser: str = "auto") -> None:
        self.sock = sock
        self.header_timeout = header_timeout
        self.protocol_class = protocol_class(http_parser)
        self.config = uvicorn.Config(app, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level="warning",
                                     access_log=False, lifespan="off", timeout_graceful_shutdown=3,
                                     timeout_keep_alive=max(1, round(keep_alive_timeout)),
                                     http="httptools" if self.protocol_class is not HeaderTimeoutProtocol else "h11")
        self.config.load()
        # CUPS 2.4 clients (GnuTLS) take a TLS 1.3 session ticket for the end of the connection
        # and fail every ipps:// request; without tickets TLS 1.3 works (only resumption is lost).
        context: ssl.SSLContext = self.config.ssl
        context.num_tickets = 0
        self.server = uvicorn.Server(self.config)
        self.listener = CappedListener(sock, self._protocol, ssl_context=context,
                                       handshake_timeout=tls_handshake_timeout, max_connections=max_connections,
                                       name="https")
        self._task: asyncio.Task[None] | None = None

    def _protocol(self, admission: Admission) -> asyncio.BaseProtocol:
        # Requests and responses are small writes: without TCP_NODELAY, Nagle's algorithm holds
        # each one back for the peer's delayed ACK (~40 ms). asyncio sets it as well, once the
        # transport exists; here it holds from the TLS handshake on.
        with contextlib.suppress(OSError):
            admission.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.protocol_class(self.config, self.server.server_state,  # type: ignore[return-value]
                                   self.server.lifespan.state, admission=admission,
                                   header_timeout=self.header_timeout)

    @property
    def open_connections(self) -> int:
        return self.listener.open_connections

    async def start(self) -> None:
        """Start uvicorn (no listener of its own), then accept for it."""
        self._task = asyncio.create_task(self.server.serve(sockets=[]))
        for _ in range(200):
            if self.server.started or self._task.done():
                break
            await asyncio.sleep(0.025)
        if self._task.done():
            self._task.result()
        self.listener.start()

    async def stop(self) -> None:
        """Stop accepting, let uvicorn finish requests in flight (bounded), close what is left."""
        await self.listener.stop()
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.listener.abort_all()
