"""Idle and half-open connections, as a careless client or a slowloris attacker makes them.

Blocking sockets with timeouts, so every call is bounded; the caller closes what it opened
(``close_all``), also when an assertion fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from pathlib import Path


def idle_tcp(port: int, count: int, host: str = "127.0.0.1") -> list[socket.socket]:
    """Up to ``count`` TCP connections that never send a byte (not even a TLS ClientHello).

    Stops early when a connect times out: the server no longer accepts and its backlog is full.
    """
    opened = []
    for _ in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=2)
        except TimeoutError:
            break
        opened.append(sock)
    return opened


def half_open_tls(port: int, count: int, ca: Path, first: bytes = b"", host: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` TLS connections that finish the handshake, send ``first`` (say, part of a
    request head) and then nothing. A connection the server refuses at once is skipped."""
    context = ssl.create_default_context(cafile=str(ca))
    opened: list[socket.socket] = []
    for _ in range(count):
        try:
            raw = socket.create_connection((host, port), timeout=2)
        except TimeoutError:
            break
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        if first:
            with contextlib.suppress(OSError):
                tls.sendall(first)
        opened.append(tls)
    return opened


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """True once the peer closed (EOF or reset) before ``deadline`` (time.monotonic())."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(min(remaining, 1.0))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except ssl.SSLWantReadError:
            continue
        except (OSError, ssl.SSLError):
            return True
        if not data:
            return True


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` holds (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def refused_connect(port: int, ca: Path, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """The broker's answer to a CONNECT with a wrong password: its CONNACK bytes (b"" if none)."""
    client_id = b"flood-probe"
    user, password = b"nobody", b"wrong"
    variable = b"\x00\x04MQTT\x04\xc2\x00\x1e"  # level 4, username+password+clean session, keepalive 30
    payload = b"".join(len(x).to_bytes(2, "big") + x for x in (client_id, user, password))
    body = variable + payload
    packet = bytes((0x10, len(body))) + body
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.settimeout(timeout)
        tls.sendall(packet)
        try:
            return tls.recv(4)
        except (OSError, ssl.SSLError):
            return b""
