"""The driver interface: what the Manager needs from a device, and nothing more.

``DeviceDriver`` is what every driver shares; ``PrintDriver`` (here), ``ScanDriver``
(drivers/scanner.py) and ``FaxDriver`` (drivers/fax.py) are its siblings, one per service
kind. A print driver turns one downloaded document into output and says how many
impressions it made. It is small on purpose so real drivers (IPP Everywhere printers,
scanners, fax modems) fit the same shape:

- ``check_job(job)``: refuse a job up front (raise JobRefused) beyond what capabilities say.
- ``start_job(job)`` / ``end_job(job_id, state)``: bracket a job (IPP Create-Job/Close-Job).
- ``print_document(task, path, progress) -> impressions``: the work; raise PrintCanceled
  after ``cancel(job_id)`` and DriverError on a device fault.
- ``cancel(job_id)``: must make print_document return promptly (between pages at worst).
- ``identify(actions, message)``: flash, beep or display something.
- ``status`` plus listeners: the device's own state (stopped with reasons such as
  media-empty or media-jam, or not), reported to the Manager on every change.

Every method runs on the Manager's asyncio loop; blocking work goes to a thread
(``asyncio.to_thread``) so MQTT traffic keeps flowing while a page prints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.enums import JobState
from schemas.supplies import Supply
from schemas.tickets import PrintJobTicket


@dataclass(frozen=True)
class PrintJob:
    """A job as the driver sees it before its documents arrive."""

    job_id: int
    service: str
    ticket: PrintJobTicket
    document_count: int

    @property
    def copies(self) -> int:
        return self.ticket.copies or 1


@dataclass(frozen=True)
class DocumentTask:
    """One document of a job to print, with its format from the service."""

    job: PrintJob
    document_number: int
    document_format: str
    size: int
    document_name: str | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """The device's own state: stopped with reasons (media-empty, media-jam) or running."""

    stopped: bool = False
    reasons: tuple[str, ...] = ()
    message: str | None = None


#: Called with the impressions of the current document printed so far.
Progress = Callable[[int], None]
StatusListener = Callable[[DeviceStatus], None]


class DriverError(Exception):
    """The device failed the job; the job ends aborted with these reasons."""

    def __init__(self, message: str, reasons: Sequence[str] = ("aborted-by-system",)) -> None:
        super().__init__(message)
        self.message = message
        self.reasons = tuple(reasons)


class PrintCanceled(Exception):
    """print_document stopped because cancel(job_id) was called."""


class JobRefused(Exception):
    """The driver will not take this job; ``reason`` is the fetch-status keyword."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DriverConfigError(ValueError):
    """The driver_options of a service are wrong; the message names the option."""


class DriverOptions(BaseModel):
    """Base of each driver's options model: unknown options are errors, not ignored."""

    model_config = ConfigDict(extra="forbid")


class DeviceDriver(ABC):
    """What every device driver shares, whatever its kind: options, status, life cycle.

    The flows of the Manager talk to a kind's own base (PrintDriver, ScanDriver,
    FaxDriver, siblings under this one); the runner uses only what is here.
    Subclasses set ``kind`` (the registry name) and ``Options``.
    """

    kind: ClassVar[str]
    Options: ClassVar[type[DriverOptions]] = DriverOptions

    def __init__(self, name: str, options: Mapping[str, Any], state_dir: Path) -> None:
        self.name = name
        self.state_dir = Path(state_dir)
        try:
            self.options = self.Options.model_validate(dict(options))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "driver_options"
            raise DriverConfigError(f"service {name!r}: driver_options.{where}: {first['msg']}") from None
        self._status = DeviceStatus()
        self._listeners: list[StatusListener] = []

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> DeviceStatus:
        return self._status

    def add_listener(self, listener: StatusListener) -> None:
        self._listeners.append(listener)

    def set_status(self, status: DeviceStatus) -> None:
        """Record a new device state and tell the listeners (call on the event loop)."""
        if status == self._status:
            return
        self._status = status
        for listener in list(self._listeners):
            listener(status)

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:  # noqa: B027 (an optional hook)
        """Connect to the device; called once before any job."""

    async def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release the device; called once at Manager stop."""

    async def end_job(self, job_id: int, state: JobState) -> None:  # noqa: B027 (an optional hook)
        """Called once when a job that was started ends (completed, aborted or canceled)."""

    @abstractmethod
    def cancel(self, job_id: int) -> None:
        """Stop ``job_id`` promptly if it is at work; a no-op otherwise."""

    async def identify(self, actions: Sequence[str], message: str | None) -> None:  # noqa: B027 (an optional hook)
        """Make the device known to a user standing next to it (default: nothing)."""


class PrintDriver(DeviceDriver):
    """Base of print drivers: ``print_document`` is the work.

    ``supplies`` are the device's markers (toner, ink, waste bins) with their levels, published
    with the service's attributes; a driver that changes them announces it like a status change.
    """

    supplies: tuple[Supply, ...] = ()

    def check_job(self, job: PrintJob) -> None:
        """Raise JobRefused to reject a job the capabilities did not rule out."""

    async def start_job(self, job: PrintJob) -> None:
        """Called once before the first document of an accepted job."""

    @abstractmethod
    async def print_document(self, task: DocumentTask, path: Path, progress: Progress) -> int:
        """Print the file at ``path``; return the impressions made."""
