"""One log line per MQTT message in or out: type, job, code, version, ids.

Operators grep these lines to follow a job across the device and the service, so the format
is stable: ``-> job-status job=12 v=3 state=processing id=9f2c...`` and
``<- reply re=9f2c... code=ok job=12 v=4``.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

log = logging.getLogger("cloudimaging.manager.wire")

_FIELDS = ("job_id", "document_number", "version", "state", "code", "accept", "reason")
_SHORT = {"job_id": "job", "document_number": "doc", "version": "v"}


def describe(message: BaseModel) -> str:
    kind = getattr(message, "type", type(message).__name__)
    parts = [str(kind)]
    for name in _FIELDS:
        value = getattr(message, name, None)
        if value is not None:
            parts.append(f"{_SHORT.get(name, name)}={value}")
    fetchable = getattr(message, "fetchable", None)
    if kind == "sync":
        parts.append(f"fetchable={list(fetchable or [])}")
        parts.append(f"stop={[s.job_id for s in getattr(message, 'stop', [])]}")
        parts.append(f"unknown={list(getattr(message, 'unknown', []))}")
    if kind == "hello":
        parts.append(f"jobs={[j.job_id for j in getattr(message, 'jobs', [])]}")
    if kind == "attributes":
        parts.extend(
            f"{s.name}={s.state}{'/' + ','.join(s.state_reasons) if s.state_reasons else ''}"
            for s in getattr(message, "services", [])
        )
    if getattr(message, "re", None):
        parts.append(f"re={message.re}")  # type: ignore[attr-defined]
    if getattr(message, "id", None) and kind != "presence":
        parts.append(f"id={message.id}")  # type: ignore[attr-defined]
    return " ".join(parts)


def log_out(message: BaseModel) -> None:
    log.info("-> %s", describe(message))


def log_in(message: BaseModel) -> None:
    log.info("<- %s", describe(message))
