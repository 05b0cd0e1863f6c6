"""The client over real sockets and TLS, against the real service: the certificate is
verified against the CA file (and only then trusted), and the CLI's print --wait streams a
large upload and follows the job to its end."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.pki import ensure_pki
from client.api import CloudImagingClient
from client.cli import main
from client.errors import ConnectionFailed
from tests.support.live import LiveStack

pytestmark = pytest.mark.timeout(120)


def test_tls_is_verified_against_the_ca_file(live: LiveStack, tmp_path: Path) -> None:
    with CloudImagingClient(live.url, live.token, live.ca, timeout=5) as client:
        assert "office" in [s.name for s in client.services()]
    with CloudImagingClient(live.url, live.token, timeout=5) as client, pytest.raises(ConnectionFailed) as info:
        client.services()  # the public CAs do not know the service's private CA
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    other_ca = ensure_pki(tmp_path / "other", ("127.0.0.1",)).ca_cert
    with CloudImagingClient(live.url, live.token, other_ca, timeout=5) as client, \
            pytest.raises(ConnectionFailed) as info:
        client.services()  # nor does another CA, even one for the same host
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_cli_print_and_wait_over_real_sockets(
    live: LiveStack, user_token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    data = b"%PDF-1.7\n" + b"x" * 200_000
    (tmp_path / "big.pdf").write_bytes(data)
    argv = ["--url", live.url, "--token", user_token, "--ca", str(live.ca), "print", "big.pdf", "-p", "office",
            "-o", "sides=one-sided"]
    code = main([*argv, "--wait"])
    out, err = capsys.readouterr()
    assert code == 0, err
    with live.client(token=user_token) as client:
        [job] = client.jobs(all=True)
    rows = out.splitlines()
    assert rows[0] == f"request id is office-{job.id} (1 file(s)) on printer office"
    assert rows[-1] == f"office-{job.id}: completed (job-completed-successfully), 1 impression(s)"
    assert job.ticket == {"sides": "one-sided"}
    assert job.documents[0].size == len(data)
