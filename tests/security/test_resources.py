"""Connections, files and audit: what an attacker or a careless client can do to the resources of
the service and what the service records about it.

- Failed IPP logins reach the security log as ``auth-failed``, as on the HTTP API.
- Registering a device id that is taken gets one answer whoever holds it, and a user gets only
  a few such answers before 429, so device ids of others cannot be enumerated.
- A flood of idle and half-open connections on both listeners of ``cloudimaging up``, under a
  low open-files limit, neither exhausts its descriptors nor locks out real clients; the flood
  is closed within the timeouts, its log lines are rate-limited, and nothing leaks after it.
- Everything the service, the broker, the embedded stack and the Manager write is private
  (files 0600, directories 0700), in process (explicit modes) and from the real entry point
  (its umask), whatever the umask it was started with.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import time
from pathlib import Path

import httpx

from cloud_service import registration
from cloud_service.db import _private_sqlite_file
from cloud_service.ipp.conformance import minimal_pdf
from schemas.ipp.codec import Op, Tag
from tests.support import flood
from tests.support.documents import pdf_bytes
from tests.support.ipptools import ipp, new
from tests.support.secstack import secure_stack
from tests.support.stack import running_stack
from tests.support.upprocess import up_process

#: How many "taken" answers a user gets before 429 (read so that older code fails on behaviour).
REFUSED_REGISTRATIONS: int = getattr(registration, "REFUSED_REGISTRATIONS", 5)
#: Public by nature: certificates and the CRL may stay 0644 (they sit in 0700 directories).
PUBLIC = ("ca.pem", "server.pem", "crl.pem", "device.pem", "cert.pem")


def _events(log: Path, name: str) -> list[dict]:
    if not log.exists():
        return []
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == name]


def _not_private(root: Path, public: tuple[str, ...] = PUBLIC) -> list[str]:
    """Every directory under (and including) ``root`` not 0700 and every file not 0600."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if path.is_dir():
            if mode & 0o077:
                found.append(f"{path.relative_to(root.parent)} {mode:o}")
        elif mode & 0o077 and not (path.name in public and mode == 0o644):
            found.append(f"{path.relative_to(root.parent)} {mode:o}")
    return found


# ---------------------------------------------------------------------------------------------- audit


