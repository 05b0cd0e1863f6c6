"""Connection limits: a process keeps the file descriptors it needs however many peers connect.

A TCP connection costs a descriptor from the moment it is accepted, before TLS, before a request
or a CONNECT, so an unauthenticated peer decides how many we hold. Under systemd's default
``LimitNOFILE`` (1,024 soft) a few hundred idle connections used to exhaust the process: accept()
failed with EMFILE in a loop (one log line each time), SQLite and the log files could not be
opened, and ``/healthz`` took seconds. Four pieces, used by the HTTPS server and the broker:

- ``raise_open_files_limit()`` raises the soft RLIMIT_NOFILE to the hard limit at start.
- ``connection_budget()`` turns that limit into a number of connections, keeping a reserve for
  the process itself (database, logs, objects, its own MQTT client) and splitting the rest
  between the listeners of one process, so neither the MQTT nor the HTTPS listener can take
  the descriptors of the other.
- ``CappedListener`` accepts connections itself: it never holds more than its cap, bounds the
  TLS handshake, and when full it closes the oldest connection that is not active (HTTP: no
  request in flight, so still in its handshake, sending a head, or idle between requests;
  MQTT: no accepted CONNECT yet) to make room, so a flood of idle or half-open connections
  cannot lock real clients out; when every connection is active a newcomer is refused. An
  EMFILE from accept() pauses accepting briefly instead of spinning.
- ``RateLimitFilter`` lets a burst of identical log lines through per interval and counts the
  rest, so a flood cannot fill the disk with one repeated line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("broker.limits")

#: Never raise the soft limit past this (a hard limit of "unlimited" is not a useful target).
MAX_OPEN_FILES = 1 << 20
#: Descriptors kept out of the connection budget: at least this many, or 1/8 of the limit.
MIN_RESERVED_FILES = 64
#: accept() failed for lack of descriptors or memory: wait this long before accepting again.
ACCEPT_RETRY_DELAY = 0.5
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE of this process."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_OPEN_FILES if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one (where allowed); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(int(hard), MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    return open_files_limit()


def connection_budget(share: float = 1.0, nofile: int | None = None) -> int:
    """How many connections a listener given ``share`` of this process's budget may hold.

    The budget is the open-files limit less a reserve of ``max(64, limit / 8)``; shares of the
    listeners of one process add up to at most 1.
    """
    limit = open_files_limit() if nofile is None else nofile
    reserve = max(MIN_RESERVED_FILES, limit // 8)
    return max(1, int((limit - reserve) * share))


@dataclass(eq=False)
class Admission:
    """One accepted connection, as the listener tracks it until its descriptor is closed."""

    sock: socket.socket
    peer: Any
    accepted_at: float = field(default_factory=time.monotonic)
    #: Set by the protocol while the peer is doing something real (an HTTP request in flight, an
    #: accepted MQTT CONNECT): an active connection is never closed to make room for another.
    active: bool = False
    transport: asyncio.BaseTransport | None = None
    task: asyncio.Task[Any] | None = None
    evicted: bool = False

    @property
    def open(self) -> bool:
        return self.sock.fileno() != -1 and not self.evicted

    def evict(self) -> None:
        """Close it now (during the TLS handshake or after)."""
        self.evicted = True
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            # A task cancelled before it first runs never enters its body, so it cannot close
            # the socket itself: close it here once the task is done, unless a transport took it.
            self.task.cancel()
            self.task.add_done_callback(self._close_unless_handed_over)
        else:
            self.sock.close()

    def _close_unless_handed_over(self, _task: asyncio.Task[Any]) -> None:
        if self.transport is None:
            self.sock.close()


class CappedListener:
    """Accepts on ``sock`` (bound, listening) and serves each connection with the protocol that
    ``protocol_factory(admission)`` returns, over TLS when ``ssl_context`` is given.

    At most ``max_connections`` are open at once, counted from accept() to close, TLS handshakes
    included; a handshake longer than ``handshake_timeout`` closes the connection.
    """

    def __init__(self, sock: socket.socket, protocol_factory: Callable[[Admission], asyncio.BaseProtocol], *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float, max_connections: int,
                 name: str) -> None:
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.max_connections = max(1, max_connections)
        self.name = name
        self._admitted: list[Admission] = []
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitFilter.guarded(logging.getLogger(f"{log.name}.{name}"))

    @property
    def open_connections(self) -> int:
        """Connections holding a descriptor now."""
        self._prune()
        return len(self._admitted)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._task = asyncio.create_task(self._accept_loop(), name=f"accept-{self.name}")

    async def stop(self) -> None:
        """Stop accepting and close every connection still in its TLS handshake."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        pending = [a.task for a in self._admitted if a.task is not None and not a.task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)

    def abort_all(self) -> None:
        """Close every connection now (at shutdown, after the protocols had their chance)."""
        for admission in list(self._admitted):
            admission.evict()
        self._admitted.clear()

    def _prune(self) -> None:
        self._admitted = [a for a in self._admitted if a.open]

    def _make_room(self, peer: Any) -> bool:
        """True if a connection may be admitted, closing the oldest inactive one if it must."""
        self._prune()
        if len(self._admitted) < self.max_connections:
            return True
        victim = next((a for a in self._admitted if not a.active), None)  # oldest first
        if victim is None:
            self._log.warning("%s: refusing a connection from %s: %d connections open, all active",
                              self.name, peer, len(self._admitted))
            return False
        self._log.warning("%s: %d connections open: closing the oldest one not yet active (from %s, %.1f s)",
                          self.name, len(self._admitted), victim.peer, time.monotonic() - victim.accepted_at)
        victim.evict()
        self._prune()
        return True

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    self._log.warning("%s: accept failed: %s", self.name, exc)
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                    continue
                self._log.error("%s: accept failed, out of resources (%s): pausing %.1f s", self.name,
                                exc.strerror, ACCEPT_RETRY_DELAY)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if not self._make_room(peer):
                conn.close()
                continue
            conn.setblocking(False)
            admission = Admission(conn, peer)
            self._admitted.append(admission)
            admission.task = asyncio.create_task(self._connect(admission), name=f"conn-{self.name}")

    async def _connect(self, admission: Admission) -> None:
        loop = asyncio.get_running_loop()
        try:
            protocol = self.protocol_factory(admission)
            kwargs: dict[str, Any] = {}
            if self.ssl_context is not None:
                kwargs = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.handshake_timeout}
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, admission.sock, **kwargs)
            admission.transport = transport
            if admission.evicted:
                transport.abort()
        except asyncio.CancelledError:
            admission.sock.close()
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("%s: connection from %s failed before it was set up: %r", self.name, admission.peer, exc)
            admission.sock.close()
        finally:
            admission.task = None


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records of one (logger, level, message format) per ``interval`` seconds.

    The first record after a quiet spell says how many were suppressed. Install it on the
    handlers (``install``) to cover every logger of the process, or on one logger (``guarded``).
    """

    def __init__(self, burst: int = 10, interval: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self._windows: dict[tuple[str, int, str], list[float]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            dropped = int(window[2]) if window is not None else 0
            if len(self._windows) > 10_000:
                self._windows.clear()  # bounded memory whatever the variety of messages
            self._windows[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} (and {dropped} more like it suppressed in the last {self.interval:.0f} s)"
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        self.suppressed += 1
        return False

    @classmethod
    def guarded(cls, logger: logging.Logger, burst: int = 10, interval: float = 60.0) -> logging.Logger:
        """``logger`` with a rate limit of its own (records it logs itself, not its children's)."""
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls(burst, interval))
        return logger

    @classmethod
    def install(cls, burst: int = 10, interval: float = 60.0) -> RateLimitFilter:
        """Rate-limit every handler of the root logger (call after configuring logging)."""
        limiter = cls(burst, interval)
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, cls) for f in handler.filters):
                handler.addFilter(limiter)
        return limiter

