"""Document bytes between the Manager and the object store: presigned GET and PUT.

Bytes never cross the broker. Download: one document from its presigned URL into the
spool, verified, in constant memory and one pass. The body is read straight from the TLS
socket into one reused 1 MiB buffer (``http.client``'s ``readinto``: the socket reads, the
decryption, the hash and the write all run in C), each megabyte hashed (SHA-256) and written
to ``{dest}.part`` as it comes; only a file of exactly the announced size and digest is
renamed to ``dest`` (never copied). The connection is kept for the next download from the same
server (``IdleConnections``, one per Manager, closed when it stops): a TLS handshake per job
costs the Manager, and the service serving the local object store, more than a small
document's transfer. A streaming HTTP client hands the body over one TLS record
(16 KiB) at a time through several generator layers, which cost three times the CPU of the
transfer itself. A URL that has expired (HTTP 403 or 410) or bytes that do not match
are told apart from other failures so the caller can ask for a fresh URL once. Upload (scan
output): the file is PUT to a presigned URL in chunks, and the service's receipt (size,
SHA-256) must match what was sent. Both are synchronous on purpose: the Manager runs them
in a worker thread, so a slow transfer never holds up MQTT traffic.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx

CHUNK = 64 * 1024
#: How much of a download is read, hashed and written at once.
DOWNLOAD_BUFFER = 1024 * 1024

log = logging.getLogger("cloudimaging.manager.transfer")


class _HideQuery(logging.Filter):
    """httpx logs every request's full URL at INFO; a presigned URL's query is its signature."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) and a.query for a in record.args):
            record.args = tuple(a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def hide_url_queries() -> None:
    """Install the filter on httpx's logger once (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HideQuery) for f in logger.filters):
        logger.addFilter(_HideQuery())


hide_url_queries()

FailureKind = Literal["expired", "mismatch", "http", "network", "refused", "canceled"]


class DownloadError(Exception):
    """The document could not be fetched; ``kind`` says why (``expired``, ``mismatch``...)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def download(
    url: str,
    dest: Path,
    *,
    size: int,
    sha256: str,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 30.0,
    allow_http: bool = False,
    abort: threading.Event | None = None,
    connections: IdleConnections | None = None,
) -> None:
    """Fetch ``url`` into ``dest``; raises DownloadError unless size and digest match.

    With ``connections``, a kept connection to the server is used and the connection is kept
    again afterwards if the download ended cleanly; without, it is closed.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        raise DownloadError("refused", f"document URL scheme {parts.scheme!r} is not https")
    part = dest.with_name(dest.name + ".part")
    key = (parts.scheme, parts.hostname or "", parts.port, verify)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = connections.take(key, timeout) if connections is not None else None
    reused = conn is not None
    keep = False
    try:
        if conn is not None:
            try:
                response = _get(conn, target)
            except (OSError, http.client.HTTPException):
                # The server closed the kept connection meanwhile (its keep-alive timer): a GET
                # is safe to send again, on a new connection.
                conn.close()
                conn = None
        if conn is None:
            conn = _connection(parts.scheme, parts.hostname or "", parts.port, verify, timeout)
            response = _get(conn, target)
        # Like httpx's request line, without the query: a presigned URL's query is its signature.
        log.info('HTTP Request: GET %s://%s%s "HTTP/1.1 %d"%s', parts.scheme, parts.netloc, parts.path,
                 response.status, " (kept connection)" if reused else "")
        if response.status in (403, 410):
            raise DownloadError("expired", f"document URL refused with HTTP {response.status} (expired or revoked)")
        if response.status != 200:
            raise DownloadError("http", f"document download failed with HTTP {response.status}")
        announced = response.getheader("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != size:
            raise DownloadError("mismatch", f"the server sends {announced} bytes, {size} were announced")
        _receive(response, part, size, sha256, abort)
        os.replace(part, dest)
        keep = not response.will_close and response.isclosed()  # the whole body read, no "close"
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError("network", f"document download failed: {type(exc).__name__}: {exc}") from None
    finally:
        if conn is not None:
            if keep and connections is not None:
                connections.give(key, conn)
            else:
                conn.close()
        part.unlink(missing_ok=True)


def _get(conn: http.client.HTTPConnection, target: str) -> http.client.HTTPResponse:
    conn.request("GET", target, headers={"Accept-Encoding": "identity"})
    return conn.getresponse()


ConnectionKey = tuple[str, str, "int | None", "ssl.SSLContext | bool"]


class IdleConnections:
    """Connections whose last download ended cleanly, kept for the next one to the same server.

    A connection idle longer than ``max_idle`` seconds is closed rather than used: servers
    close idle keep-alive connections after a few seconds (the service after 5), and one that
    was closed meanwhile is detected at its first use and replaced (``download``). At most
    ``per_server`` are kept per server; downloads run in worker threads, so a lock guards them.
    """

    def __init__(self, max_idle: float = 2.0, per_server: int = 4) -> None:
        self.max_idle = max_idle
        self.per_server = per_server
        self._idle: dict[ConnectionKey, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()

    def take(self, key: ConnectionKey, timeout: float) -> http.client.HTTPConnection | None:
        now = time.monotonic()
        stale: list[http.client.HTTPConnection] = []
        found = None
        with self._lock:
            kept = self._idle.get(key, [])
            while kept:
                since, conn = kept.pop()
                if now - since <= self.max_idle:
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            conn.close()
        if found is not None:
            found.timeout = timeout
            if found.sock is not None:
                found.sock.settimeout(timeout)
        return found

    def give(self, key: ConnectionKey, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            kept = self._idle.setdefault(key, [])
            if len(kept) < self.per_server:
                kept.append((time.monotonic(), conn))
                return
        conn.close()

    def clear(self) -> None:
        """Close every kept connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for kept in idle.values():
            for _, conn in kept:
                conn.close()


def _connection(scheme: str, host: str, port: int | None, verify: ssl.SSLContext | bool,
                timeout: float) -> http.client.HTTPConnection:
    if scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify:
        context = ssl.create_default_context()
    else:
        context = ssl._create_unverified_context()  # the caller asked for no verification
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)


