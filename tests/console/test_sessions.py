"""Console sign-in over plain HTTPS (no browser): passwords, session cookies, CSRF, expiry,
sign-out, the login's rate limit and audit, the page's headers, and that a session is exactly
as powerful as a token of the same user."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest

from client.cli import main as cli
from cloud_service.http.console import FAILURES_PER_USER
from cloud_service.sessions import IDLE_TTL, SESSION_TTL, find_session
from tests.support.live import LiveStack

PASSWORD = "a long enough secret"


def _http(live: LiveStack) -> httpx.Client:
    return httpx.Client(base_url=live.url, verify=str(live.ca), timeout=20.0, follow_redirects=False)


def _user(live: LiveStack, name: str, role: str = "user", password: str | None = PASSWORD) -> None:
    async def make() -> None:
        made = await live.stack.http.post("/api/v1/users", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        if password is not None:
            done = await live.stack.http.put(f"/api/v1/users/{name}/password", json={"password": password})
            assert done.status_code == 200, done.text

    live.call(make())


def _sign_in(http: httpx.Client, user: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/api/v1/session", json={"user": user, "password": password})


def _audit(live: LiveStack) -> list[dict]:
    path = live.stack.tmp / "service" / "logs" / "security.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_session_cookie_csrf_and_sign_out(live: LiveStack) -> None:
    _user(live, "sam")
    with _http(live) as http:
        assert http.get("/printers").status_code == 303  # no session: to the sign-in
        assert http.get("/printers").headers["location"] == "/login?next=%2Fprinters"
        signed = _sign_in(http, "sam")
        assert signed.status_code == 200, signed.text
        cookie = signed.headers["set-cookie"]
        for flag in ("ci_session=", "HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            assert flag.lower() in cookie.lower(), cookie
        csrf = signed.json()["csrf"]
        assert signed.json()["user"] == "sam" and len(csrf) >= 32
        assert PASSWORD not in (live.stack.tmp / "service" / "logs" / "security.log").read_text()

        # The cookie is the user, for reads; a change also needs the CSRF token and our origin.
        assert http.get("/api/v1/me").json()["name"] == "sam"
        body = {"service": "office"}
        assert http.put("/api/v1/me/default/print", json=body).status_code == 403
        assert http.put("/api/v1/me/default/print", json=body, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
        assert http.put("/api/v1/me/default/print", json=body,
                        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}).status_code == 403
        assert http.put("/api/v1/me/default/print", json=body,
                        headers={"X-CSRF-Token": csrf, "Origin": live.url}).status_code == 200
        assert http.get("/api/v1/session").json()["csrf"] == csrf

        # A page is served with a CSP that forbids inline script and foreign origins.
        page = http.get("/printers")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script" in page.text and "<script>" not in page.text  # module file, nothing inline
        script = http.get("/console/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert http.get("/console/..%2Fsessions.py").status_code == 404

        # Sign-out needs the token too, then the session is dead even if the cookie is replayed.
        assert http.delete("/api/v1/session").status_code == 403
        assert http.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        replay = httpx.Client(base_url=live.url, verify=str(live.ca), cookies={"ci_session": cookie.split(";")[0]
                                                                                .split("=", 1)[1]})
        with replay:
            assert replay.get("/api/v1/me").status_code == 401
    events = [e for e in _audit(live) if e.get("actor") == "sam"]
    assert {"login", "logout", "csrf-refused"} <= {e["event"] for e in events}


def test_token_needs_no_csrf_and_a_session_gets_no_more_than_a_token(live: LiveStack) -> None:
    _user(live, "tia")
    token = live.token_for("tia")
    with _http(live) as http:
        # A script with a token: no CSRF token, no cookie.
        made = http.put("/api/v1/me/default/print", json={"service": "office"},
                        headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 200, made.text
        _sign_in(http, "tia")
        csrf = http.get("/api/v1/session").json()["csrf"]
        # What the user may not do with a token, the page may not do either.
        for method, path in (("GET", "/api/v1/users"), ("GET", "/api/v1/security-log"), ("GET", "/api/v1/retention"),
                             ("GET", "/api/v1/enrollment-info"), ("PUT", "/api/v1/users/admin/password")):
            kwargs = {"json": {"password": "x" * 20}} if method == "PUT" else {}
            by_cookie = http.request(method, path, headers={"X-CSRF-Token": csrf}, **kwargs)
            by_token = httpx.request(method, live.url + path, verify=str(live.ca),
                                     headers={"Authorization": f"Bearer {token}"}, **kwargs)
            assert by_cookie.status_code == by_token.status_code == 403, (path, by_cookie.text)


def test_sign_in_is_rate_limited_and_audited(live: LiveStack) -> None:
    _user(live, "uma")
    with _http(live) as http:
        for _ in range(FAILURES_PER_USER):
            assert _sign_in(http, "uma", "wrong password!").status_code == 401
        limited = _sign_in(http, "uma")  # even the right password waits now
        assert limited.status_code == 429 and "try again" in limited.json()["error"]["message"]
        assert _sign_in(http, "nobody-here", "whatever12").status_code == 401  # unknown user: same answer
        assert _sign_in(http, "vic-no-password", "whatever12").status_code == 401
    outcomes = [(e["outcome"], e.get("reason")) for e in _audit(live) if e["event"] == "login" and e["actor"] == "uma"]
    assert outcomes.count(("denied", "unknown user or wrong password")) == FAILURES_PER_USER
    assert ("denied", "rate-limited") in outcomes


def test_passwords_set_by_cli_and_self_end_sessions(live: LiveStack, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _user(live, "wes", password=None)
    with _http(live) as http:
        assert _sign_in(http, "wes", "anything-long").status_code == 401  # no password: no sign-in
        monkeypatch.setattr("sys.stdin", io.StringIO("first password!\n"))
        code = cli(["users", "passwd", "wes", "--password-stdin", "--url", live.url, "--token", live.token,
                    "--ca", str(live.ca)])
        assert code == 0 and "password set for wes" in capsys.readouterr().out
        assert _sign_in(http, "wes", "first password!").status_code == 200
        csrf = http.get("/api/v1/session").json()["csrf"]
        short = http.put("/api/v1/users/wes/password", json={"password": "short"}, headers={"X-CSRF-Token": csrf})
        assert short.status_code == 422
        wrong = http.put("/api/v1/users/wes/password", json={"password": "second password!",
                                                              "current_password": "not it at all"},
                         headers={"X-CSRF-Token": csrf})
        assert wrong.status_code == 403
        changed = http.put("/api/v1/users/wes/password", json={"password": "second password!",
                                                                "current_password": "first password!"},
                           headers={"X-CSRF-Token": csrf})
        assert changed.status_code == 200 and changed.json()["sessions_ended"] == 1
        assert http.get("/api/v1/me").status_code == 401  # the change ended this session too
        assert _sign_in(http, "wes", "first password!").status_code == 401
        assert _sign_in(http, "wes", "second password!").status_code == 200
        # Disabling the user ends what their session can do at once.
        assert live.call(live.stack.http.patch("/api/v1/users/wes", json={"disabled": True})).status_code == 200
        assert http.get("/api/v1/me").status_code == 401
        assert _sign_in(http, "wes", "second password!").status_code == 401


def test_sessions_expire(live: LiveStack) -> None:
    _user(live, "xia")
    with _http(live) as http:
        session_id = _sign_in(http, "xia").cookies["ci_session"]
    store = live.stack.service.store
    now = time.time()
    assert live.call(find_session(store, session_id, now)) is not None
    assert live.call(find_session(store, session_id, now + IDLE_TTL + 1)) is None  # idle too long
    assert live.call(find_session(store, session_id, now + SESSION_TTL + 1)) is None  # too old
    assert live.call(find_session(store, "not-a-session", now)) is None


def test_admin_reads_security_log_and_retention(live: LiveStack, tmp_path: Path) -> None:
    with _http(live) as http:
        headers = {"Authorization": f"Bearer {live.token}"}
        events = http.get("/api/v1/security-log?limit=5", headers=headers).json()["events"]
        assert 0 < len(events) <= 5 and all("event" in e for e in events)
        retention = http.get("/api/v1/retention", headers=headers).json()
        assert retention["document_retention"] in ("discard-after-processing", "after-duration", "keep")
        info = http.get("/api/v1/enrollment-info", headers=headers).json()
        assert info["ca_pem"].startswith("-----BEGIN CERTIFICATE-----") and info["ca_sha256"].count(":") == 31
