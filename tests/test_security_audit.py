"""Audit: security events land in DATA/logs/security.log, no token, code, password or key
appears in any log (files or Python logging), and the logs rotate."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_service.audit import AuditLog
from cloud_service.clf import ClfLog
from cloud_service.clf import _field as clf_field
from tests.support.brokers import MqttTestClient, connect_code
from tests.support.secstack import CertBroker, secure_stack


async def test_security_events_are_logged_and_secrets_never_are(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    async with secure_stack(tmp_path) as stack:
        secrets.append(stack.token)
        olga = await stack.make_user("olga", "owner")
        alice = await stack.make_user("alice")
        secrets += [olga, alice]
        async with await stack.client(olga) as owner, await stack.client(alice) as user, \
                httpx.AsyncClient(base_url=stack.service.url, verify=str(stack.ca)) as anon:
            extra = (await user.post("/api/v1/tokens", json={"label": "x"})).json()
            secrets.append(extra["token"])
            assert (await user.delete(f"/api/v1/tokens/{extra['id']}")).is_success
            assert (await anon.get("/api/v1/me", headers={"Authorization": f"Bearer {extra['token']}"})
                    ).status_code == 401
            assert (await anon.get("/api/v1/me", headers={"Authorization": "Bearer ci_guess"})).status_code == 401
            assert (await user.get("/api/v1/users")).status_code == 403
            registered = (await owner.post("/api/v1/devices", json={"device_id": "aud-dev"})).json()
            code = registered["enrollment_code"]
            secrets.append(code)
            config = await stack.enroll(olga, "aud-dev", code=code)
            key_pem = (config.parent / "device.key").read_text()
            secrets.append("".join(key_pem.splitlines()[1:-1])[:64])  # the key's base64 body
            assert (await anon.post("/api/v1/enroll", json={"code": code, "csr": "x"})).status_code == 401
            await stack.start_enrolled(config)
            password = await asyncio.to_thread(stack.broker.add_user, "pw-dev")
            secrets.append(password)
            assert await asyncio.to_thread(connect_code, stack.broker, "pw-dev", password + "x") not in (0, -1)

            def snoop() -> None:
                broker = CertBroker(stack.broker.url, stack.ca, config.parent / "device.pem",
                                    config.parent / "device.key")
                with MqttTestClient(broker, None, None, "aud-dev-snoop") as bad_id:
                    assert bad_id.connect() not in (0, -1)

            await asyncio.to_thread(snoop)
            await stack.stop_manager("aud-dev")
            assert (await owner.post("/api/v1/devices/aud-dev/revoke")).is_success
        logs = stack.service.config.logs_dir
        events = [json.loads(line) for line in (logs / "security.log").read_text().splitlines()]
        kinds = {e["event"] for e in events}
        assert {"auth-failed", "access-denied", "token-created", "token-revoked", "user-created",
                "device-registered", "enrollment-code-issued", "device-enrolled", "enrollment-refused",
                "device-revoked", "broker"} <= kinds
        broker_lines = [e["message"] for e in events if e["event"] == "broker"]
        assert any("pw-dev" in m and "refused CONNECT" in m for m in broker_lines)
        assert any("aud-dev-snoop" in m for m in broker_lines)
        revoked = next(e for e in events if e["event"] == "device-revoked")
        assert revoked["actor"] == "olga" and revoked["device"] == "aud-dev"
        failed = [e for e in events if e["event"] == "auth-failed"]
        assert all(e["outcome"] == "denied" and e["client"] == "127.0.0.1" for e in failed)
    # No secret anywhere: log files (current and rotated), the CLF log, Python's log records.
    texts = [p.read_text(errors="replace") for p in logs.iterdir() if p.is_file()]
    texts.append("\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records))
    for secret in secrets:
        for text in texts:
            assert secret not in text
        assert secret.replace("-", "") not in texts[-1]


def test_logs_rotate(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "security.log", max_bytes=2000, backups=2)
    clf = ClfLog(tmp_path / "access.log", max_bytes=2000, backups=2)
    try:
        for n in range(200):
            audit.event("auth-failed", outcome="denied", client="127.0.0.1", path=f"/api/v1/me/{n}")
            clf.http("127.0.0.1", "alice", "GET", f"/api/v1/jobs/{n}", "1.1", 200, 10)
    finally:
        audit.close()
        clf.close()
    for name in ("security.log", "access.log"):
        files = sorted(tmp_path.glob(f"{name}*"))
        assert [f.name for f in files] == [name, f"{name}.1", f"{name}.2"]
        assert all(f.stat().st_size <= 2000 for f in files)


def test_audit_values_are_cut_to_printable_text(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "security.log")
    try:
        audit.event("x", actor="evil\n{\"event\":\"forged\"}\x1b[2J", reason="y" * 1000)
    finally:
        audit.close()
    lines = (tmp_path / "security.log").read_text().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "x" and "\n" not in event["actor"] and "\x1b" not in event["actor"]
    assert len(event["reason"]) == 300


@given(st.text(max_size=260))
def test_a_clf_field_is_printable_ascii_without_spaces_or_quotes_whatever_it_was(value: str) -> None:
    """The fast path (a field already safe goes as it is) gives what the substitution gives."""
    field = clf_field(value)
    expected = re.sub(r'[^\x21\x23-\x7e]', "_", value[:200]) if value else "-"
    assert field == expected
    assert field.isascii() and field.isprintable() and " " not in field and '"' not in field


def test_clf_lines_are_on_disk_whole_and_in_order_when_written(tmp_path: Path) -> None:
    """Each line is in the file when ``line`` returns (no buffer to flush), a field with a space,
    a quote or a control character cannot split or forge one, and a non-ASCII user stays one
    field; the size kept for rotation counts bytes."""
    clf = ClfLog(tmp_path / "access.log")
    path = tmp_path / "access.log"
    try:
        clf.mqtt("RECV", "dev-1", "cloudimaging/devices/dev-1/up", "job-status#7", "ok", 120)
        assert path.read_text().endswith('"MQTT-RECV cloudimaging/devices/dev-1/up job-status#7" 200 120\n')
        clf.http("127.0.0.1", 'ev"il \n x', "GET", "/a b", "1.1", 404, None)
        clf.http("127.0.0.1", "zoë", "GET", "/é", "1.1", 200, 5)
        lines = path.read_text().splitlines()
        assert len(lines) == 3
        assert lines[1].startswith("127.0.0.1 - ev_il___x [") and lines[1].endswith('"GET /a_b HTTP/1.1" 404 -')
        assert lines[2].startswith("127.0.0.1 - zo_ [") and '"GET /_ HTTP/1.1" 200 5' in lines[2]
        assert clf._size == path.stat().st_size
    finally:
        clf.close()
