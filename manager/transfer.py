"""Document bytes between the Manager and the object store: presigned GET and PUT.

Bytes never cross the broker. Download: one document from its presigned URL into the
spool, verified, in constant memory. Bytes are streamed to ``{dest}.part`` in 64 KiB chunks
while their SHA-256 is computed; only a file of exactly the announced size and digest is
renamed to ``dest``. A URL that has expired (HTTP 403 or 410) or bytes that do not match
are told apart from other failures so the caller can ask for a fresh URL once. Upload (scan
output): the file is PUT to a presigned URL in chunks, and the service's receipt (size,
SHA-256) must match what was sent. Both are synchronous on purpose: the Manager runs them
in a worker thread, so a slow transfer never holds up MQTT traffic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx

CHUNK = 64 * 1024


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
) -> None:
    """Fetch ``url`` into ``dest``; raises DownloadError unless size and digest match."""
    scheme = urlsplit(url).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise DownloadError("refused", f"document URL scheme {scheme!r} is not https")
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    received = 0
    try:
        with (
            httpx.Client(
                verify=verify, timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False
            ) as client,
            client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response,
        ):
            if response.status_code in (403, 410):
                raise DownloadError(
                    "expired", f"document URL refused with HTTP {response.status_code} (expired or revoked)"
                )
            if response.status_code != 200:
                raise DownloadError("http", f"document download failed with HTTP {response.status_code}")
            with part.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    if abort is not None and abort.is_set():
                        raise DownloadError("canceled", "download canceled")
                    received += len(chunk)
                    if received > size:
                        raise DownloadError("mismatch", f"document is larger than the {size} bytes announced")
                    digest.update(chunk)
                    out.write(chunk)
        if received != size:
            raise DownloadError("mismatch", f"got {received} bytes, expected {size}")
        if digest.hexdigest() != sha256:
            raise DownloadError("mismatch", "SHA-256 of the document does not match")
        os.replace(part, dest)
    except httpx.HTTPError as exc:
        raise DownloadError("network", f"document download failed: {type(exc).__name__}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)


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
