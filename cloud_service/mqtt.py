"""The Cloud Service's only MQTT client module (paho-mqtt 2.x): the broker session, in and
out, and the one-shot session take-over that disconnects a revoked device from Mosquitto.

paho runs its network loop in its own thread; received messages are handed to the asyncio
loop at once, one wake-up of the loop per burst (never blocking paho's callbacks, which would
delay PUBACKs and keepalives) and
queued per device (``DeviceInbox``): one device's messages are handled one at a time, in the
order they were sent, while the workers serve the devices with work in turn, so a device that
floods the service waits behind itself only, and only its own excess is dropped.

Several replicas share the device traffic through an MQTT 5 shared subscription
(``$share/<group>/ci/v1/dev/+/up``): the broker hands each message to one member of the group.
Each replica then needs its own client id (two connections with one id knock each other off),
unique by default. One device's messages may then be handled by different replicas at the
same time: docs/protocol.md ("Several replicas") says why the protocol does not depend on
their order. Without a group (the embedded amqtt broker speaks MQTT 3.1.1 only) the service
subscribes plainly, as one replica.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_service.clf import ClfLog
from cloud_service.devices import DeviceProtocol
from schemas import topics
from schemas.messages import MAX_MESSAGE_BYTES, Message, ProtocolError, encode

log = logging.getLogger("cloudimaging.mqtt")


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtts://host:port`` -> (host, port). Plain ``mqtt://`` is refused: TLS on every hop."""
    parts = urlsplit(url)
    if parts.scheme != "mqtts":
        raise ValueError(f"broker URL must start with mqtts:// (TLS is required), got {url!r}")
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    return parts.hostname, parts.port or 8883


def default_client_id(prefix: str = topics.SERVICE_USERNAME) -> str:
    """``cloud-service-<host>-<random>``: unique per process, readable in broker logs, and still
    starting with the service's username (the embedded broker's client-id rule)."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:24] or "host"
    return f"{prefix}-{host}-{secrets.token_hex(4)}"


def shared_filter(group: str, topic_filter: str) -> str:
    """``$share/<group>/<filter>`` (MQTT 5.0, 4.8.2); the group name may not hold / + #."""
    if not group or any(ch in group for ch in "/+#"):
        raise ValueError(f"invalid shared-subscription group {group!r}")
    return f"$share/{group}/{topic_filter}"


def service_subscriptions(group: str | None) -> list[str]:
    """The topic filters the service subscribes to: plain, or behind ``$share/<group>/``."""
    if group is None:
        return list(topics.SERVICE_SUBSCRIPTIONS)
    return [shared_filter(group, t) for t in topics.SERVICE_SUBSCRIPTIONS]


