"""The cluster fault test: the local cluster (3 replicas behind HAProxy, Mosquitto with shared
subscriptions, PostgreSQL, S3 when the service has it), 4 simulated printers, 500 jobs submitted
through the load balancer. During the burst one replica is SIGKILLed and restarted later, and
separately the replica holding the singletons' lease is SIGKILLed (and restarted). At the end
every job is terminal, every completed job was printed exactly once (the printers' logs), none
was lost; the counts and the time to recover are printed. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud_service.cluster import LocalCluster
from tests.support.cluster import lease_holder, lease_lines, local_cluster, printed

pytestmark = [pytest.mark.mosquitto, pytest.mark.faults, pytest.mark.timeout(600)]

JOBS = 500
DEVICES = 4
SUBMITTERS = 8
KILL_AT = 100  # jobs submitted before the replica is killed
LEASE_KILL_AT = 300  # ... before the lease holder is killed
DOWN_FOR = 3.0
SETTLE_TIMEOUT = 240.0
TERMINAL = ("completed", "aborted", "canceled")

# No device dies here, so no step timeout should fire: each printer has a backlog of about 125
# claimed jobs, which on a loaded machine wait longer than a short step timeout before they print.
SERVICE = {"keepalive": 5, "supervise_interval": 1.0, "redeliver_after": 5.0, "offline_grace": 10.0,
           "step_timeout": 900.0, "offline_abort_after": 900.0,
           # A job whose upload died with a killed replica ends aborted instead of waiting forever.
           "incoming_timeout": 20.0}
MANAGER = {"keepalive": 5, "request_timeout": 3.0}


def _client(cluster: LocalCluster) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=cluster.url, verify=str(cluster.pki.ca_cert), timeout=10.0,
                             headers={"Authorization": f"Bearer {cluster.token}"})


async def _submit(http: httpx.AsyncClient, device: str, number: int, attempts: int = 200) -> int:
    """One job, retried while the load balancer has no replica for it (as a client would)."""
    pages = 1 + number % 3
    body = b"%PDF-1.4\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 1) for i in range(pages))
    job = json.dumps({"service": device, "ticket": {}, "document_format": "application/pdf"})
    for _ in range(attempts):
        try:
            response = await http.post("/api/v1/jobs", files={"job": (None, job, "application/json"),
                                                              "document": (f"j{number}.pdf", body, "application/pdf")})
            if response.status_code == 201:
                return int(response.json()["id"])
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"could not submit job {number}")


async def _states(http: httpx.AsyncClient) -> dict[int, dict[str, Any]]:
    response = await http.get("/api/v1/jobs", params={"all": True, "limit": 5000})
    return {job["id"]: job for job in response.json()["jobs"]}


async def _kill_and_restart(cluster: LocalCluster, index: int) -> tuple[float, float | None]:
    """SIGKILL replica ``index`` and restart it after DOWN_FOR. Returns, in seconds from the kill,
    when it was healthy again and when the printers printed again (None: not within 30 s of
    the restart)."""
    before = sum(printed(cluster).values())
    cluster.procs[cluster.replica_name(index)].kill()
    killed = time.monotonic()
    printing: float | None = None

    async def watch() -> None:
        nonlocal printing
        while printing is None:
            if sum(printed(cluster).values()) > before:
                printing = time.monotonic() - killed
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(DOWN_FOR)
    cluster.restart_replica(index)
    await cluster.wait_replica(index)
    healthy = time.monotonic() - killed
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(watcher), 30)
    watcher.cancel()
    return healthy, printing


async def _lease_moves(cluster: LocalCluster, holder: int, lines_before: int, killed: float,
                       timeout: float = 60.0) -> float | None:
    """Seconds until a replica other than ``holder`` logs taking the lease; None if none did
    (or the service has no lease: nothing was logged before)."""
    if not lines_before:
        return None
    while time.monotonic() - killed < timeout:
        if any(index != holder for _, index in lease_lines(cluster)[lines_before:]):
            return time.monotonic() - killed
        await asyncio.sleep(0.1)
    return None


async def test_cluster_survives_replica_and_lease_holder_kills(tmp_path: Path) -> None:
    started = time.monotonic()
    async with local_cluster(tmp_path, replicas=3, devices=DEVICES, driver="simulated",
                             driver_options={"pages_per_second": 100}, service_overrides=SERVICE,
                             manager_overrides=MANAGER) as cluster:
        devices = cluster.device_ids
        print(f"\ncluster up in {time.monotonic() - started:.1f} s: {cluster.replicas} replicas, "
              f"objects {'S3 ' + cluster.s3_url if cluster.s3_url else 'shared directory'}")
        async with _client(cluster) as http:
            submitted: list[int] = []
            next_number = 0
            milestones = {KILL_AT: asyncio.Event(), LEASE_KILL_AT: asyncio.Event()}

            async def submitter() -> None:
                nonlocal next_number
                while next_number < JOBS:
                    number, next_number = next_number, next_number + 1
                    submitted.append(await _submit(http, devices[number % len(devices)], number))
                    for at, event in milestones.items():
                        if len(submitted) >= at:
                            event.set()

            burst = [asyncio.create_task(submitter()) for _ in range(SUBMITTERS)]
            await asyncio.wait_for(milestones[KILL_AT].wait(), 180)
            healthy, printing = await _kill_and_restart(cluster, 1)
            assert printing is not None, "nothing printed within 30 s of the replica's restart"
            print(f"replica-2 SIGKILLed after {len(submitted)} jobs: printing went on {printing:.2f} s after the "
                  f"kill; the replica was back (healthy) {healthy:.1f} s after it")

            await asyncio.wait_for(milestones[LEASE_KILL_AT].wait(), 180)
            holder, how = lease_holder(cluster)
            if holder is None:
                # A service without leases: every replica runs the periodic work; kill another one.
                holder, how = 0, how + "; every replica runs the periodic work, so replica-1 stands in"
            lines_before = len(lease_lines(cluster))
            kill_at = time.monotonic()
            lease_task = asyncio.create_task(_lease_moves(cluster, holder, lines_before, kill_at))
            healthy, printing = await _kill_and_restart(cluster, holder)
            assert printing is not None, "nothing printed within 30 s of the lease holder's restart"
            print(f"lease holder {cluster.replica_name(holder)} ({how}) SIGKILLed after {len(submitted)} jobs: "
                  f"printing went on {printing:.2f} s after the kill; back {healthy:.1f} s after it")
            moved = await lease_task
            if lines_before:
                assert moved is not None, "no other replica took the lease within 60 s of the holder's death"
                print(f"the lease moved to another replica {moved:.1f} s after the kill")
            await asyncio.wait_for(asyncio.gather(*burst), 300)
            burst_done = time.monotonic()

            deadline = time.monotonic() + SETTLE_TIMEOUT
            jobs: dict[int, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                try:
                    jobs = await _states(http)
                except (httpx.HTTPError, ValueError):
                    await asyncio.sleep(0.5)
                    continue
                if all(jobs.get(i, {}).get("state") in TERMINAL for i in {*submitted, *jobs}):
                    break
                await asyncio.sleep(0.5)
            settled = time.monotonic()

            prints = printed(cluster)
            # Every job the service has, including one a resubmission made twice, and every one submitted.
            states = {i: jobs.get(i, {}).get("state", "LOST") for i in {*submitted, *jobs}}
            counts = {s: sum(1 for i, v in states.items() if v == s and i in submitted)
                      for s in sorted(set(states.values()))}
            problems = [i for i, s in states.items() if s not in TERMINAL]
            problems += [i for i, s in states.items() if s == "completed" and prints[i] != 1]
            problems += [i for i, n in prints.items() if n > 1]
            # No device died: nothing the client knows of may end aborted. A job the client never got
            # an answer for (its upload died with a replica) may: incoming_timeout ends it.
            problems += [i for i, s in states.items() if s == "aborted" and i in submitted]
            unknown = sorted(set(states) - set(submitted))
            print(f"CLUSTER FAULTS: {len(submitted)} jobs on {len(devices)} devices through HAProxy: {counts}; "
                  f"printed {sum(prints.values())} times for {len(prints)} jobs; {len(unknown)} more jobs the "
                  f"client got no answer for (a replica died with the request; the client submitted again): "
                  f"{ {i: states[i] for i in unknown} }; all terminal "
                  f"{settled - burst_done:.1f} s after the last submission; total {time.monotonic() - started:.1f} s")
            if problems:
                for job_id in sorted(set(problems))[:20]:
                    job = (await http.get(f"/api/v1/jobs/{job_id}")).json()
                    history = " -> ".join(f"{h['state']}({','.join(h['state_reasons'])})"
                                          for h in job.get("history", []))
                    print(f"  job {job_id} on {job.get('device_id')}: {job.get('state')} printed "
                          f"{prints[job_id]}x; {job.get('state_message')}; {history}")
            assert len(submitted) == JOBS and len(set(submitted)) == JOBS
            assert not problems, f"{len(set(problems))} job(s) broke the guarantees (see above)"
