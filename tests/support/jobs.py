"""A job made straight through the store, for tests of the store and what reads it."""

from __future__ import annotations

import time

from cloud_service.store import JobStore
from schemas.enums import ServiceKind


async def fetchable_job(store: JobStore, device: str = "dev-1") -> int:
    """A fetchable print job (no documents) on ``device``'s print service of the same name; the
    device and the service are made online and idle first. The job's id."""
    await store.set_device(device, online=True, last_seen=time.time())
    assert await store.upsert_service(device, ServiceKind.PRINT.value, device, {
        "state": "idle", "state_reasons": ["none"], "state_message": None, "info": None, "location": None,
        "make_and_model": None, "capabilities": {}})
    service = await store.service(ServiceKind.PRINT.value, device)
    assert service is not None
    row = await store.create_job(kind=ServiceKind.PRINT, service=service, owner="alice", ticket={}, documents=[],
                                 with_documents=True)
    return row.id