class MqttAdapter:
    """The service's broker session.

    ``shared_group`` None: MQTT 3.1.1 and plain subscriptions (one replica). Set: MQTT 5 and
    ``$share/<group>/...`` subscriptions, so each device message goes to one replica.

    Session: a generated client id (``client_id`` None) starts clean every time, since no later
    process will ever resume it. A configured, stable client id resumes its session, also after a
    restart of the process: MQTT 3.1.1 ``clean_session=False``; MQTT 5 no clean start and
    ``session_expiry`` seconds of session after a disconnect, so QoS 1 messages in flight to it
    (and, on Mosquitto, its share of what comes meanwhile) are delivered when it reconnects in
    time. Whatever is lost otherwise is recovered by the Manager (it resends a request without
    a reply and says ``hello`` again on reconnect).
    """

    def __init__(self, url: str, username: str, password: str, ca_file: Path | None, protocol: DeviceProtocol,
                 clf: ClfLog, client_id: str | None = None, keepalive: int = 30, workers: int = 4,
                 device_queue_limit: int = 256, shared_group: str | None = None,
                 session_expiry: int = 0) -> None:
        self.host, self.port = parse_broker_url(url)
        self.protocol = protocol
        self.clf = clf
        self.connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inbox = DeviceInbox(self._handle, workers=workers, limit=device_queue_limit)
        #: Messages paho received that the loop has not queued yet (see ``_hand_over``).
        self._arrived: list[tuple[str, str, bytes]] = []
        self._arrived_lock = threading.Lock()
        self._keepalive = keepalive
        stable = client_id is not None
        self.client_id = client_id if client_id is not None else default_client_id()
        self.subscriptions = service_subscriptions(shared_group)
        self.mqtt5 = shared_group is not None
        self._connect_properties: Properties | None = None
        self._clean_start: bool | int = True
        if self.mqtt5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
            self._connect_properties = Properties(PacketTypes.CONNECT)
            self._connect_properties.SessionExpiryInterval = session_expiry if stable else 0
            self._clean_start = not stable  # a stable id resumes its session, also after a restart
        else:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                      clean_session=not stable, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.client.tls_set_context(context)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.max_queued_messages_set(100_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    async def start(self, wait: float = 10.0) -> None:
        """Connect (retrying in the background if the broker is not up yet)."""
        self._loop = asyncio.get_running_loop()
        self.inbox.start()
        if self.mqtt5:
            self.client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=self._clean_start,
                                      properties=self._connect_properties)
        else:
            self.client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self.client.loop_start()
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
        except TimeoutError:
            log.warning("broker %s:%s not reachable yet; retrying in the background", self.host, self.port)

    async def stop(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        await self.inbox.stop()

    # -------------------------------------------------------------- paho thread

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason_code: object,
                    _properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the service's connection: %s", reason_code)
            return
        sock = client.socket()  # small messages: no Nagle delay (~40 ms) against delayed ACKs
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(t, 1) for t in self.subscriptions])
        log.info("connected to broker %s:%s as %s; subscribing to %s", self.host, self.port, self.client_id,
                 " ".join(self.subscriptions))
        if self._loop:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: list[object],
                      _properties: object) -> None:
        refused = [str(code) for code in reason_codes if getattr(code, "is_failure", False)]
        if refused:
            log.error("broker refused the service's subscriptions %s: %s", self.subscriptions, ", ".join(refused))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason_code: object,
                       _properties: object) -> None:
        log.warning("disconnected from broker: %s", reason_code)
        if self._loop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[1] == "down":
            log.warning("ignored message on unexpected topic %r", msg.topic[:200])
            return
        device_id, leaf = parsed
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._arrived_lock:
            self._arrived.append((device_id, leaf, bytes(msg.payload)))
            if len(self._arrived) > 1:
                return  # the wake-up scheduled for the first of this burst hands this one over too
        try:
            loop.call_soon_threadsafe(self._hand_over)
        except RuntimeError:  # the loop closed meanwhile: nobody will handle it
            with self._arrived_lock:
                self._arrived.clear()

    def _hand_over(self) -> None:
        """On the loop: queue every message that arrived since the wake-up was scheduled.

        One wake-up of the loop (a write to its self-pipe) per burst, not per message: paho
        reads a burst from the socket in one go, and each wake-up costs more than queueing."""
        with self._arrived_lock:
            arrived, self._arrived = self._arrived, []
        for device_id, leaf, payload in arrived:
            self.inbox.put(device_id, leaf, payload)

    # -------------------------------------------------------------- asyncio side

    async def _handle(self, device_id: str, leaf: str, payload: bytes) -> None:
        for target, message in await self.protocol.handle(device_id, leaf, payload):
            self.publish(target, message)

    def publish(self, device_id: str, message: Message) -> None:
        """Send one message to a device's down topic (QoS 1; the reply to a lost one is a resend)."""
        topic = topics.down(device_id)
        try:
            payload = encode(message)
        except ProtocolError as exc:
            log.error("not sending %s to %s: %s", message.type, device_id, exc)  # type: ignore[attr-defined]
            return
        assert len(payload) <= MAX_MESSAGE_BYTES
        info = self.client.publish(topic, payload, qos=1)
        kind = getattr(message, "type", "message")
        job_id = getattr(message, "job_id", None)
        code = getattr(message, "code", "ok")
        self.clf.mqtt("SEND", device_id, topic, f"{kind}#{job_id}" if job_id else kind,
                      "ok" if info.rc == mqtt.MQTT_ERR_SUCCESS and code in ("ok", "duplicate") else code,
                      len(payload))


