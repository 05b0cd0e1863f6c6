"""The Service object's states (PWG 5108.01 7.1) as pure rules.

A device reports its own state; the cloud overlays what only it knows: a device that is not
connected is ``stopped`` with ``offline-report``, never ``idle`` (users of other cloud print
systems complain of offline printers shown as ready). A pending job waiting for such a device
says so too. The HTTP API, the IPP front and the store's job view all read these overlays here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.enums import JobState, Reason, ServiceState

_ALLOWED = {
    ServiceState.IDLE: {ServiceState.IDLE, ServiceState.PROCESSING, ServiceState.STOPPED},
    ServiceState.PROCESSING: {ServiceState.IDLE, ServiceState.PROCESSING, ServiceState.STOPPED},
    ServiceState.STOPPED: {ServiceState.IDLE, ServiceState.PROCESSING, ServiceState.STOPPED},
}


@dataclass(frozen=True)
class ServiceStatus:
    state: ServiceState
    reasons: tuple[str, ...]
    message: str | None = None


def service_transition_allowed(current: ServiceState, new: ServiceState) -> bool:
    return new in _ALLOWED[current]


def effective_status(reported: ServiceStatus, online: bool) -> ServiceStatus:
    """What clients see: the device's report, or stopped/offline-report while it is away."""
    if online:
        reasons = tuple(r for r in reported.reasons if r != Reason.OFFLINE) or (Reason.NONE,)
        return ServiceStatus(reported.state, reasons, reported.message)
    reasons = (Reason.OFFLINE, *(r for r in reported.reasons if r not in (Reason.NONE, Reason.OFFLINE)))
    return ServiceStatus(ServiceState.STOPPED, reasons, "the device is not connected")


def service_overlay(state: str, reasons: Sequence[str], message: str | None, online: bool) -> ServiceStatus:
    """``effective_status`` from a service's stored columns: what HTTP and IPP clients both see."""
    return effective_status(ServiceStatus(ServiceState(state), tuple(reasons), message), online)


def job_overlay(state: str, reasons: Sequence[str], message: str | None, device_online: bool,
                last_seen: float | None) -> tuple[list[str], str | None]:
    """The reasons and message a client reads for a job: a pending job whose device is away says
    so (``printer-stopped``), like the offline overlay on services; the stored job is unchanged."""
    if state != JobState.PENDING.value or device_online:
        return list(reasons), message
    shown = [r for r in reasons if r != Reason.NONE] + [Reason.PRINTER_STOPPED]
    return shown, message or "waiting: the printer is offline" + (
        time.strftime(" (last seen %Y-%m-%d %H:%M:%S UTC)", time.gmtime(last_seen)) if last_seen else "")
