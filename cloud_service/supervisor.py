"""The supervisor: no job stays non-terminal forever without a reason a client can read.

A periodic sweep (``sweep(now)`` takes the time, so tests drive it with any clock) applies
the rules of docs/reliability.md:

- a device offline for ``offline_grace``: its processing jobs go to processing-stopped
  (printer-stopped, "the device is offline"); when it returns, its Hello and reports decide;
- a device offline for ``offline_abort_after``: its claimed jobs end aborted;
- a claim with no report for ``step_timeout`` on an online device: released (fetchable
  again) if printing never started and the device itself has been silent that long (a busy
  device works through its own queue), aborted if printing started; processing-stopped jobs are exempt
  while their device is online (a jam or an empty tray can take long and is being reported);
- a job fetchable for ``redeliver_after`` on an online device: its doorbell rings again;
- a job waiting for its document (pending-held, job-incoming) for ``incoming_timeout``: aborted
  (IPP's multiple-operation-time-out); its upload died with the client, or with the replica
  that was receiving it.

Every change goes through the core and the store's optimistic versions, so several service
replicas may sweep at once without harm, and a restart loses nothing (all state is in the DB).
With several replicas only the holder of the periodic lease (cloud_service.lease) sweeps, so
doorbells are not rung once per replica and the database is not swept N times over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud_service.db import DeviceRow, JobRow
from cloud_service.lease import AlwaysHeld, Lease
from cloud_service.store import ConcurrentUpdate, JobNotFound, JobStore
from schemas.enums import JobState, Reason
from schemas.messages import JobFetchable, Message
from schemas.model.job import Abort, Event, InvalidTransition, Job, Release, Suspend

log = logging.getLogger("cloudimaging.supervisor")


@dataclass(frozen=True)
class SupervisorPolicy:
    offline_grace: float = 60.0
    offline_abort_after: float = 3600.0
    step_timeout: float = 600.0
    redeliver_after: float = 30.0
    incoming_timeout: float = 3600.0


@dataclass
class SweepReport:
    suspended: int = 0
    released: int = 0
    aborted: int = 0
    rung: int = 0


class Supervisor:
    def __init__(self, store: JobStore, policy: SupervisorPolicy, notify: Callable[[str, Message], None],
                 lease: Lease | None = None) -> None:
        self.store = store
        self.lease: Lease = lease or AlwaysHeld()
        self.policy = policy
        self.notify = notify
        self._task: asyncio.Task[None] | None = None
        #: When each job's doorbell was last rung again (a hint only; losing it costs a ring).
        self._rung: dict[int, float] = {}

    def start(self, interval: float) -> None:
        self._task = asyncio.create_task(self._loop(interval), name="supervisor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.lease.held:
                continue
            try:
                report = await self.sweep(time.time())
                if report.suspended or report.released or report.aborted or report.rung:
                    log.info("supervisor: %s", report)
            except Exception:
                log.exception("supervisor sweep failed; trying again next time")

    async def sweep(self, now: float) -> SweepReport:
        """One pass. Everything it decides on is read in one hop (``JobStore.sweep_view``), not
        a hop or two per device: with thousands of idle devices connected, per-device reads
        every few seconds cost more than the jobs themselves. Only what it changes costs more
        hops, each conditioned on the version it decided on."""
        report = SweepReport()
        view = await self.store.sweep_view(now - self.policy.redeliver_after, now - self.policy.incoming_timeout)
        devices = {d.id: d for d in view.devices}
        for row in view.claimed:
            device = devices.get(row.device_id)
            if device is None:
                continue
            event = self._decide(device, row, now)
            if event is not None:
                await self._apply(row, event, report)
        self._ring_again([r for r in view.fetchable if (d := devices.get(r.device_id)) is not None and d.online],
                         now, report)
        await self._expire_incoming(view.incoming, report)
        return report

    async def _expire_incoming(self, rows: list[JobRow], report: SweepReport) -> None:
        """Abort jobs whose document never arrived (they belong to no device yet)."""
        limit = self.policy.incoming_timeout
        for row in rows:
            if Reason.JOB_INCOMING in row.state_reasons:
                await self._apply(row, Abort(Reason.ABORTED_BY_SYSTEM,
                                             f"no document arrived within {limit:.0f} s "
                                             "(multiple-operation-time-out)"), report)

    def _ring_again(self, rows: list[JobRow], now: float, report: SweepReport) -> None:
        """Ring the doorbell again for jobs fetchable for a while on online devices: a doorbell
        may have been lost with a broker or service restart while the device stayed connected
        (and so sent no Hello that would have found them)."""
        wait = self.policy.redeliver_after
        for row in rows:
            if now - row.updated_at >= wait and now - self._rung.get(row.id, 0.0) >= wait:
                self._rung[row.id] = now
                self.notify(row.device_id, JobFetchable(job_id=row.id))
                report.rung += 1
        if len(self._rung) > 100_000:
            self._rung.clear()

    def _decide(self, device: DeviceRow, row: JobRow, now: float) -> Event | None:
        policy = self.policy
        state = JobState(row.state)
        if not device.online:
            away = now - (device.last_seen or device.created_at)
            if away >= policy.offline_abort_after:
                return Abort(Reason.ABORTED_BY_SYSTEM,
                             f"the device has been offline for {away:.0f} s (limit {policy.offline_abort_after:.0f} s)")
            if away >= policy.offline_grace and state is JobState.PROCESSING:
                return Suspend(Reason.PRINTER_STOPPED,
                               f"the device went offline {away:.0f} s ago; waiting for it to return")
            return None
        idle = now - row.updated_at
        if idle < policy.step_timeout or state is JobState.PROCESSING_STOPPED:
            return None
        if not row.started:
            # A claim not yet started waits in the device's own queue behind other jobs: while the
            # device keeps talking (its last_seen is recent) it is working through that queue, and
            # releasing the claim would only make the device's reports on it refused later.
            quiet = now - max(row.updated_at, device.last_seen or 0.0)
            if quiet < policy.step_timeout:
                return None
            return Release(f"no progress for {idle:.0f} s after the claim; offered again")
        return Abort(Reason.ABORTED_BY_SYSTEM, f"no progress report for {idle:.0f} s (step timeout)")

    async def _apply(self, row: JobRow, event: Event, report: SweepReport) -> None:
        expected = row.version

        def only_if_unchanged(_job: Job, current: JobRow) -> Event | None:
            # Re-decide nothing: if the job moved since we looked, leave it to the next sweep.
            return event if current.version == expected else None

        try:
            result = await self.store.transition(row.id, only_if_unchanged)
        except (InvalidTransition, JobNotFound, ConcurrentUpdate) as exc:
            log.debug("supervisor skipped job %s: %s", row.id, exc)
            return
        if not result.changed:
            return
        log.warning("job %d: %s: %s", row.id, type(event).__name__.lower(), result.after.message)
        if isinstance(event, Suspend):
            report.suspended += 1
        elif isinstance(event, Release):
            report.released += 1
            self.notify(row.device_id, JobFetchable(job_id=row.id))
        else:
            report.aborted += 1
