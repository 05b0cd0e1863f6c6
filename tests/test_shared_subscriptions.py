"""Shared subscriptions on Mosquitto 2 (TLS, per-device ACL): three service replicas in the
group ``$share/cloud/``, each device message handled by exactly one of them (counted from the
replicas' own CLF logs), and a SIGKILLed replica's share handed to the others within a
bounded time (printed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloud_service.cluster import LocalCluster
from schemas.messages import Hello
from tests.support.cluster import local_cluster, received_by_replica
from tests.support.rawdevice import RawDevice

pytestmark = [pytest.mark.mosquitto, pytest.mark.faults, pytest.mark.timeout(240)]

DEVICES = ["share-dev-1", "share-dev-2"]
MESSAGES = 60  # per device, before the kill
AFTER_KILL = 30  # per device, right after it
HANDLED_WITHIN = 60.0


async def _wait_total(cluster: LocalCluster, expected: dict[str, int],
                      timeout: float) -> tuple[dict[str, dict[int, int]], float]:
    """Wait until each device's hellos, summed over the replicas, reach ``expected``: the counts
    (read again a moment later, so a duplicate would show) and when they were reached."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {d: dict(received_by_replica(cluster, d, "hello")) for d in expected}
        if all(sum(counts[d].values()) >= n for d, n in expected.items()) or time.monotonic() > deadline:
            reached = time.monotonic()
            await asyncio.sleep(1.0)
            return {d: dict(received_by_replica(cluster, d, "hello")) for d in expected}, reached
        await asyncio.sleep(0.05)


def _send_hellos(device: RawDevice, count: int) -> None:
    for _ in range(count):
        device.send(Hello(software="shared-subscription-test"))


async def test_each_message_handled_once_and_a_dead_replicas_share_moves(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, replicas=3, devices=0, broker_users=DEVICES) as cluster:
        devices = [RawDevice(d, cluster.passwords[d], cluster.broker_url, cluster.pki.ca_cert) for d in DEVICES]
        try:
            for device in devices:
                await asyncio.to_thread(_send_hellos, device, MESSAGES)
            counts, _ = await _wait_total(cluster, dict.fromkeys(DEVICES, MESSAGES), HANDLED_WITHIN)
            print(f"\nhellos handled per replica (replica index -> count): {counts}")
            for d in DEVICES:
                assert sum(counts[d].values()) == MESSAGES, (d, counts[d])  # none twice, none lost
                # The group spreads them: more than one replica took part.
                assert sum(1 for n in counts[d].values() if n) >= 2, (d, counts[d])

            victim = 1
            cluster.procs[cluster.replica_name(victim)].kill()
            killed_at = time.monotonic()
            for device in devices:
                await asyncio.to_thread(_send_hellos, device, AFTER_KILL)
            after, reached = await _wait_total(cluster, dict.fromkeys(DEVICES, MESSAGES + AFTER_KILL), HANDLED_WITHIN)
            recovered = reached - killed_at
            print(f"after SIGKILL of {cluster.replica_name(victim)}: {after}; all {AFTER_KILL} later hellos "
                  f"per device handled by the others {recovered:.2f} s after the kill")
            for d in DEVICES:
                assert after[d][victim] == counts[d][victim], "a dead replica cannot have handled anything"
                assert sum(after[d].values()) == MESSAGES + AFTER_KILL, (d, after[d])
            assert recovered < HANDLED_WITHIN
        finally:
            for device in devices:
                device.close()