class DeviceInbox:
    """Inbound messages queued per device and served fairly by a few workers.

    Why not a fixed set of shared queues chosen by a hash of the device id: owners choose
    their ids, so a flooding device could share (and fill) its neighbours' queue and make
    them wait behind its backlog, or get their messages dropped. Here each device has its own
    FIFO of at most ``limit`` messages, and the scheduling unit is the device, not the
    message: a device with work is in the ready line at most once, a worker takes one message
    of it, and puts the device back at the end of the line if it has more. So

    - one device's messages are handled one at a time, in the order they came;
    - a device never waits for more than one message of each other device (round robin),
      however many that other device has queued;
    - when a device's own FIFO is full its newest message is dropped (it resends or
      resyncs: every request is retried by the Manager), with at most one log line per
      device every ``log_every`` seconds; another device's messages are never dropped.
    """

    def __init__(self, handle: Callable[[str, str, bytes], Awaitable[None]], workers: int = 4,
                 limit: int = 256, log_every: float = 10.0) -> None:
        if workers < 1 or limit < 1:
            raise ValueError("an inbox needs at least one worker and room for one message per device")
        self._handle = handle
        self._workers = workers
        self.limit = limit
        self._log_every = log_every
        #: device id -> its messages not handled yet; present while the device is scheduled.
        self._pending: dict[str, deque[tuple[str, bytes]]] = {}
        #: Devices with work, each at most once, in turn order.
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        #: device id -> (messages dropped since the last log line, monotonic time of that line).
        self._dropped: dict[str, tuple[int, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"mqtt-worker-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def queued(self, device_id: str) -> int:
        """Messages of ``device_id`` waiting (not counting one being handled)."""
        return len(self._pending.get(device_id, ()))

    def put(self, device_id: str, leaf: str, payload: bytes) -> bool:
        """Queue one message (on the event loop's thread); False if it was dropped."""
        fifo = self._pending.get(device_id)
        if fifo is None:
            self._pending[device_id] = deque([(leaf, payload)])
            self._ready.put_nowait(device_id)
            return True
        if len(fifo) >= self.limit:
            self._drop(device_id)
            return False
        fifo.append((leaf, payload))
        return True

    def _drop(self, device_id: str) -> None:
        count, logged = self._dropped.get(device_id, (0, float("-inf")))
        count += 1
        now = time.monotonic()
        if now - logged >= self._log_every:
            log.warning("device %s sends faster than it is served: dropped %d of its messages "
                        "(its queue holds %d); it will resend or resync", device_id, count, self.limit)
            self._dropped[device_id] = (0, now)
        else:
            self._dropped[device_id] = (count, logged)

    async def _work(self) -> None:
        while True:
            device_id = await self._ready.get()
            fifo = self._pending[device_id]
            leaf, payload = fifo.popleft()
            try:
                await self._handle(device_id, leaf, payload)
            except Exception:
                log.exception("failed to handle a message from %s", device_id)
            finally:
                if fifo:
                    self._ready.put_nowait(device_id)  # back of the line: the others go first
                else:
                    del self._pending[device_id]
                    self._forget_drops(device_id)

    def _forget_drops(self, device_id: str) -> None:
        """Once a device's queue is empty and its log window over, report the drops not logged
        yet and forget it (so the table holds only devices that flooded lately)."""
        entry = self._dropped.get(device_id)
        if entry is None or time.monotonic() - entry[1] < self._log_every:
            return
        del self._dropped[device_id]
        if entry[0]:
            log.warning("device %s: dropped %d more of its messages", device_id, entry[0])


def take_over_session(broker_url: str, ca_file: Path | None, device_id: str, cert: x509.Certificate,
                      key: ec.EllipticCurvePrivateKey) -> None:
    """Connect once to the mTLS listener as ``device_id`` (blocking) and leave at once.

    Mosquitto keeps a revoked device's live connection when it rereads its CRL, but closes
    an older connection when another one comes with the same client id: this is that other
    one (cloud_service.registration makes the throw-away certificate).
    """
    url = urlsplit(broker_url)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    with tempfile.TemporaryDirectory() as tmp:  # ssl loads keys from files only; 0700 dir, deleted at once
        cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        context.load_cert_chain(cert_path, key_path)
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True,
                         protocol=mqtt.MQTTv311, reconnect_on_failure=False)
    client.tls_set_context(context)
    client.on_connect = lambda *_: done.set()
    client.on_disconnect = lambda *_: done.set()
    try:
        client.connect(url.hostname or "127.0.0.1", url.port or 8883, keepalive=10)
        client.loop_start()
        done.wait(10)
    except OSError as exc:
        log.warning("could not take over the connection of %s: %s", device_id, exc)
    finally:
        client.disconnect()
        client.loop_stop()
