"""Plain-text rendering of services and jobs for the terminal, in the manner of lpstat.

Pure functions from API models to strings (the clock is a parameter) so tables can be tested
exactly. Every value that came from the network goes through :func:`clean` first: a device's
name or state message must not be able to move the cursor or retitle the terminal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from client.errors import show_value
from schemas.api import JobInfo, ServiceInfo

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean(value: Any) -> str:
    """``str(value)`` with control characters shown as ``?`` (no terminal escapes)."""
    return _CONTROL.sub("?", str(value))


def human_size(size: int | None) -> str:
    """1536 -> ``1.5K``; sizes as ls -h shows them."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"  # pragma: no cover - the loop always returns


def format_time(timestamp: float | None) -> str:
    """Local time as ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_age(seconds: float) -> str:
    """A duration in the largest unit that fits: ``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def reasons(values: Sequence[str]) -> str:
    return ",".join(clean(v) for v in values) or "none"


def request_id(job: JobInfo) -> str:
    """lp's request id, ``<printer>-<job id>``."""
    return f"{clean(job.service)}-{job.id}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def presence(service: ServiceInfo, now: float) -> str:
    if service.online:
        return "online"
    if service.last_seen is None:
        return "never seen"
    return f"seen {format_age(now - service.last_seen)} ago"


def services_table(services: Sequence[ServiceInfo], now: float | None = None) -> str:
    """``cloudimaging printers``: one line per service."""
    now = time.time() if now is None else now
    rows = [
        [
            clean(s.name),
            clean(s.state),
            reasons(s.state_reasons),
            presence(s, now),
            str(s.queued_jobs),
            clean(s.make_and_model or "-"),
        ]
        for s in services
    ]
    headers = ["NAME", "STATE", "REASONS", "ONLINE", "JOBS", "MAKE AND MODEL"]
    if any(s.ipp_uri for s in services):  # the IPP front (docs/ipp.md): what to give lpadmin or a phone
        headers.append("IPP URI")
        rows = [[*row, clean(s.ipp_uri or "-")] for row, s in zip(rows, services, strict=True)]
    return table(headers, rows)


def capability_lines(capabilities: dict[str, Any]) -> list[str]:
    """``name: a, b (default a)`` for each ``name-supported``, then any other attribute."""
    lines: list[str] = []
    used: set[str] = set()
    for key in sorted(capabilities):
        if not key.endswith("-supported"):
            continue
        base = key.removesuffix("-supported")
        supported = capabilities[key]
        default_key = f"{base}-default"
        used.update({key, default_key})
        if base == "copies" and isinstance(supported, list | tuple) and len(supported) == 2:
            text = f"{supported[0]}-{supported[1]}"  # a rangeOfInteger, not a list
        else:
            text = show_value(supported)
        if default_key in capabilities:
            text += f" (default {show_value(capabilities[default_key])})"
        lines.append(f"{clean(base)}: {clean(text)}")
    for key in sorted(set(capabilities) - used):
        lines.append(f"{clean(key)}: {clean(show_value(capabilities[key]))}")
    return lines


def service_long(service: ServiceInfo, now: float | None = None) -> str:
    """``cloudimaging printers -l``: lpstat -l -p style block with capabilities."""
    now = time.time() if now is None else now
    out = [f"{service.kind} service {clean(service.name)} is {service.state}, {presence(service, now)}."]
    fields = [
        ("Description", service.info),
        ("Location", service.location),
        ("Make and model", service.make_and_model),
        ("Device", service.device_id),
        ("State reasons", reasons(service.state_reasons)),
        ("State message", service.state_message),
        ("Queued jobs", str(service.queued_jobs)),
        ("Last seen", format_time(service.last_seen) if service.last_seen else None),
        ("IPP URI", service.ipp_uri),
    ]
    out += [f"\t{label}: {clean(value)}" for label, value in fields if value]
    if service.supplies:
        out.append("\tSupplies:")
        out += [f"\t\t{line}" for line in supply_lines(service)]
    caps = capability_lines(service.capabilities)
    if caps:
        out.append("\tCapabilities:")
        out += [f"\t\t{line}" for line in caps]
    return "\n".join(out)


#: RFC 3805's special levels in words.
_LEVELS = {-1: "level unavailable", -2: "level unknown", -3: "some remaining"}


def supply_lines(service: ServiceInfo) -> list[str]:
    """One line per supply the device reported: ``Black Toner (toner): 72% (low at 10%)``."""
    lines = []
    for s in service.supplies:
        level = _LEVELS.get(s.level, f"{s.level}%")
        low = f" (low at {s.low_level}%)" if s.low_level is not None and s.level >= 0 else ""
        lines.append(f"{clean(s.name)} ({s.type}): {level}{low}")
    return lines


def job_size(job: JobInfo) -> int | None:
    sizes = [d.size for d in job.documents if d.size is not None]
    return sum(sizes) if sizes else None


def jobs_table(jobs: Sequence[JobInfo]) -> str:
    """``cloudimaging jobs``: one line per job, like lpstat -o with state columns."""
    rows = [
        [
            str(j.id),
            clean(j.service),
            clean(j.owner),
            clean(j.state),
            reasons(j.state_reasons),
            human_size(job_size(j)),
            format_time(j.created_at),
        ]
        for j in jobs
    ]
    return table(["ID", "PRINTER", "OWNER", "STATE", "REASONS", "SIZE", "CREATED"], rows)


def state_line(job: JobInfo) -> str:
    """One live line of ``print --wait``: state, reasons, impressions, message."""
    line = f"{request_id(job)}: {job.state} ({reasons(job.state_reasons)}), {job.impressions_completed} impression(s)"
    if job.state_message:
        line += f" - {clean(job.state_message)}"
    return line


def job_status(job: JobInfo) -> str:
    """``cloudimaging status``: every field worth reading, then the history."""
    out = [f"job {request_id(job)} is {job.state}"]
    fields = [
        ("Job id", str(job.id)),
        ("UUID", job.uuid),
        ("Service", f"{job.kind} {job.service}"),
        ("Device", job.device_id),
        ("Owner", job.owner),
        ("State reasons", reasons(job.state_reasons)),
        ("State message", job.state_message),
        ("Impressions", str(job.impressions_completed)),
        ("Created", format_time(job.created_at)),
        ("Updated", format_time(job.updated_at)),
        ("Completed", format_time(job.completed_at) if job.completed_at else None),
    ]
    out += [f"\t{label}: {clean(value)}" for label, value in fields if value]
    if job.ticket:
        out.append("\tTicket:")
        out += [f"\t\t{clean(k)}={clean(show_value(v))}" for k, v in job.ticket.items()]
    if job.documents:
        out.append("\tDocuments:")
        for d in job.documents:
            name = clean(d.name or "-")
            out.append(
                f"\t\t{d.number}: {name} {clean(d.format)} {human_size(d.size)} {d.state}"
                f" ({d.impressions_completed} impression(s))"
            )
    if job.history:
        out.append("\tHistory:")
        for event in job.history:
            line = f"\t\t{format_time(event.at)}  {event.state} ({reasons(event.state_reasons)})"
            if event.message:
                line += f" - {clean(event.message)}"
            out.append(line)
    return "\n".join(out)
