"""Every socket that carries small messages has TCP_NODELAY: the service's HTTPS connections, the
embedded broker's connections, and the paho clients of the service and of the Manager. Without
it, Nagle's algorithm holds a small write back until the peer's delayed ACK (~40 ms a hop)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.stack import running_stack


def _nodelay(sock: object) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))  # type: ignore[attr-defined]


async def test_small_message_sockets_have_no_nagle_delay(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        manager = await stack.add_manager("quick")
        assert (await stack.http.get("/healthz")).status_code == 200  # a kept-alive HTTPS connection

        https = stack.service._server
        assert https is not None
        accepted = [a.sock for a in https.listener._admitted if a.open]
        assert accepted, "the HTTPS listener holds no connection"
        assert all(_nodelay(s) for s in accepted)

        mqtt_listener = stack.broker.broker._server
        assert mqtt_listener is not None
        brokered = [a.sock for a in mqtt_listener._admitted if a.open]
        assert len(brokered) >= 2, "the broker should hold the service's and the Manager's connections"
        assert all(_nodelay(s) for s in brokered)

        service_client = stack.service.mqtt.client.socket()
        assert service_client is not None and _nodelay(service_client)
        manager_client = manager._session.client.socket()
        assert manager_client is not None and _nodelay(manager_client)
