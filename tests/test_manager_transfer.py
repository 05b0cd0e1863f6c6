"""Document download against a real HTTPS server on 127.0.0.1 (certificate from broker.pki)."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path

import pytest

from broker.pki import Pki
from manager import transfer
from manager.transfer import CHUNK, DOWNLOAD_BUFFER, DownloadError, download
from tests.support.docserver import DocServer


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
    with caplog.at_level(logging.INFO):
        download(url + "?exp=1&sig=SECRET", tmp_path / "doc", size=size, sha256=sha, verify=_ctx(pki), timeout=5)
    assert "HTTP Request" in caplog.text and "/doc" in caplog.text
    assert "SECRET" not in caplog.text


def test_a_large_download_is_hashed_on_the_way_and_renamed_into_place(
        docs: DocServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several read buffers, not a multiple of one: the bytes land in ``.part`` in one pass and
    the verified file is renamed to its name (never copied); a wrong digest renames nothing."""
    data = os.urandom(2 * DOWNLOAD_BUFFER + 12345)
    url, size, sha = docs.put("big", data)
    dest = tmp_path / "big"
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        assert Path(src).stat().st_size == size and not Path(dst).exists()  # complete, and not there yet
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(transfer.os, "replace", replace)
    download(url, dest, size=size, sha256=sha, verify=_ctx(pki), timeout=10)
    assert renames == [(tmp_path / "big.part", dest)]
    assert dest.read_bytes() == data and sorted(tmp_path.iterdir()) == [dest]

    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "again", size=size, sha256="0" * 64, verify=_ctx(pki), timeout=10)
    assert err.value.kind == "mismatch" and len(renames) == 1
    assert sorted(tmp_path.iterdir()) == [dest]


def test_the_connection_is_kept_for_the_next_download(pki: Pki, tmp_path: Path) -> None:
    """Downloads from one server share a connection; one the server closed meanwhile is
    replaced at once; one whose download failed is not kept."""
    server = DocServer(pki, keep_alive=True, idle_timeout=0.3).start()
    ctx = _ctx(pki)  # the Manager's one context: connections are kept per server and context
    kept = transfer.IdleConnections()
    try:
        url, size, sha = server.put("doc", b"abc" * 1000)
        for n in range(3):
            download(url, tmp_path / f"d{n}", size=size, sha256=sha, verify=ctx, timeout=5, connections=kept)
        assert server.connections == 1 and server.hits == ["doc"] * 3

        time.sleep(0.6)  # the server closes the idle connection; the Manager still holds it
        download(url, tmp_path / "after", size=size, sha256=sha, verify=ctx, timeout=5, connections=kept)
        assert server.connections == 2 and (tmp_path / "after").read_bytes() == b"abc" * 1000

        with pytest.raises(DownloadError):
            download(url, tmp_path / "bad", size=size, sha256="0" * 64, verify=ctx, timeout=5, connections=kept)
        download(url, tmp_path / "next", size=size, sha256=sha, verify=ctx, timeout=5, connections=kept)
        assert server.connections == 3  # the failed download's connection was closed, not kept

        kept.clear()  # as the Manager does when it stops
        download(url, tmp_path / "cleared", size=size, sha256=sha, verify=ctx, timeout=5, connections=kept)
        for n in range(2):  # with nothing to keep them in, each download has its own connection
            download(url, tmp_path / f"own{n}", size=size, sha256=sha, verify=ctx, timeout=5)
        assert server.connections == 6
    finally:
        kept.clear()
        server.stop()
