"""The Cloud Service's only MQTT client module (paho-mqtt 2.x): the broker session, in and
out, and the one-shot session take-over that disconnects a revoked device from Mosquitto.

paho's network I/O runs on the asyncio event loop (``PahoOnLoop``), not in paho's own thread:
the socket is watched by the loop, a received message is queued at once, and a burst of
publishes is written in one go when the socket is next writable. A thread of paho's own cost
a thread switch and a fight for the GIL per message each way, and a wake-up write per publish.
Received messages are queued per device (``DeviceInbox``): one device's messages are handled
one at a time, in the order they were sent, while the workers serve the devices with work in
turn, so a device that floods the service waits behind itself only, and only its own excess is
dropped.

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
import contextlib
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
        self.inbox = DeviceInbox(self._handle, workers=workers, limit=device_queue_limit)
        self._network: PahoOnLoop | None = None
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
        self.client.max_queued_messages_set(100_000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    async def start(self, wait: float = 10.0) -> None:
        """Connect (retrying in the background if the broker is not up yet)."""
        self.inbox.start()
        if self.mqtt5:
            self.client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=self._clean_start,
                                      properties=self._connect_properties)
        else:
            self.client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._network = PahoOnLoop(self.client, f"broker {self.host}:{self.port}")
        self._network.start()
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
        except TimeoutError:
            log.warning("broker %s:%s not reachable yet; retrying in the background", self.host, self.port)

    async def stop(self) -> None:
        if self._network is not None:
            await self._network.stop()
        await self.inbox.stop()

    def abandon(self) -> None:
        """Stop the network at once, without DISCONNECT, as a crash would (fault tests)."""
        if self._network is not None:
            self._network.abandon()

    # -------------------------------------------------------------- paho callbacks (on the loop)

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
        if self._network is not None:
            self._network.connected()
        self.connected.set()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: list[object],
                      _properties: object) -> None:
        refused = [str(code) for code in reason_codes if getattr(code, "is_failure", False)]
        if refused:
            log.error("broker refused the service's subscriptions %s: %s", self.subscriptions, ", ".join(refused))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason_code: object,
                       _properties: object) -> None:
        log.warning("disconnected from broker: %s", reason_code)
        self.connected.clear()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[1] == "down":
            log.warning("ignored message on unexpected topic %r", msg.topic[:200])
            return
        device_id, leaf = parsed
        self.inbox.put(device_id, leaf, bytes(msg.payload))

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


class PahoOnLoop:
    """Runs a paho client's network I/O on the running asyncio loop instead of paho's thread.

    paho's "external event loop" interface: the loop watches the socket and calls
    ``loop_read`` when it is readable and ``loop_write`` while paho has bytes to send (paho asks
    through ``on_socket_register_write``), and ``loop_misc`` every second for keepalives. Only
    the connection itself blocks (TCP connect and TLS handshake inside ``reconnect``), so it runs
    in a worker thread; paho announces the new socket from there, and what it asks of the loop
    then is handed over with ``call_soon_threadsafe``. A lost connection is made again as
    paho's own loop would: after ``min_delay`` seconds, doubling up to ``max_delay`` while the
    broker cannot be reached, back to ``min_delay`` once the broker has accepted (``connected``).
    Every callback of the client (messages, connect, disconnect) then runs on the loop.
    """

    def __init__(self, client: mqtt.Client, name: str, min_delay: float = 1.0, max_delay: float = 10.0) -> None:
        self.client = client
        self.name = name
        self.min_delay = min_delay
        self.max_delay = max_delay
        self._delay = min_delay
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._fd: int | None = None
        self._lost = asyncio.Event()
        self._closed = False
        self._run: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write

    def start(self) -> None:
        self._run = self._loop.create_task(self._connect_forever(), name=f"mqtt {self.name}")

    def connected(self) -> None:
        """The broker accepted the connection: the next loss is retried after ``min_delay``."""
        self._delay = self.min_delay

    async def stop(self, timeout: float = 2.0) -> None:
        """DISCONNECT (written before the socket closes, within ``timeout``), then stop."""
        if self._fd is not None and self.client.is_connected():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout)
        self.abandon()
        if self._run is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._run

    def abandon(self) -> None:
        """Stop at once: no more reads, writes or reconnects, and the socket closed as it is."""
        self._closed = True
        if self._run is not None:
            self._run.cancel()
        self._drop()

    async def _connect_forever(self) -> None:
        while not self._closed:
            self._lost.clear()
            try:
                await self._loop.run_in_executor(None, self.client.reconnect)
            except Exception as exc:  # refused, unreachable, TLS: as paho's loop, try again later
                log.warning("%s: cannot connect (%s: %s); retrying in %.0f s", self.name, type(exc).__name__,
                            exc, self._delay)
            else:
                await self._lost.wait()
            if self._closed:
                return
            await asyncio.sleep(self._delay)
            self._delay = min(2 * self._delay, self.max_delay)

    # -- paho's socket callbacks: from the worker thread while connecting, else on the loop ------

    def _on_loop(self, call: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            call()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is watched any more
            self._loop.call_soon_threadsafe(call)

    def _socket_open(self, _client: mqtt.Client, _userdata: object, sock: socket.socket) -> None:
        self._on_loop(lambda: self._watch(sock))

    def _watch(self, sock: socket.socket) -> None:
        if self._closed:  # stopped while it connected
            with contextlib.suppress(OSError):
                sock.close()
            return
        fd = self._fd = sock.fileno()
        self._loop.add_reader(fd, self._readable)
        self._misc = self._loop.create_task(self._keepalive(), name=f"mqtt keepalive {self.name}")
        self._readable()  # anything the handshake left in the TLS buffer

    def _socket_close(self, _client: mqtt.Client, _userdata: object, _sock: object) -> None:
        self._on_loop(self._unwatch)

    def _unwatch(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._lost.set()

    def _register_write(self, _client: mqtt.Client, _userdata: object, sock: socket.socket) -> None:
        fd = sock.fileno()

        def watch_writes() -> None:
            if self._fd == fd:
                self._loop.add_writer(fd, self._writable)

        # While connecting, the socket is watched (``_watch``) before this runs: same queue.
        self._on_loop(watch_writes)

    def _unregister_write(self, _client: mqtt.Client, _userdata: object, _sock: object) -> None:
        fd = self._fd
        if fd is not None:
            self._on_loop(lambda: self._loop.remove_writer(fd))

    def _readable(self) -> None:
        # A TLS record may hold several packets and paho reads only as many as it has messages
        # in flight: what stays in the TLS buffer makes the socket no more readable, so read on
        # while the buffer holds some (bounded; the rest on the next turn of the loop).
        for _ in range(1000):
            sock = self.client.socket()
            if sock is None or self._closed:
                return
            try:
                self.client.loop_read()
            except Exception:
                log.exception("%s: reading from the broker failed; reconnecting", self.name)
                self._drop()
                return
            sock = self.client.socket()
            if sock is None or not getattr(sock, "pending", lambda: 0)():
                return
        self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception:
            log.exception("%s: writing to the broker failed; reconnecting", self.name)
            self._drop()

    def _drop(self) -> None:
        """Stop watching the socket and close it as it is (no DISCONNECT)."""
        sock = self.client.socket()
        self._unwatch()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.client.loop_misc()


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
