"""The local cluster (cloud_service.cluster) for tests: a database of its own per run, dropped
at the end; every process stopped. Missing tools (mosquitto, haproxy, PostgreSQL): skip with the
reason, or fail under CI=true."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloud_service.cluster import LocalCluster, find_tool
from cloud_service.config import ServiceConfig

POSTGRES = ("127.0.0.1", 5432)


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def require_cluster_tools() -> None:
    """Mosquitto, HAProxy, asyncpg and a PostgreSQL on 127.0.0.1:5432, or skip/fail."""
    if find_tool("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") is None:
        _missing("mosquitto is needed (apt-get install mosquitto)")
    if find_tool("haproxy", "/usr/sbin/haproxy") is None:
        _missing("haproxy is needed (apt-get install haproxy)")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _missing("asyncpg is needed (pip install asyncpg)")
    try:
        with socket.create_connection(POSTGRES, timeout=2):
            pass
    except OSError:
        _missing(f"no PostgreSQL on {POSTGRES[0]}:{POSTGRES[1]}")


@contextlib.asynccontextmanager
async def local_cluster(tmp_path: Path, **kw: Any) -> AsyncIterator[LocalCluster]:
    """A started LocalCluster on ephemeral ports and a fresh database; stopped and dropped after."""
    require_cluster_tools()
    if "object_store" in ServiceConfig.model_fields and kw.get("s3", "auto") != "off" and find_tool(
            "moto_server", str(Path(sys.executable).parent / "moto_server")) is None:
        reason = "the service has an S3 store but moto_server is missing (pip install 'moto[server]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true, so this is a failure")
        print(f"NOTE: {reason}; the replicas share an objects directory instead")
    name = f"ci_cluster_test_{os.getpid()}_{secrets.token_hex(4)}"
    cluster = LocalCluster(tmp_path / "data", http_port=0, broker_port=0,
                           database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}",
                           drop_database=True, **kw)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


_RECV = re.compile(r'^\S+ - (?P<user>\S+) \[[^]]+\] "MQTT-RECV \S+ (?P<kind>\S+)" ')


def received(cluster: LocalCluster, index: int, device_id: str, kind: str) -> int:
    """How many ``kind`` messages of ``device_id`` replica ``index`` logged (its CLF log)."""
    path = cluster.access_log(index)
    if not path.exists():
        return 0
    count = 0
    for line in path.read_text(errors="replace").splitlines():
        m = _RECV.match(line)
        if m and m["user"] == device_id and m["kind"] == kind:
            count += 1
    return count


def received_by_replica(cluster: LocalCluster, device_id: str, kind: str) -> Counter[int]:
    return Counter({i: received(cluster, i, device_id, kind) for i in range(cluster.replicas)})


def printed(cluster: LocalCluster) -> Counter[int]:
    """Job ids in the simulated printers' printed.log files (one line per print)."""
    counts: Counter[int] = Counter()
    for device_id in cluster.device_ids:
        log = cluster.output_dir(device_id) / "printed.log"
        if log.exists():
            counts.update(int(line) for line in log.read_text().split())
    return counts


#: How a replica says it took the singletons' lease (supervisor, retention sweeper), e.g.
#: "lease periodic-work: held by this replica" (cloud_service.lease, at INFO).
LEASE_LINE = re.compile(r"\blease\b.*\b(held|acquired|taken|took|holds?|won)\b", re.IGNORECASE)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def lease_lines(cluster: LocalCluster) -> list[tuple[str, int]]:
    """(timestamp, replica index) of every lease-taking line in the replicas' logs, oldest first."""
    found: list[tuple[str, int]] = []
    for index in range(cluster.replicas):
        log = cluster.logs / f"{cluster.replica_name(index)}.log"
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            stamp = _STAMP.match(line)
            if stamp and LEASE_LINE.search(line):
                found.append((stamp[1], index))
    return sorted(found)


def lease_holder(cluster: LocalCluster) -> tuple[int | None, str]:
    """(replica index, how it was found): the replica whose log announced taking the lease most
    recently. None when no replica says so (a service without leases, where every replica runs
    the periodic work, idempotently)."""
    lines = lease_lines(cluster)
    if not lines:
        return None, "no replica logged a lease"
    stamp, index = lines[-1]
    return index, f"its log says at {stamp} that it holds the lease"
