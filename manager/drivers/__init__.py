"""Device drivers of the Manager and the registry that builds them from the config."""

from __future__ import annotations

from pathlib import Path

from manager.drivers.base import (
    DeviceDriver,
    DeviceStatus,
    DocumentTask,
    DriverConfigError,
    DriverError,
    JobRefused,
    PrintCanceled,
    PrintDriver,
    PrintJob,
    Progress,
)
from manager.drivers.fax import FaxDriver, SimulatedModem
from manager.drivers.file import FileDriver
from manager.drivers.ipp import IppDriver
from manager.drivers.scanner import ScanDriver, SimulatedScanner
from manager.drivers.simulated import SimulatedDriver

#: Driver classes by the name used in the config's ``driver`` field.
DRIVERS: dict[str, type[DeviceDriver]] = {
    FileDriver.kind: FileDriver,
    SimulatedDriver.kind: SimulatedDriver,
    IppDriver.kind: IppDriver,
    SimulatedScanner.kind: SimulatedScanner,  # scan services
    SimulatedModem.kind: SimulatedModem,  # faxout services
}


def make_driver(kind: str, name: str, options: dict[str, object], state_dir: Path) -> DeviceDriver:
    """Build the driver ``kind`` for service ``name``; raises DriverConfigError."""
    try:
        cls = DRIVERS[kind]
    except KeyError:
        raise DriverConfigError(f"service {name!r}: unknown driver {kind!r}") from None
    return cls(name, options, state_dir)


__all__ = [
    "DRIVERS",
    "DeviceDriver",
    "DeviceStatus",
    "DocumentTask",
    "DriverConfigError",
    "DriverError",
    "FaxDriver",
    "FileDriver",
    "IppDriver",
    "JobRefused",
    "PrintCanceled",
    "PrintDriver",
    "PrintJob",
    "Progress",
    "ScanDriver",
    "SimulatedDriver",
    "make_driver",
]
