"""Running transforms off the event loop: a pool of worker processes with bounded concurrency.

Rendering holds the GIL for part of its time and can take seconds per page, so it runs in
separate processes ("spawn": a forked copy of an asyncio process with threads is not safe),
never in the service's event loop or its threads. A semaphore bounds the transforms in flight
(each holds one page of pixels in memory); a worker that dies (a crash in a C library on a
hostile document) fails only its own job, and the pool is made again for the next.

PDFium is not thread-safe either, so the console's page thumbnails are drawn here too
(``thumbnail``), in a pool of their own that the service keeps apart from its transforms: a scan
that kills its renderer cannot fail a print job's transform.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from cloud_service.transform.page import UNPRINTABLE, Layout
from cloud_service.transform.run import Outcome, transform_file
from cloud_service.transform.thumbnail import TIMEOUT as THUMBNAIL_TIMEOUT
from cloud_service.transform.thumbnail import Thumbnail
from cloud_service.transform.thumbnail import render as render_thumbnail

log = logging.getLogger("cloudimaging.transform")
T = TypeVar("T")

#: Longest one transform may take before its job is aborted (a 1000-page document at 600 dpi).
TIMEOUT = 1800.0


class Transformer:
    """Runs transforms (and thumbnails: the service keeps a pool of one for those, apart from
    its documents' transforms) in at most ``workers`` processes at a time (made on first use)."""

    def __init__(self, workers: int | None = None, timeout: float = TIMEOUT) -> None:
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.timeout = timeout
        self._pool: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        """The bound on transforms in flight, for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self.workers), loop
        return self._slots

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_quiet_on_interrupt)
        return self._pool

    async def run(self, source: Path, source_format: str, target: Path, target_format: str,
                  layout: Layout) -> Outcome:
        try:
            return await self._call(transform_file, source, source_format, target, target_format, layout)
        except TimeoutError:
            return Outcome(reason=UNPRINTABLE, message=f"the transform took longer than {self.timeout:.0f} s")
        except BrokenProcessPool:
            log.error("a transform worker died on a %s document; the pool is made again", source_format)
            return Outcome(reason=UNPRINTABLE, message="the document crashed the transform")

    async def thumbnail(self, data: bytes, page: int) -> Thumbnail:
        """Page ``page`` of the PDF ``data`` as a small PNG, drawn in a worker (transform.thumbnail)."""
        try:
            return await self._call(render_thumbnail, data, page)
        except TimeoutError:
            return Thumbnail(None, 0, f"drawing the page took longer than {self.timeout:.0f} s")
        except BrokenProcessPool:
            log.error("a thumbnail worker died on a PDF; the pool is made again")
            return Thumbnail(None, 0, "the document crashed the renderer")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker, within the bound and the timeout. A worker that times out or
        dies takes the pool with it (its other workers are killed) and the next call makes a new one."""
        async with self._semaphore():
            try:  # a pool already broken refuses the submit itself
                future = asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
                return await asyncio.wait_for(future, self.timeout)
            except (TimeoutError, BrokenProcessPool):
                self._reset()
                raise

    def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()  # only our own workers
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def thumbnail_pool() -> Transformer:
    """The pool that draws page thumbnails: one worker, ``thumbnail.TIMEOUT`` a page."""
    return Transformer(workers=1, timeout=THUMBNAIL_TIMEOUT)


def _quiet_on_interrupt() -> None:
    """In each worker: SIGINT ends the process as the system's default does, without Python's
    KeyboardInterrupt. A terminal's Ctrl-C reaches every process of the service (``make run``);
    the service stops its pool itself, and a traceback from each idle worker said nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
