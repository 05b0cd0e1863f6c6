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
    # A message's fields are read from its ``__dict__``: ``getattr`` of a field the message
    # type lacks goes through pydantic's ``__getattr__`` and an AttributeError, several
    # microseconds each, seven times a line.
    fields = message.__dict__
    kind = fields.get("type", type(message).__name__)
    parts = [str(kind)]
    for name in _FIELDS:
        value = fields.get(name)
        if value is not None:
            parts.append(f"{_SHORT.get(name, name)}={value}")
    if kind == "sync":
        parts.append(f"fetchable={list(fields.get('fetchable') or [])}")
        parts.append(f"stop={[s.job_id for s in fields.get('stop') or []]}")
        parts.append(f"unknown={list(fields.get('unknown') or [])}")
    if kind == "hello":
        parts.append(f"jobs={[j.job_id for j in fields.get('jobs') or []]}")
    if kind == "attributes":
        parts.extend(
            f"{s.name}={s.state}{'/' + ','.join(s.state_reasons) if s.state_reasons else ''}"
            for s in fields.get("services") or []
        )
    if fields.get("re"):
        parts.append(f"re={fields['re']}")
    if fields.get("id") and kind != "presence":
        parts.append(f"id={fields['id']}")
    return " ".join(parts)


def log_out(message: BaseModel) -> None:
    if log.isEnabledFor(logging.INFO):  # the line is made only when it is written
        log.info("-> %s", describe(message))


def log_in(message: BaseModel) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("<- %s", describe(message))
