"""The client over real sockets: TLS verified against a CA file, a streamed upload, and an
events stream that ends early and must be resumed. A tiny HTTPS server on 127.0.0.1:0
plays the API; the real service's end-to-end tests live elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.pki import ensure_pki
from client.api import CloudImagingClient
from client.cli import main
from client.errors import ConnectionFailed
from tests.support.fakeapi import TOKEN, job_dict, service_dict


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """The project's own CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    pki = ensure_pki(directory, ("127.0.0.1",))
    return pki.ca_cert, pki.server_cert, pki.server_key


@dataclass
class MiniApi:
    """State shared with the request handler."""

    url: str = ""
    job: dict[str, Any] = field(default_factory=lambda: job_dict(1))
    upload: bytes = b""
    upload_headers: dict[str, str] = field(default_factory=dict)
    events_connections: int = 0


def _handler(api: MiniApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            self._json(401, {"error": {"code": "unauthorized", "message": "invalid or revoked token"}})
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.startswith("/api/v1/services"):
                self._json(200, {"services": [service_dict()]})
            elif self.path == "/api/v1/jobs/1/events":
                self._events()
            elif self.path == "/api/v1/jobs/1":
                self._json(200, api.job)
            else:
                self._json(404, {"error": {"code": "not-found", "message": "Not Found"}})

        def _event(self) -> None:
            self.wfile.write(b"event: job\ndata: " + json.dumps(api.job).encode() + b"\n\n")
            self.wfile.flush()

        def _events(self) -> None:
            api.events_connections += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._event()
            if api.events_connections == 1:
                return  # the stream ends before the job does: the client must come back
            self.wfile.write(b": keepalive\n\n")
            for state, reasons, impressions in [
                ("processing", ["job-printing"], 1),
                ("completed", ["job-completed-successfully"], 1),
            ]:
                api.job.update(state=state, state_reasons=reasons, impressions_completed=impressions)
                api.job["version"] += 1
                self._event()

        def do_POST(self) -> None:
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/v1/jobs":
                api.job["ticket"] = body["ticket"]
                self._json(201, dict(api.job, upload_url=f"{api.url}/objects/jobs/1/1?sig=ok"))
            elif self.path == "/api/v1/jobs/1/close":
                self._json(200, api.job)
            else:
                self._json(404, {"error": {"code": "not-found", "message": "Not Found"}})

        def do_PUT(self) -> None:
            api.upload_headers = dict(self.headers.items())
            length = int(self.headers["Content-Length"])
            api.upload = self.rfile.read(length)
            self._json(200, {"size": len(api.upload), "sha256": hashlib.sha256(api.upload).hexdigest()})

    return Handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[MiniApi, Path]]:
    ca, cert, key = make_pki(tmp_path)
    api = MiniApi()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    api.url = f"https://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield api, ca
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_tls_is_verified_against_the_ca_file(server: tuple[MiniApi, Path]) -> None:
    api, ca = server
    with CloudImagingClient(api.url, TOKEN, ca, timeout=5) as client:
        assert [s.name for s in client.services()] == ["office"]
    with CloudImagingClient(api.url, TOKEN, timeout=5) as client, pytest.raises(ConnectionFailed) as info:
        client.services()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_cli_print_and_wait_over_real_sockets(
    server: tuple[MiniApi, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, ca = server
    monkeypatch.chdir(tmp_path)
    data = b"%PDF-1.7\n" + b"x" * 200_000
    (tmp_path / "big.pdf").write_bytes(data)
    argv = ["--url", api.url, "--token", TOKEN, "--ca", str(ca), "print", "big.pdf", "-o", "sides=one-sided"]
    code = main([*argv, "--wait"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines() == [
        "request id is office-1 (1 file(s))",
        "office-1: pending (job-queued), 0 impression(s)",
        "office-1: processing (job-printing), 1 impression(s)",
        "office-1: completed (job-completed-successfully), 1 impression(s)",
    ]
    assert api.upload == data
    assert api.upload_headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in api.upload_headers
    assert api.upload_headers["Content-Type"] == "application/pdf"
    assert api.job["ticket"] == {"sides": "one-sided"}
    assert api.events_connections == 2