def _receive(response: http.client.HTTPResponse, part: Path, size: int, sha256: str,
             abort: threading.Event | None) -> None:
    """Read the body into ``part`` in one pass: read, hash and write each buffer-full."""
    digest = hashlib.sha256()
    received = 0
    buffer = bytearray(DOWNLOAD_BUFFER)
    view = memoryview(buffer)
    with part.open("wb") as out:  # a write larger than its buffer goes straight to the file
        while True:
            if abort is not None and abort.is_set():
                raise DownloadError("canceled", "download canceled")
            n = response.readinto(buffer)
            if not n:
                break
            received += n
            if received > size:
                raise DownloadError("mismatch", f"document is larger than the {size} bytes announced")
            chunk = view[:n]
            digest.update(chunk)
            out.write(chunk)
    if received != size:
        raise DownloadError("mismatch", f"got {received} bytes, expected {size}")
    if digest.hexdigest() != sha256:
        raise DownloadError("mismatch", "SHA-256 of the document does not match")


class UploadError(Exception):
    """The scan output could not be stored; the message says why."""


def upload_file(url: str, path: Path, *, verify: ssl.SSLContext, timeout: float, stop: threading.Event,
                allow_http: bool = False) -> tuple[int, str]:
    """PUT a file to a presigned URL, streamed in chunks; returns (size, sha256) as the service
    stored them, after checking they are the file's. Synchronous: run it in a thread."""
    if not (url.startswith("https://") or (allow_http and url.startswith("http://"))):
        raise UploadError("upload URL must be https")
    digest = hashlib.sha256()
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while data := fh.read(CHUNK):
                if stop.is_set():
                    raise UploadError("canceled")
                digest.update(data)
                yield data

    try:
        with httpx.Client(verify=verify, timeout=timeout) as client:
            response = client.put(url, content=chunks(), headers={"Content-Length": str(size),
                                                                  "Content-Type": "application/octet-stream"})
    except httpx.HTTPError as exc:
        raise UploadError(f"upload failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise UploadError(f"upload refused: HTTP {response.status_code}")
    try:
        receipt = json.loads(response.content)
    except ValueError:
        raise UploadError("upload receipt is not JSON") from None
    if receipt.get("size") != size or receipt.get("sha256") != digest.hexdigest():
        raise UploadError("the service stored other bytes than were sent")
    return size, digest.hexdigest()
