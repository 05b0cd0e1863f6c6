"""The local cluster's HTTPS port is held from its start until HAProxy listens there
(cloud_service.cluster.hold_port): while held no other socket can bind it, yet HAProxy, with
the cluster's own configuration, binds it beside the held socket and takes the connections."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cloud_service.cluster import find_tool, free_port, haproxy_config, hold_port
from tests.support.cluster import _missing

HOST = "127.0.0.1"


def test_a_held_port_refuses_other_binds_and_is_free_again_once_released() -> None:
    port = free_port(HOST)
    held = hold_port(HOST, port)
    try:
        for reuse in (False, True):  # neither a plain socket nor one with SO_REUSEADDR takes it
            with socket.socket() as other:
                if reuse:
                    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                with pytest.raises(OSError):
                    other.bind((HOST, port))
        assert free_port(HOST, port) != port  # the cluster's own check sees it taken
    finally:
        held.close()
    with socket.socket() as other:
        other.bind((HOST, port))


def test_haproxy_listens_on_the_held_port_and_the_held_socket_takes_no_connection(tmp_path: Path) -> None:
    binary = find_tool("haproxy", "/usr/sbin/haproxy")
    if binary is None:
        _missing("haproxy is needed (apt-get install haproxy)")
    assert binary is not None
    port, stats = free_port(HOST), free_port(HOST)
    held = hold_port(HOST, port)
    backend = socket.create_server((HOST, 0))  # what HAProxy passes connections to
    conf = tmp_path / "haproxy.cfg"
    config = haproxy_config(HOST, port, stats, [("r1", HOST, backend.getsockname()[1])], tmp_path / "ca.pem",
                            "/healthz")
    # The cluster's configuration less its TLS health checks: the backend here is a bare socket.
    conf.write_text(re.sub(r"(?m)^    default-server .*$", "    default-server", config))
    proc = subprocess.Popen([binary, "-db", "-f", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            try:
                client = socket.create_connection((HOST, port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "HAProxy did not listen on the held port"
                time.sleep(0.05)
        with client:
            backend.settimeout(5)
            accepted, _ = backend.accept()  # the connection went through HAProxy, not to the held socket
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
    finally:
        held.close()
        backend.close()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
