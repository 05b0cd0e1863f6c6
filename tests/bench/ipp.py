"""The ipp driver's figure (filled in below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.bench.procs import Unavailable
from tests.bench.report import Row

if TYPE_CHECKING:
    from tests.bench.runner import StackRun


async def measure_ipp(run: StackRun) -> list[Row]:
    raise Unavailable("the ipp figure is not written yet")
