"""Retention: the sweeper that deletes document bytes and job history when their time comes.

The rules themselves are pure (schemas.model.retention). Each job carries its policy, fixed
when it is submitted from, in order: the job's own choice, its service's policy (set by the
device's owner), the service configuration's defaults.

- documents: ``discard-after-processing`` (deleted at the first sweep after the job ended),
  ``after-duration`` (``document_seconds`` after it ended) or ``keep``;
- history: the job itself (row, documents list, history) is deleted ``history_seconds`` after
  it ended, or kept when that is None.

The sweeper enforces both on a timer and reads a ``Clock``, so tests move time instead of
sleeping. A presigned URL never outlives its object: URLs are only minted while a job is
under way, object GETs are refused once the job has ended, a deleted object answers 404, and
a job id (and so an object key) can only be reused by the database after the job's row is
gone, which the sweeper never does before every URL ever minted for it has expired
(``MIN_HISTORY_SECONDS``). With several replicas only the holder of the periodic lease
(cloud_service.lease) sweeps; a sweep repeated by a second one would delete nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select

from cloud_service.clock import Clock
from cloud_service.config import ServiceConfig
from cloud_service.db import JobRow, ServicePolicyRow
from cloud_service.documents import object_keys
from cloud_service.lease import AlwaysHeld, Lease
from cloud_service.objects import ObjectStore
from cloud_service.store import JobStore
from schemas.enums import JobState
from schemas.model import retention as rules
from schemas.model.retention import Retention

log = logging.getLogger("cloudimaging.retention")

TERMINAL = tuple(s.value for s in JobState if s.terminal)


def defaults(config: ServiceConfig) -> Retention:
    """The service configuration's retention, the level below every service policy."""
    return Retention(config.document_retention, config.document_retention_seconds, config.history_retention_seconds)


def policy_rules(policy: ServicePolicyRow | None) -> Retention | None:
    """A service's stored policy as model values."""
    if policy is None:
        return None
    return Retention(policy.document_retention, policy.document_retention_seconds, policy.history_retention_seconds)


def resolve(config: ServiceConfig, policy: ServicePolicyRow | None, choice: dict[str, Any] | None) -> Retention:
    """The job's retention (schemas.model.retention.resolve on this service's rows)."""
    return rules.resolve(defaults(config), policy_rules(policy), choice)


def columns(retention: Retention) -> dict[str, Any]:
    """The job row's retention columns."""
    return {"retention_documents": retention.documents, "retention_seconds": retention.document_seconds,
            "history_seconds": retention.history_seconds}


def describe(row: JobRow, config: ServiceConfig) -> dict[str, Any]:
    """The policy as the job's details show it, with when each deletion is due."""
    stored = (Retention(row.retention_documents, row.retention_seconds, row.history_seconds)
              if row.retention_documents else None)
    return rules.describe(stored, defaults(config), row.completed_at, row.documents_discarded_at)


class Sweeper:
    """Deletes document bytes and old jobs as their policies say; ``sweep()`` is one pass."""

    def __init__(self, store: JobStore, objects: ObjectStore, config: ServiceConfig, clock: Clock,
                 lease: Lease | None = None) -> None:
        self.store = store
        self.lease: Lease = lease or AlwaysHeld()
        self.objects = objects
        self.config = config
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> dict[str, int]:
        now = self.clock.now()
        async with self.store.reads() as s:
            ended = list(await s.scalars(select(JobRow).where(JobRow.state.in_(TERMINAL),
                                                              JobRow.completed_at.is_not(None))))
        discarded = deleted = 0
        for row in ended:
            info = describe(row, self.config)
            if info["job_delete_after"] is not None and info["job_delete_after"] <= now:
                await self._delete_job(row)
                deleted += 1
            elif (row.documents_discarded_at is None and info["documents_delete_after"] is not None
                  and info["documents_delete_after"] <= now):
                await self._discard_documents(row, now)
                discarded += 1
        if discarded or deleted:
            log.info("retention: discarded the documents of %d job(s), deleted %d job(s)", discarded, deleted)
        return {"documents_discarded": discarded, "jobs_deleted": deleted}

    async def _discard_documents(self, row: JobRow, now: float) -> None:
        for doc in await self.store.documents(row.id):
            for key in object_keys(doc):
                with contextlib.suppress(KeyError, OSError):
                    await self.objects.delete(key)
        await self.store.mark_documents_discarded(row.id, now)

    async def _delete_job(self, row: JobRow) -> None:
        for doc in await self.store.documents(row.id):
            for key in object_keys(doc):
                with contextlib.suppress(KeyError, OSError):
                    await self.objects.delete(key)
        await self.store.delete_job(row.id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            if not self.lease.held:
                continue
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; trying again later")
