"""What a supervisor sweep reads (cloud_service/store.py: JobStore.sweep_view): the jobs it may
act on and the devices of those jobs only, so thousands of idle connected devices cost a sweep
nothing; the devices are read in batches that stay under the databases' parameter limits."""

from __future__ import annotations

import time

import pytest

from cloud_service import store as store_module
from cloud_service.db import create_schema, make_engine
from cloud_service.store import JobStore
from schemas.model.job import Accept
from tests.support.jobs import fetchable_job


async def test_a_sweep_reads_the_devices_of_its_jobs_only(database_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "SWEEP_DEVICES_PER_QUERY", 2)  # three devices: two batches
    engine = make_engine(database_url)
    store = JobStore(engine)
    try:
        await create_schema(engine)
        for i in range(30):
            await store.set_device(f"idle-{i:02}", online=True, last_seen=time.time())
        claimed = await fetchable_job(store, "busy-a")
        await store.transition(claimed, Accept())
        await fetchable_job(store, "busy-b")
        await fetchable_job(store, "busy-c")

        later = time.time() + 60
        view = await store.sweep_view(later, later)
        assert sorted(d.id for d in view.devices) == ["busy-a", "busy-b", "busy-c"]
        assert [r.id for r in view.claimed] == [claimed]
        assert sorted(r.device_id for r in view.fetchable) == ["busy-b", "busy-c"]
        assert all(d.online for d in view.devices)

        # Nothing fetchable for long enough: the claimed job's device only.
        empty = await store.sweep_view(0.0, 0.0)
        assert [r.id for r in empty.claimed] == [claimed] and not empty.fetchable
        assert [d.id for d in empty.devices] == ["busy-a"]
    finally:
        await store.close()
        await engine.dispose()
