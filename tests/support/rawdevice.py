"""A hand-driven device for protocol tests: a real paho session that sends exactly the bytes a
test wants (including broken ones) and collects what the service answers."""

from __future__ import annotations

import queue
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schemas import topics
from schemas.messages import Message, ProtocolError, Reply, decode_down, encode


class RawDevice:
    def __init__(self, device_id: str, password: str, broker_url: str, ca: Path) -> None:
        self.device_id = device_id
        parts = urlsplit(broker_url)
        self.inbox: queue.Queue = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True)
        self.client.username_pw_set(device_id, password)
        self.client.tls_set_context(ssl.create_default_context(cafile=str(ca)))
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(msg.payload)
        self._subscribed = queue.Queue()
        self.client.on_subscribe = lambda *_a: self._subscribed.put(True)
        self.client.connect(parts.hostname, parts.port, keepalive=10)
        self.client.loop_start()
        self.client.subscribe(topics.down(device_id), qos=1)
        self._subscribed.get(timeout=10)

    def send_raw(self, payload: bytes, topic: str | None = None) -> None:
        info = self.client.publish(topic or topics.up(self.device_id), payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def send(self, message: Message) -> None:
        self.send_raw(encode(message))

    def next(self, timeout: float = 10.0, re: str | None = None) -> Message:
        """The next message from the service (optionally: the reply to request ``re``)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message from the service within {timeout}s (re={re})")
            try:
                payload = self.inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            try:
                message = decode_down(payload)
            except ProtocolError as exc:
                raise AssertionError(f"service sent an undecodable message: {exc}") from None
            if re is None or getattr(message, "re", None) == re:
                return message

    def request(self, message: Message, timeout: float = 10.0) -> Reply:
        self.send(message)
        reply = self.next(timeout, re=message.id)
        assert isinstance(reply, Reply), reply
        return reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
