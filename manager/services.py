"""ServiceRuntime: one configured service of the device, its driver and its slot.

The slot is the device itself: one job at a time works on it, the others wait in phase
QUEUED. What a service publishes (Attributes) comes from here: the driver's own state
(stopped with reasons, or running), processing while a job holds the slot, and the
capabilities the driver discovered or the config states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manager.config import FaxServiceConfig, PrintServiceConfig, ScanServiceConfig
from manager.drivers.base import DeviceStatus, PrintDriver
from manager.drivers.fax import FaxDriver
from manager.drivers.scanner import ScanDriver
from manager.jobbook import JobRecord
from schemas.enums import ServiceState
from schemas.messages import FaxOutServiceAttributes, PrintServiceAttributes, ScanServiceAttributes

#: The driver of a service, by its kind: print, scan or faxout.
KindDriver = PrintDriver | ScanDriver | FaxDriver


@dataclass(eq=False)
class ServiceRuntime:
    """One configured service with its driver, its device slot and what it last published."""

    config: PrintServiceConfig | ScanServiceConfig | FaxServiceConfig
    driver: KindDriver
    slot: asyncio.Lock = field(default_factory=asyncio.Lock)
    current_job: int | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> tuple[ServiceState, tuple[str, ...], str | None]:
        device: DeviceStatus = self.driver.status
        if device.stopped:
            return ServiceState.STOPPED, device.reasons, device.message
        # A running device's warnings (toner-low from the ipp driver) are published too.
        if self.current_job is not None:
            return ServiceState.PROCESSING, device.reasons, device.message
        return ServiceState.IDLE, device.reasons, device.message

    @property
    def capabilities(self) -> Any:
        """The driver's discovered capabilities (the ipp driver asks the printer), else the config's."""
        return getattr(self.driver, "discovered", None) or self.config.capabilities

    def attributes(self) -> PrintServiceAttributes:
        state, reasons, message = self.status()
        model = {"scan": ScanServiceAttributes, "faxout": FaxOutServiceAttributes}.get(self.config.kind,
                                                                                     PrintServiceAttributes)
        return model(
            name=self.name,
            info=self.config.info,
            location=self.config.location,
            make_and_model=self.config.make_and_model or getattr(self.driver, "make_and_model", None),
            state=state,
            state_reasons=list(reasons),
            state_message=message,
            capabilities=self.capabilities,  # type: ignore[arg-type]
            supplies=list(getattr(self.driver, "supplies", ())),
        )

    async def take_slot(self, record: JobRecord, still_held: Callable[[JobRecord], bool]) -> bool:
        """Wait for the device; False if the job was canceled or dropped meanwhile."""
        if record.cancel_requested:
            return False
        acquire = asyncio.ensure_future(self.slot.acquire())
        canceled = asyncio.ensure_future(record.wakeup.wait())
        try:
            await asyncio.wait({acquire, canceled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            canceled.cancel()
            acquire.cancel()  # a no-op once it holds the lock; a cancelled acquire never does
            got = acquire.done() and not acquire.cancelled() and acquire.exception() is None
            if got and (record.cancel_requested or not still_held(record)):
                self.slot.release()
                got = False
        if got:
            self.current_job = record.job_id
        return got

    def release_slot(self) -> None:
        self.current_job = None
        self.slot.release()
