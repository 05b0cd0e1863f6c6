"""The security audit log: one JSON line per security event, in ``DATA/logs/security.log``.

Complements the CLF access log (every request and device message) with the events a reviewer
looks for: failed authentication, refused access (403), ACL denials and refused CONNECTs at
the embedded broker, tokens made and revoked, devices registered, enrolled, revoked and
deregistered, shares changed. Rotated by size like the CLF log.

Secrets never reach it by construction: callers pass names and ids (a token's public
``token_id``, a certificate serial, a device id), never a token, code, password or key, and
every value is cut to printable ASCII of bounded length.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cloud_service.clf import RotatingLines

log = logging.getLogger("cloudimaging.security")

#: Loggers of the embedded broker whose warnings (refused CONNECTs, ACL denials, revocation
#: disconnects) are security events too.
BROKER_LOGGERS = ("broker.embedded", "broker.plugins")


def _clean(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return "".join(ch if 32 <= ord(ch) < 127 else "_" for ch in text)[:300]


class _Bridge(logging.Handler):
    """Copies WARNING records of the broker's loggers into the audit log."""

    def __init__(self, audit: AuditLog) -> None:
        super().__init__(logging.WARNING)
        self.audit = audit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.audit.event("broker", outcome="denied", source=record.name, message=record.getMessage())
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)


class AuditLog(RotatingLines):
    """Appends JSON lines to ``path`` (rotated by size); thread-safe."""

    def __init__(self, path: Path, max_bytes: int = 20 * 1024 * 1024, backups: int = 5) -> None:
        super().__init__(path, max_bytes, backups)
        self._bridges: list[tuple[logging.Logger, logging.Handler]] = []

    def event(self, event: str, *, outcome: str = "ok", actor: str | None = None, client: str | None = None,
              **details: Any) -> None:
        """Record one event. ``details`` must be names and ids only, never secrets."""
        line: dict[str, Any] = {"ts": round(time.time(), 3), "event": _clean(event), "outcome": _clean(outcome)}
        if actor is not None:
            line["actor"] = _clean(actor)
        if client is not None:
            line["client"] = _clean(client)
        line.update({k: _clean(v) for k, v in details.items()})
        text = json.dumps(line, separators=(",", ":"))
        self.write(text)
        log.log(logging.WARNING if outcome != "ok" else logging.INFO, "%s", text)

    def attach_broker(self) -> None:
        """Also record the embedded broker's security warnings (same process only)."""
        for name in BROKER_LOGGERS:
            logger = logging.getLogger(name)
            bridge = _Bridge(self)
            logger.addHandler(bridge)
            self._bridges.append((logger, bridge))

    def close(self) -> None:
        for logger, bridge in self._bridges:
            logger.removeHandler(bridge)
        self._bridges.clear()
        super().close()
