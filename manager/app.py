"""The Manager: one device's agent, running in background threads so tests can embed it.

Threads: paho's network thread (manager.session) and one thread running an asyncio loop
with the Runner and the drivers. Callbacks cross from the first to the second with
``loop.call_soon_threadsafe`` only, so a slow driver or download never delays a PUBACK or a
keepalive, and all job state is touched by one thread.

    manager = Manager(load_config("device.json"))
    manager.start()                       # returns at once; connects in the background
    manager.connected.wait(10)
    ...
    manager.stop()                        # Bye, clean disconnect, threads joined
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from manager.config import ManagerConfig
from manager.drivers import DeviceDriver, make_driver
from manager.jobbook import JobBook, JobView
from manager.runner import Runner
from manager.session import Session
from schemas.enums import JobState, ServiceState

log = logging.getLogger("cloudimaging.manager")

T = TypeVar("T")


class Manager:
    """A Cloud Print Manager for the device described by ``config``.

    ``drivers`` replaces the drivers built from the config, by service name (tests, custom
    hardware). ``book`` replaces the durable journal (manager/journal.py) with another JobBook.
    """

    def __init__(
        self, config: ManagerConfig, *, drivers: Mapping[str, DeviceDriver] | None = None, book: JobBook | None = None
    ) -> None:
        self.config = config
        given = dict(drivers or {})
        self.drivers: dict[str, DeviceDriver] = {
            s.name: given.get(s.name) or make_driver(s.driver, s.name, s.driver_options, config.state_dir)
            for s in config.services
        }
        if book is None:
            from manager.journal import JournalJobBook

            book = JournalJobBook(config.state_dir / "journal.sqlite")
        self._runner = Runner(config, self.drivers, self._publish, book=book)
        self._session = Session(
            config,
            on_ready=lambda session: self._to_loop(self._runner.on_connected, session),
            on_lost=lambda: self._to_loop(self._runner.on_disconnected),
            on_message=lambda payload: self._to_loop(self._runner.on_down, payload),
            on_refused=lambda _why: self.refused.set(),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        #: Set when stop() has finished (or the Manager never started).
        self.stopped = threading.Event()
        #: Set when the broker refused the device's revoked certificate: the Manager no
        #: longer reconnects (``refusal`` says why and what to do).
        self.refused = threading.Event()

    # ------------------------------------------------------------------ state for callers

    @property
    def connected(self) -> threading.Event:
        """Set while connected to the broker and subscribed; cleared on connection loss."""
        return self._runner.connected

    @property
    def synced(self) -> threading.Event:
        """Set once the service answered this connection's Hello with a Sync."""
        return self._runner.synced

    @property
    def refusal(self) -> str | None:
        """Why the Manager gave up connecting (its certificate was revoked), else None."""
        return self._session.refusal

    @property
    def connect_attempts(self) -> int:
        """Connection attempts to the broker so far (each reconnect counts)."""
        return self._session.attempts

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def jobs(self) -> dict[int, JobView]:
        """Jobs held now (fetching, queued, printing or ending), by id."""
        return self._call(self._runner.view)

    def finished(self) -> dict[int, JobState | None]:
        """Jobs that left the book recently: their local end state (None: dropped)."""
        return self._call(self._runner.book.recent)

    def service_state(self, name: str) -> tuple[ServiceState, tuple[str, ...]]:
        def read() -> tuple[ServiceState, tuple[str, ...]]:
            state, reasons, _ = self._runner.services[name].status()
            return state, reasons

        return self._call(read)

    def wait_for_job(self, job_id: int, timeout: float = 30.0) -> JobState | None:
        """Block until ``job_id`` has left the book; return its end state (None: dropped).

        Raises TimeoutError if it is still held (or never seen) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            recent = self.finished()
            if job_id in recent:
                return recent[job_id]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s")
            with self._runner.changed:
                self._runner.changed.wait(min(remaining, 0.2))

    # ------------------------------------------------------------------ for asyncio callers
    # An asyncio test that runs the broker or the service on its own loop must not block that
    # loop while waiting for the Manager: these run the blocking waits in a worker thread.

    async def wait_connected(self, timeout: float = 10.0) -> bool:
        return await asyncio.to_thread(self.connected.wait, timeout)

    async def wait_synced(self, timeout: float = 10.0) -> bool:
        return await asyncio.to_thread(self.synced.wait, timeout)

    async def wait_job(self, job_id: int, timeout: float = 30.0) -> JobState | None:
        return await asyncio.to_thread(self.wait_for_job, job_id, timeout)

    async def stop_async(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float = 30.0) -> None:
        """Start the threads and connect in the background; returns without waiting for it."""
        if self._thread is not None:
            raise RuntimeError("this Manager was already started")
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.stopped.clear()
        self._thread = threading.Thread(target=self._run_loop, name=f"manager-{self.config.device_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the manager did not start in time")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self.stopped.set()
            raise self._startup_error
        self._session.start()
        log.info("manager %s started with services %s", self.config.device_id, ", ".join(self.drivers))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop jobs, say Bye, disconnect cleanly and join the threads (at most ``timeout`` s)."""
        if self._thread is None or self.stopped.is_set():
            return
        deadline = time.monotonic() + timeout
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._runner.shutdown(), loop)
            try:
                future.result(max(0.1, deadline - time.monotonic()))
            except Exception:
                log.warning("manager shutdown did not finish cleanly", exc_info=True)
        self._session.stop(self._runner.goodbye(), timeout=min(5.0, max(0.1, deadline - time.monotonic())))
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("manager thread did not end within %.1f s", timeout)
        self.stopped.set()
        log.info("manager %s stopped", self.config.device_id)

    def drop_connection(self) -> None:
        """Cut the broker connection abruptly (fault injection); paho reconnects by itself."""
        self._session.drop_connection()

    def __enter__(self) -> Manager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _publish(self, topic: str, payload: bytes) -> bool:
        return self._session.publish(topic, payload)

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the runner's loop (called from paho's thread; never blocks)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: the message is moot
            loop.call_soon_threadsafe(fn, *args)

    def _call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the runner's loop and return its result (for readers in other threads)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self.running or threading.current_thread() is self._thread:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._runner.start())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()  # does not wait for worker threads (a download ends at its abort check)