async def test_failed_ipp_login_is_audited_without_the_secret(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        log = stack.service.config.logs_dir / "security.log"
        msg = new(stack, Op.PRINT_JOB, "office", document_format=(Tag.MIME_TYPE, "application/pdf"))
        bad = "not-a-token-3f9a1c"
        refused = await ipp(stack, "office", msg, auth="basic", user="mallory", token=bad, data=b"%PDF-1.4\n")
        assert refused.status_code == 401
        refused = await ipp(stack, "office", msg, auth="bearer", token=bad + "-b", data=b"%PDF-1.4\n")
        assert refused.status_code == 401
        # Without any credentials (what an IPP client sends first to learn it must log in): no event.
        assert (await ipp(stack, "office", msg, auth=None, data=b"%PDF-1.4\n")).status_code == 401
        events = _events(log, "auth-failed")
        assert len(events) == 2, events
        for event in events:
            assert event["outcome"] == "denied" and event["client"] == "127.0.0.1"
            assert event["path"] == "/ipp/print/office" and event["operation"] == "print-job"
        assert bad not in log.read_text()


async def test_taken_device_ids_get_one_answer_and_a_bounded_number_of_them(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        alice = await stack.make_user("alice", role="owner")
        mallory = await stack.make_user("mallory", role="owner")
        async with await stack.client(alice) as http:
            assert (await http.post("/api/v1/devices", json={"device_id": "alice-printer"})).status_code == 201
        # Known to the service (a password login before registration), registered to nobody.
        await stack.service.store.set_device("legacy-printer", owner=None)
        log = stack.service.config.logs_dir / "security.log"
        async with await stack.client(mallory) as http:
            owned = await http.post("/api/v1/devices", json={"device_id": "alice-printer"})
            legacy = await http.post("/api/v1/devices", json={"device_id": "legacy-printer"})
            assert owned.status_code == legacy.status_code == 409
            # The same answer, whoever holds the id: nothing more than "taken" is learnt.
            assert owned.json()["error"]["message"].replace("alice-printer", "X") == \
                legacy.json()["error"]["message"].replace("legacy-printer", "X")
            assert "someone else" not in owned.text
            for n in range(REFUSED_REGISTRATIONS - 2):
                assert (await http.post("/api/v1/devices",
                                        json={"device_id": "alice-printer"})).status_code == 409, n
            # Budget spent: 429 for every registration, even of a free id, so probing stops here.
            for device_id in ("alice-printer", "free-printer"):
                limited = await http.post("/api/v1/devices", json={"device_id": device_id})
                assert limited.status_code == 429, limited.text
        # Other users are not held back by mallory's refusals.
        async with await stack.client(alice) as http:
            assert (await http.post("/api/v1/devices", json={"device_id": "alice-second"})).status_code == 201
        refused = _events(log, "device-register-refused")
        assert len(refused) == REFUSED_REGISTRATIONS + 2
        assert {e["actor"] for e in refused} == {"mallory"}
        assert sum(e["reason"] == "too many refused registrations" for e in refused) == 2


# ---------------------------------------------------------------------------------------------- connections

#: The child's open-files limit: its budget is (256 - 64) / 2 = 96 connections per listener.
NOFILE = 256
#: More than the budget of each listener, and more than the whole limit together.
FLOOD = 180
HALF_OPEN = 30
#: The handshake, header and CONNECT timeouts of ``cloudimaging up`` are 10 s.
TIMEOUT = 10.0


async def test_idle_and_half_open_floods_do_not_exhaust_or_starve_the_listeners(tmp_path: Path) -> None:
    async with up_process(tmp_path, nofile=NOFILE, printer=False) as up:
        pid = up.process.pid
        https_port = int(up.url.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=up.url, verify=str(up.ca), timeout=10.0) as http:
            assert (await http.get("/healthz")).status_code == 200
        await asyncio.sleep(0.5)
        baseline = flood.open_fds(pid)
        opened: list = []
        try:
            started = time.monotonic()
            opened += flood.idle_tcp(https_port, FLOOD)
            opened += flood.idle_tcp(up.broker_port, FLOOD)
            # Slowloris: a TLS connection, then a request head that never ends.
            opened += flood.half_open_tls(https_port, HALF_OPEN, up.ca, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            opened += flood.half_open_tls(up.broker_port, HALF_OPEN, up.ca)
            assert flood.open_fds(pid) < NOFILE

            # Neither listener is starved: /healthz answers promptly, the broker answers a CONNECT.
            ca = ssl.create_default_context(cafile=str(up.ca))
            async with httpx.AsyncClient(base_url=up.url, verify=ca, timeout=5.0) as http:
                for _ in range(3):
                    asked = time.monotonic()
                    assert (await http.get("/healthz")).status_code == 200
                    assert time.monotonic() - asked < 3.0  # it took 6-7 s when descriptors ran out
            assert await asyncio.to_thread(flood.refused_connect, up.broker_port, up.ca) == b"\x20\x02\x00\x05"

            # Every flood connection is closed by the service within its timeouts. Opening the
            # flood itself can take a while on a loaded machine (TLS handshakes wait their turn
            # at a full listener), so the bound counts from when the last one was opened.
            flooded = time.monotonic() - started
            deadline = time.monotonic() + 2 * TIMEOUT + 5
            still_open = [s for s in opened if not await asyncio.to_thread(flood.closed_by_peer, s, deadline)]
            ports = {p: sum(1 for sock in still_open if sock.getpeername()[1] == p)
                     for p in (https_port, up.broker_port)}
            assert not still_open, (f"{len(still_open)} of {len(opened)} idle connections still open "
                                    f"{2 * TIMEOUT + 5:.0f} s after the flood (opening it took {flooded:.1f} s; "
                                    f"https {ports[https_port]}, mqtt {ports[up.broker_port]}); "
                                    f"service output: {up.output[-3000:]}")
        finally:
            flood.close_all(opened)

        # Nothing leaks after they go, and the service still answers.
        deadline = time.monotonic() + 10
        while flood.open_fds(pid) > baseline + 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert flood.open_fds(pid) <= baseline + 8, (baseline, flood.open_fds(pid))
        async with httpx.AsyncClient(base_url=up.url, verify=str(up.ca), timeout=10.0) as http:
            assert (await http.get("/healthz")).status_code == 200
        output = up.output
    assert output.count("Too many open files") <= 3, output[-3000:]
    # Hundreds of connections were closed to make room: a burst of lines per listener, not one each.
    assert 1 <= output.count("not yet active") <= 2 * 11, output[-3000:]


async def test_request_heads_have_a_deadline_and_a_full_server_makes_room(tmp_path: Path) -> None:
    """The service's own knobs, in process: a slow next request head on a keep-alive connection is
    closed after ``header_timeout`` (not the longer keep-alive), and a server at its cap closes
    the oldest idle connection for a real request."""
    async with secure_stack(tmp_path, header_timeout=1.0, tls_handshake_timeout=1.0,
                            keep_alive_timeout=10.0, max_connections=8) as stack:
        port = int(stack.service.url.rsplit(":", 1)[1])
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        [conn] = await asyncio.to_thread(flood.half_open_tls, port, 1, stack.ca, head)
        opened = [conn]
        try:
            conn.settimeout(5)
            assert (await asyncio.to_thread(conn.recv, 4096)).startswith(b"HTTP/1.1 200")
            conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
            started = time.monotonic()
            assert await asyncio.to_thread(flood.closed_by_peer, conn, started + 8)
            assert time.monotonic() - started < 5.0  # the header deadline, not keep_alive_timeout (10 s)

            # Full of idle keep-alive connections (a request each, answered, then nothing): idle
            # between requests is not active, so a newcomer still gets in.
            idle = await asyncio.to_thread(flood.half_open_tls, port, 8, stack.ca, head)
            opened += idle
            for sock in idle:
                assert (await asyncio.to_thread(sock.recv, 4096)).startswith(b"HTTP/1.1 200")
            async with httpx.AsyncClient(base_url=stack.service.url, verify=str(stack.ca), timeout=5.0) as http:
                asked = time.monotonic()
                assert (await http.get("/healthz")).status_code == 200
                assert time.monotonic() - asked < 2.0
            # Full of slowloris heads and bare TCP connections: the same.
            opened += await asyncio.to_thread(flood.half_open_tls, port, 8, stack.ca, b"GET / HTTP/1.1\r\n")
            opened += await asyncio.to_thread(flood.idle_tcp, port, 4)
            assert stack.service._server is not None and stack.service._server.open_connections <= 8
            asked = time.monotonic()
            assert (await stack.http.get("/healthz")).status_code == 200
            assert time.monotonic() - asked < 2.0
        finally:
            flood.close_all(opened)


# ---------------------------------------------------------------------------------------------- files


async def test_service_and_journal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """In process (umask 022, as pytest runs): the modes are set where the files are made."""
    async with running_stack(tmp_path) as stack:
        await stack.add_manager("modes-printer")
        submitted = await stack.submit(pdf_bytes(1, 2000), service="modes-printer")
        assert submitted.status_code == 201, submitted.text
        await stack.wait_job(submitted.json()["id"])
        service_dir = stack.service.config.data_dir
        assert list((service_dir / "objects").rglob("*.pdf")) or list((service_dir / "objects").rglob("*")), \
            "no stored document to check"
        assert (service_dir / "service.db-wal").exists()
        state = tmp_path / "devices" / "modes-printer" / "state"
        journal = sorted(p for p in state.iterdir() if p.name.startswith("journal.sqlite"))
        assert len(journal) >= 2, journal  # the journal and its WAL
        problems = _not_private(service_dir)
        problems += [f"{p.name} {stat.S_IMODE(p.stat().st_mode):o}" for p in [state, *journal]
                     if stat.S_IMODE(p.stat().st_mode) & 0o077]
        assert not problems, problems


def test_a_database_put_in_a_shared_sticky_directory_leaves_the_directory_shared(tmp_path: Path) -> None:
    """A SQLite database placed straight in a /tmp-like directory (sticky, world-writable, ours):
    the file is made private, the directory is not tightened; a plain directory of ours is."""
    shared, plain = tmp_path / "shared-tmp", tmp_path / "plain"
    shared.mkdir()
    plain.mkdir()
    shared.chmod(0o1777)
    plain.chmod(0o755)
    for directory in (shared, plain):
        _private_sqlite_file(f"sqlite+aiosqlite:///{directory / 'service.db'}")
        assert stat.S_IMODE((directory / "service.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(plain.stat().st_mode) == 0o700


async def test_cloudimaging_up_keeps_its_data_private_under_umask_022(tmp_path: Path) -> None:
    """The real entry point, started with umask 022: every file it or its Manager makes is private."""
    async with up_process(tmp_path, umask=0o022) as up:
        async with httpx.AsyncClient(base_url=up.url, verify=str(up.ca), timeout=20.0,
                                     headers={"Authorization": f"Bearer {up.token}"}) as http:
            deadline = time.monotonic() + 30
            while not (await http.get("/api/v1/services/print/sim-printer")).is_success:
                assert time.monotonic() < deadline, "the simulated printer never came online"
                await asyncio.sleep(0.1)
            job = {"ticket": {}, "service": "sim-printer", "document_format": "application/pdf",
                   "document_name": "a.pdf"}
            created = await http.post("/api/v1/jobs", files={
                "job": (None, json.dumps(job), "application/json"),
                "document": ("a.pdf", minimal_pdf(), "application/pdf")})  # renderable: it is transformed
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + 30
            while (await http.get(f"/api/v1/jobs/{created.json()['id']}")).json()["state"] != "completed":
                assert time.monotonic() < deadline, "job did not complete"
                await asyncio.sleep(0.1)
        printed = list((up.data_dir / "devices" / "sim-printer" / "output").iterdir())
        assert printed, "nothing printed"
        problems = _not_private(up.data_dir)
        assert not problems, problems
