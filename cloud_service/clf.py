"""Common Log Format for every device<->cloud interaction and HTTP request
(PWG Cloud Imaging Model requirement 16).

``host ident authuser [date] "request" status bytes``. HTTP requests log as usual (the
query string is dropped: presigned URLs carry signatures that must not land in logs). MQTT
messages log with the request line ``"MQTT-RECV topic type"`` or ``"MQTT-SEND topic type"``,
the device id as authuser, a status of 200 for accepted messages or the HTTP-like code of
the refusal (400 malformed/bad request, 403 not yours, 404 unknown job, 409 stale or invalid
transition, 413 too large), and the payload size as bytes.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import threading
import time
from pathlib import Path
from typing import IO, Any

from broker.private import create_private, open_private, private_dir

CODE_STATUS = {
    "ok": 200, "duplicate": 200, "malformed": 400, "bad-request": 400, "unknown-type": 400,
    "unsupported-version": 400, "not-yours": 403, "not-found": 404, "not-fetchable": 409,
    "stale": 409, "invalid-transition": 409, "too-large": 413, "error": 500,
}


_last_stamp: tuple[int, str] = (-1, "")


def clf_time(ts: float | None = None) -> str:
    """``[day/month/year:hour:minute:second zone]``; formatted once per second (a busy service
    logs hundreds of lines in one)."""
    global _last_stamp
    second = int(ts or time.time())
    cached = _last_stamp
    if cached[0] == second:
        return cached[1]
    text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
    _last_stamp = (second, text)
    return text


#: Printable ASCII but space and '"' stays; everything else becomes '_'.
_UNSAFE = re.compile(r'[^\x21\x23-\x7e]')


def _field(value: str | None) -> str:
    if not value:
        return "-"
    value = value[:200]
    # Nearly every field (device ids, topics, paths, addresses) is safe already: checked in C,
    # three to five times faster than the substitution, which runs only where it changes something.
    if value.isascii() and value.isprintable() and " " not in value and '"' not in value:
        return value
    return _UNSAFE.sub("_", value)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Every file it opens (the first, and the new one after each rollover) is made 0600: logs
    name users, devices and addresses."""

    def _open(self) -> IO[Any]:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                    opener=open_private)


class RotatingLines:
    """Appends whole lines to ``path``, rotated by size; thread-safe. The writer under both
    the CLF log and the security audit log. The files are private (0600 in a 0700 directory)."""

    def __init__(self, path: Path, max_bytes: int = 20 * 1024 * 1024, backups: int = 5) -> None:
        private_dir(path.parent)
        if path.exists():
            create_private(path)  # an older install may have left it readable
        self.path = path
        self._handler = _PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                    encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._lock = threading.Lock()
        #: Bytes in the current file; read from the file when it is (re)opened.
        self._size = 0

    def write(self, text: str) -> None:
        """One line, on disk (written through) when this returns; rolled over first if it
        would take the file to ``max_bytes``.

        Not through ``Handler.emit``: a record, a formatter and two ``stat`` calls per line (the
        stdlib's rollover check) cost more than the line; one busy job writes about twenty. Nor
        through the text stream: its encoder, buffer and flush cost more than the one ``write``
        they end in, so the line's bytes go to the file's descriptor (opened for appending) at once.
        """
        data = f"{text}\n".encode()
        size = len(data)
        with self._lock:
            handler = self._handler
            if handler.stream is None:
                handler.stream = handler._open()
                self._size = handler.stream.seek(0, 2)
            if handler.maxBytes > 0 and self._size and self._size + size >= handler.maxBytes:
                handler.doRollover()
                if handler.stream is None:
                    handler.stream = handler._open()
                self._size = handler.stream.seek(0, 2)
            fd = handler.stream.fileno()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._size += size

    def close(self) -> None:
        self._handler.close()


class ClfLog(RotatingLines):
    """Appends CLF lines to ``path`` (rotated by size); thread-safe."""

    def line(self, host: str | None, user: str | None, request: str, status: int, size: int | None) -> None:
        self.write(f"{_field(host)} - {_field(user)} {clf_time()} \"{request}\" {status} "
                   f"{size if size is not None else '-'}")

    def http(self, host: str | None, user: str | None, method: str, path: str, version: str,
             status: int, size: int | None) -> None:
        request = f"{_field(method)} {_field(path)} HTTP/{_field(version)}"
        self.line(host, user, request, status, size)

    def mqtt(self, direction: str, device_id: str | None, topic: str, kind: str, code: str,
             size: int) -> None:
        request = f"MQTT-{direction} {_field(topic)} {_field(kind)}"
        self.line("-", device_id, request, CODE_STATUS.get(code, 400), size)
