"""The Service object's states (PWG 5108.01 7.1) as pure rules.

A device reports its own state; the cloud overlays what only it knows: a device that is not
connected is ``stopped`` with ``offline-report``, never ``idle`` (users of other cloud print
systems complain of offline printers shown as ready).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.enums import Reason, ServiceState

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
