"""The device's MQTT session: one persistent, authenticated TLS connection to the broker.

paho-mqtt 2.x runs its own network thread (``loop_start``), reconnects with back-off (1 to
30 s) and calls our callbacks on that thread. The callbacks never block: they hand the event
to the Manager's asyncio loop and return. Choices, and why:

- client id = device id, clean_session=False: the broker keeps the subscription and queues
  QoS 1 messages while the device is away (when the broker can; the protocol does not
  depend on it, see Hello/Sync).
- Always re-subscribe on connect, whatever ``session_present`` says (amqtt reports a session
  it did not keep), and announce the device only after the SUBACK, so the Sync answering
  Hello cannot arrive before the subscription exists.
- Last Will ``Presence(offline)`` on the presence topic, QoS 1, never retained: amqtt hands
  retained messages to any client without an ACL check. Each connection gets a fresh random
  ``session`` id, in its Will and in its ``online`` presence, so the service can ignore the
  late Will of an earlier connection.
- Nothing is published while disconnected: paho would queue it and replay it late; the
  runner resends what matters after reconnecting instead.
- A device enrolled with a certificate stops reconnecting once the broker says that
  certificate is revoked (Mosquitto: the TLS alert ``certificate_revoked``; the embedded
  broker: CONNACK "bad user name or password", which a certificate login gets for nothing
  else): retrying cannot succeed, and the owner must re-enroll. One log line says so, and
  ``on_refused`` tells the Manager (``cloudimaging manager`` then exits with its own code).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from manager.config import ManagerConfig
from schemas import topics
from schemas.messages import Presence, encode

log = logging.getLogger("cloudimaging.manager.session")

#: paho's own memory bound for outgoing messages (the default, 0, is unlimited).
MAX_QUEUED = 1000

#: paho 2's reason code for MQTT 3.1.1 CONNACK 4, "bad user name or password".
BAD_CREDENTIALS = 134

#: OpenSSL's name for the TLS alert a server sends when the client's certificate is on its CRL.
REVOKED_ALERT = "SSLV3_ALERT_CERTIFICATE_REVOKED"


def _alert_watching_socket(on_revoked: Callable[[], None]) -> type[ssl.SSLSocket]:
    """An SSLSocket class that reports the ``certificate_revoked`` alert before re-raising it.

    paho swallows transport errors (it logs them and reconnects), so the reason a TLS 1.3
    server gives after the handshake, on the first read, is otherwise lost to the Manager.
    """

    def check(exc: ssl.SSLError) -> None:
        if exc.reason == REVOKED_ALERT:
            on_revoked()

    class AlertWatchingSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except ssl.SSLError as exc:
                check(exc)
                raise

        def read(self, len: int = 1024, buffer: Any = None) -> Any:
            try:
                return super().read(len, buffer)
            except ssl.SSLError as exc:
                check(exc)
                raise

    return AlertWatchingSocket


class Session:
    """Wraps a paho client; the three callbacks are called on paho's network thread."""

    def __init__(
        self,
        config: ManagerConfig,
        *,
        on_ready: Callable[[str], None],
        on_lost: Callable[[], None],
        on_message: Callable[[bytes], None],
        on_refused: Callable[[str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_message = on_message
        self._on_refused = on_refused
        self._down = topics.down(config.device_id)
        self._subscribe_mid: int | None = None
        self._started = False
        #: Why the session gave up for good (the certificate was revoked); None while it retries.
        self.refusal: str | None = None
        #: Connection attempts so far (each reconnect counts).
        self.attempts = 0
        self._revoked_alert = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.device_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=True,
        )
        client.enable_logger(logging.getLogger("cloudimaging.manager.paho"))
        client.username_pw_set(config.username, config.read_password())
        if config.broker_tls:
            context = ssl_context or config.ssl_context()
            if config.cert_file is not None:
                context.sslsocket_class = _alert_watching_socket(self._saw_revoked_alert)
            client.tls_set_context(context)
        else:
            log.warning("broker_url %s is not TLS: credentials and jobs travel in clear", config.broker_url)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(MAX_QUEUED)
        self.session_id = ""
        client.on_pre_connect = self._handle_pre_connect
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        self.client = client

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        """Connect in the background; paho retries until it succeeds or stop() is called."""
        log.info("connecting to %s as %s", self.config.broker_url, self.config.device_id)
        self.client.connect_async(self.config.broker_host, self.config.broker_port, keepalive=self.config.keepalive)
        self.client.loop_start()
        self._started = True

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1, never retained; False (and nothing queued) when offline."""
        if not self.client.is_connected():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=False)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self, goodbye: Sequence[tuple[str, bytes]] = (), timeout: float = 5.0) -> None:
        """Publish ``goodbye`` (waiting up to ``timeout`` for it), disconnect, end the thread."""
        if not self._started:
            return
        self._started = False
        if self.client.is_connected():
            infos = [self.client.publish(topic, payload, qos=1, retain=False) for topic, payload in goodbye]
            for info in infos:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    break
                if not info.is_published():  # wait_for_publish returns silently on timeout
                    log.warning("goodbye message not acknowledged by the broker within %.1f s", timeout)
                    break
        self.client.disconnect()
        self.client.loop_stop()

    def drop_connection(self) -> None:
        """Cut the TCP connection without DISCONNECT (fault injection: the Will fires, paho
        reconnects). For tests."""
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _handle_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """Before every (re)connect: a new session id, and the Will that carries it."""
        self.attempts += 1
        self.session_id = uuid.uuid4().hex
        will = Presence(state="offline", session=self.session_id)
        client.will_set(topics.presence(self.config.device_id), encode(will), qos=1, retain=False)

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            if self.config.cert_file is not None and reason_code.value == BAD_CREDENTIALS:
                self._give_up(client)
                return
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to %s (session present: %s)", self.config.broker_url, flags.session_present)
        sock = client.socket()  # small messages: no Nagle delay (~40 ms) against delayed ACKs
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        result, mid = client.subscribe(self._down, qos=1)
        self._subscribe_mid = mid
        if result != mqtt.MQTT_ERR_SUCCESS:
            log.error("subscribe to %s failed: %s", self._down, mqtt.error_string(result))

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused the subscription to %s: %s", self._down, reason_codes)
        self._on_ready(self.session_id)

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self._revoked_alert:
            self._give_up(client)
        elif self._started and self.refusal is None:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)
        self._on_lost()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A failed TCP or TLS connect (TLS 1.2 servers send the revoked alert in the handshake)."""
        if self._revoked_alert:
            self._give_up(client)

    def _saw_revoked_alert(self) -> None:
        self._revoked_alert = True

    def _give_up(self, client: mqtt.Client) -> None:
        """Stop reconnecting for good: the broker refused this device's revoked certificate."""
        if self.refusal is not None:
            return
        self.refusal = (f"the broker refused the certificate of device {self.config.device_id}: it was revoked. "
                        "Not reconnecting. To bring the device back, its owner gets a new enrollment code "
                        "and runs `cloudimaging manager enroll CODE --config FILE` (see docs/manager.md)")
        log.error("%s", self.refusal)
        client.disconnect()
        client.loop_stop()  # on paho's own thread: no join, its loop ends instead of retrying
        if self._on_refused is not None:
            self._on_refused(self.refusal)

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self._down:
            log.warning("message on unexpected topic %s ignored", message.topic)
            return
        self._on_message(message.payload)
