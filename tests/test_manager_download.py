"""Document download against a real HTTPS server on 127.0.0.1 (certificate from broker.pki)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.pki import Pki, ensure_pki
from manager.download import CHUNK, DownloadError, download


class DocServer:
    """A tiny HTTPS object store: GET /{name} serves bytes; names can be made to fail.

    ``expired``: names answered with 403; ``gone``: 410; ``corrupt[name]``: how many
    responses still get a flipped byte. ``hits`` lists every path requested.
    """

    def __init__(self, pki: Pki) -> None:
        self.files: dict[str, bytes] = {}
        self.expired: set[str] = set()
        self.gone: set[str] = set()
        self.corrupt: dict[str, int] = {}
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?")[0]
                server.hits.append(name)
                if name in server.expired or name in server.gone:
                    self.send_response(403 if name in server.expired else 410)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if server.corrupt.get(name, 0) > 0:
                    server.corrupt[name] -= 1
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = pki.server_context().wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> DocServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def put(self, name: str, data: bytes) -> tuple[str, int, str]:
        """Store ``data``; return (url, size, sha256) as a presigned access would."""
        self.files[name] = data
        return self.url(name), len(data), hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def docs(pki: Pki) -> Iterator[DocServer]:
    server = DocServer(pki).start()
    yield server
    server.stop()


def _ctx(pki: Pki) -> ssl.SSLContext:
    return pki.client_context()


def test_download_streams_and_verifies(docs: DocServer, pki: Pki, tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)  # several chunks, not a multiple of one
    url, size, sha = docs.put("doc1", data)
    dest = tmp_path / "doc1"
    download(url, dest, size=size, sha256=sha, verify=_ctx(pki), timeout=5)
    assert dest.read_bytes() == data
    assert list(tmp_path.iterdir()) == [dest]  # no .part left


def test_sha256_mismatch_leaves_nothing(docs: DocServer, pki: Pki, tmp_path: Path) -> None:
    url, size, sha = docs.put("doc", b"hello world")
    docs.corrupt["doc"] = 1
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "doc", size=size, sha256=sha, verify=_ctx(pki), timeout=5)
    assert err.value.kind == "mismatch"
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch(docs: DocServer, pki: Pki, tmp_path: Path) -> None:
    url, size, sha = docs.put("doc", b"0123456789")
    for announced in (size - 1, size + 1):
        with pytest.raises(DownloadError) as err:
            download(url, tmp_path / "doc", size=announced, sha256=sha, verify=_ctx(pki), timeout=5)
        assert err.value.kind == "mismatch"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["expired", "gone"])
def test_expired_url(docs: DocServer, pki: Pki, tmp_path: Path, which: str) -> None:
    url, size, sha = docs.put("doc", b"data")
    getattr(docs, which).add("doc")
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "doc", size=size, sha256=sha, verify=_ctx(pki), timeout=5)
    assert err.value.kind == "expired"


def test_other_http_error_and_untrusted_cert(docs: DocServer, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        download(docs.url("missing"), tmp_path / "x", size=1, sha256="0" * 64, verify=_ctx(pki), timeout=5)
    assert err.value.kind == "http"
    url, size, sha = docs.put("doc", b"data")
    with pytest.raises(DownloadError) as err:  # system CAs do not trust the private CA
        download(url, tmp_path / "doc", size=size, sha256=sha, verify=True, timeout=5)
    assert err.value.kind == "network"


def test_plain_http_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        download("http://127.0.0.1:9/doc", tmp_path / "doc", size=1, sha256="0" * 64)
    assert err.value.kind == "refused"


def test_abort_stops_download(docs: DocServer, pki: Pki, tmp_path: Path) -> None:
    url, size, sha = docs.put("doc", b"x" * (4 * CHUNK))
    abort = threading.Event()
    abort.set()
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "doc", size=size, sha256=sha, verify=_ctx(pki), timeout=5, abort=abort)
    assert err.value.kind == "canceled"
    assert list(tmp_path.iterdir()) == []


def test_signatures_stay_out_of_the_log(
    docs: DocServer, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, size, sha = docs.put("doc", b"data")
    with caplog.at_level(logging.INFO, logger="httpx"):
        download(url + "?exp=1&sig=SECRET", tmp_path / "doc", size=size, sha256=sha, verify=_ctx(pki), timeout=5)
    assert "HTTP Request" in caplog.text and "/doc" in caplog.text
    assert "SECRET" not in caplog.text
