"""The Service object's states (PWG 5108.01 7.1) as pure rules.

A device reports its own state; the cloud overlays what only it knows: a device that is not
connected is ``stopped`` with ``offline-report``, never ``idle`` (users of other cloud print
systems complain of offline printers shown as ready). A pending job waiting for such a device
says so too. A device whose credentials were revoked is its own case: not "offline" (which
promises it may come back, so clients such as CUPS keep retrying) but ``stopped`` with
``revoked`` and not accepting jobs, until it is enrolled again. The HTTP API, the IPP front and
the store's job view all read these overlays here.
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


#: printer-state-reasons keyword of a service whose device's credentials were revoked (IPP
#: allows keywords of its own; none of the registered ones says "this device will not return").
REVOKED = "revoked"

#: What a revoked device's services say, and what its owner can do about it.
REVOKED_MESSAGE = "the device's credentials were revoked: it cannot connect until its owner enrolls it again"


@dataclass(frozen=True)
class ServiceStatus:
    state: ServiceState
    reasons: tuple[str, ...]
    message: str | None = None
    #: IPP printer-is-accepting-jobs: False only for a revoked device (an offline one queues).
    accepting_jobs: bool = True


def service_transition_allowed(current: ServiceState, new: ServiceState) -> bool:
    return new in _ALLOWED[current]


def effective_status(reported: ServiceStatus, online: bool, revoked: bool = False) -> ServiceStatus:
    """What clients see: the device's report, stopped/offline-report while it is away, or
    stopped/revoked (not accepting jobs) once its credentials were revoked."""
    if revoked:
        return ServiceStatus(ServiceState.STOPPED, (REVOKED,), REVOKED_MESSAGE, accepting_jobs=False)
    if online:
        reasons = tuple(r for r in reported.reasons if r != Reason.OFFLINE) or (Reason.NONE,)
        return ServiceStatus(reported.state, reasons, reported.message)
    reasons = (Reason.OFFLINE, *(r for r in reported.reasons if r not in (Reason.NONE, Reason.OFFLINE)))
    return ServiceStatus(ServiceState.STOPPED, reasons, "the device is not connected")


def service_overlay(state: str, reasons: Sequence[str], message: str | None, online: bool,
                    revoked: bool = False) -> ServiceStatus:
    """``effective_status`` from a service's stored columns: what HTTP and IPP clients both see."""
    return effective_status(ServiceStatus(ServiceState(state), tuple(reasons), message), online, revoked)


def job_overlay(state: str, reasons: Sequence[str], message: str | None, device_online: bool,
                last_seen: float | None) -> tuple[list[str], str | None]:
    """The reasons and message a client reads for a job: a pending job whose device is away says
    so (``printer-stopped``), like the offline overlay on services; the stored job is unchanged."""
    if state != JobState.PENDING.value or device_online:
        return list(reasons), message
    shown = [r for r in reasons if r != Reason.NONE] + [Reason.PRINTER_STOPPED]
    return shown, message or "waiting: the printer is offline" + (
        time.strftime(" (last seen %Y-%m-%d %H:%M:%S UTC)", time.gmtime(last_seen)) if last_seen else "")
