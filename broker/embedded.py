"""The embedded MQTT broker: amqtt 0.12.1 in-process, TLS only, behind a CONNECT gate.

We own the listening socket (asyncio TLS server) and hand each connection to amqtt through its
``external`` listener. Owning the socket gives us the real bound port (port=0 works) and a place
to fix what amqtt gets wrong at the connection level:

- **Authenticate before amqtt sees the CONNECT.** amqtt acts on the client id *before* asking the
  auth plugins: a clean-session CONNECT deletes the existing session of that id (its
  subscriptions vanish while the victim stays connected and deaf), a persistent-session CONNECT
  takes the session over and disconnects the victim, both with a wrong password. The gate reads
  the CONNECT (bounded in size and time), checks it with the same rules as DeviceAuthPlugin, and
  answers a refusal with CONNACK itself; only accepted connections reach amqtt.
- **Keepalive.** amqtt never drops a client that stops sending (MQTT 3.1.2.10 wants 1.5 x
  keepalive), so a device that lost power kept its connection, and its Last Will never fired.
  A sweeper aborts silent connections; amqtt then publishes the will.
- **Takeover.** A second connection with a client id that is already connected closes the first
  one (as Mosquitto does) and waits for amqtt to finish it, instead of leaving it half-alive.
- **Connection cap.** At most ``max_connections`` connections hold a descriptor, TLS handshakes
  included (broker.limits.CappedListener): when full, the oldest connection without an accepted
  CONNECT is closed for a newcomer. The handshake and the CONNECT together must arrive within
  ``connect_timeout``, so idle and half-open connections do not stay.
- **No plain TCP.** The only listener is TLS (TLS 1.2+); a plain MQTT CONNECT fails the handshake.
- **Device certificates (mTLS).** TLS asks for an optional client certificate of our CA. A
  device presenting one is the device its CN names (the password is ignored, the username must
  match), unless the CA's CRL lists its serial. The gate hands amqtt a CONNECT rewritten with
  that identity and a one-time ticket for the auth plugin. When the CRL or the password file
  changes, live connections of revoked certificates or removed users are closed at once.

The amqtt plugins (broker.plugins) still run behind the gate: authentication again (cached, so
cheap) and the topic ACL with the no-retain rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.mqtt.connect import ConnectPacket

from broker.credentials import CredentialStore, shared_store
from broker.limits import Admission, CappedListener, connection_budget
from broker.pki import Pki, device_identity, read_revoked_serials
from broker.plugins import BAD_USERNAME_OR_PASSWORD, GATE_TICKETS, NOT_AUTHORIZED, check_connect_async
from broker.private import private_dir
from schemas.messages import MAX_MESSAGE_BYTES

log = logging.getLogger("broker.embedded")

#: A CONNECT is small (ids, credentials, a presence will); anything bigger is not a device of ours.
MAX_CONNECT_BYTES = 64 * 1024
#: Largest packet a client may send after CONNECT: one envelope plus topic and headers.
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 2048
#: MQTT's "unacceptable protocol version" CONNACK code (amqtt speaks 3.1.1 only).
UNACCEPTABLE_PROTOCOL = 0x01
_LISTENER = "default"


def quiet_amqtt(level: int = logging.WARNING) -> None:
    """amqtt logs every packet and connection at INFO/DEBUG; keep it at WARNING unless configured."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


@dataclass(eq=False)
class _Connection:
    client_id: str
    keepalive: int
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    last_rx: float = field(default_factory=time.monotonic)
    #: Who authenticated, and how: the serial of the client certificate, or None for a password.
    username: str = ""
    serial: int | None = None


class _Revocations:
    """The CA's CRL, reread when the file changes (the service rewrites it on revocation)."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self._stamp: tuple[int, int, int] | None = None
        self.serials: frozenset[int] = frozenset()

    def refresh(self) -> bool:
        """Reload if the file changed; True when it did. A bad CRL keeps the previous list."""
        try:
            st = self.pki.crl.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.serials = read_revoked_serials(self.pki)
        except ValueError as exc:
            log.error("ignoring an unusable CRL (keeping %d revoked serials): %s", len(self.serials), exc)
        return True


class _ReplayReader(ReaderAdapter):
    """Gives amqtt the CONNECT bytes the gate already read, then the stream; notes activity."""

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader, conn: _Connection) -> None:
        self._prefix = prefix
        self._reader = reader
        self._conn = conn
        self._closed = False

    async def read(self, n: int = -1) -> bytes:
        if self._closed:
            return b""  # EOF: amqtt's reader loop ends and publishes the Last Will
        if n > MAX_PACKET_BYTES:
            # amqtt reads a PUBLISH payload in one read of its full length and has no size limit.
            # From here on everything reads as EOF, or amqtt would parse the rest of the payload
            # already buffered as further packets.
            log.warning("client %r sent a packet over %d bytes: closing", self._conn.client_id, MAX_PACKET_BYTES)
            self._closed = True
            self._conn.writer.transport.abort()
            raise ConnectionResetError("packet too large")
        if n == -1:
            data = self._prefix + await self._reader.read()
            self._prefix = b""
        elif n <= len(self._prefix):
            data, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            # If this await is cancelled (amqtt's read timeout), the prefix is still intact.
            rest = await self._reader.readexactly(n - len(self._prefix))
            data, self._prefix = self._prefix + rest, b""
        self._conn.last_rx = time.monotonic()
        return data

    def feed_eof(self) -> None:
        self._reader.feed_eof()


class EmbeddedBroker:
    """amqtt on one TLS port with password auth and per-device topic ACLs.

    `host` is an address (or a name with one address: with port=0 each address of a name would
    get its own port); `port=0` picks a free port, readable from `.port` and `.url` after start().

    Usage::

        broker = EmbeddedBroker(ensure_pki(data / "pki"), data / "broker" / "passwd", port=0)
        await broker.start()
        broker.credentials.set("printer-1", generate_password())
        ...  # clients connect to broker.url with pki.ca_cert
        await broker.stop()
    """

    def __init__(
        self,
        pki: Pki,
        credentials_path: Path,
        host: str = "127.0.0.1",
        port: int = 8883,
        *,
        session_expiry_interval: int = 24 * 3600,
        connect_timeout: float = 10.0,
        max_connections: int | None = None,
        quiet: bool = True,
        client_certificates: bool = True,
        device_passwords: bool = True,
        revocation_interval: float = 0.25,
    ) -> None:
        self.pki = pki
        self.credentials_path = Path(credentials_path)
        self._host = host
        self._port = port
        self.session_expiry_interval = session_expiry_interval
        #: TLS handshake, then the CONNECT: each must arrive within this many seconds.
        self.connect_timeout = connect_timeout
        #: Connections open at once (descriptors); default: this process's whole budget
        #: (broker.limits.connection_budget), less when it shares the process with the service.
        self.max_connections = max_connections if max_connections is not None else connection_budget()
        self._quiet = quiet
        self._broker: Broker | None = None
        self._server: CappedListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._live: dict[str, _Connection] = {}
        #: Ask TLS clients for a certificate of our CA (devices enrolled with one log in by it).
        self.client_certificates = client_certificates
        #: False: devices must present a certificate; only the service logs in with a password.
        self.device_passwords = device_passwords
        self.revocation_interval = revocation_interval
        self._revocations = _Revocations(pki)
        self._watcher: asyncio.Task[None] | None = None

    # -- public ----------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before; 0 means 'pick one')."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mqtts://{host}:{self._port}"

    @property
    def credentials(self) -> CredentialStore:
        """The password file the broker checks; `set()` a device here and it can connect at once."""
        return shared_store(self.credentials_path)

    @property
    def amqtt(self) -> Broker | None:
        """The running amqtt Broker (for plugins/tests); None when stopped."""
        return self._broker

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Start amqtt, then listen. A restart reuses the port first bound, so URLs stay valid."""
        if self._server is not None:
            return
        if self._quiet:
            quiet_amqtt()
        private_dir(self.credentials_path.parent)
        config: dict[str, Any] = {
            "listeners": {_LISTENER: {"type": "external"}},
            "session_expiry_interval": self.session_expiry_interval,
            "plugins": {
                "broker.plugins.DeviceAuthPlugin": {"password_file": str(self.credentials_path)},
                "broker.plugins.DeviceAclPlugin": {},
            },
        }
        broker = Broker(config)  # needs the running loop: construct here, not in __init__
        await broker.start()
        try:
            sock = _listen(self._host, self._port)
        except BaseException:
            await broker.shutdown()
            raise
        server = CappedListener(sock, self._protocol,
                                ssl_context=self.pki.server_context(client_certificates=self.client_certificates),
                                handshake_timeout=self.connect_timeout, max_connections=self.max_connections,
                                name="mqtt")
        server.start()
        self._broker = broker
        self._server = server
        self._port = sock.getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep_keepalives(), name="broker-keepalive")
        self._revocations.refresh()
        self._watcher = asyncio.create_task(self._watch_revocations(), name="broker-revocations")
        log.info("embedded broker listening on %s", self.url)

    async def stop(self) -> None:
        """Stop listening, end every connection, shut amqtt down. Bounded in time."""
        server, broker = self._server, self._broker
        self._server = self._broker = None
        if server is None:
            return
        await server.stop()
        for background in (self._sweeper, self._watcher):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        self._sweeper = self._watcher = None
        if broker is not None:
            try:
                await asyncio.wait_for(broker.shutdown(), timeout=10)
            except Exception:
                log.exception("amqtt shutdown failed")
        for conn in list(self._live.values()):
            conn.writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._live.clear()
        server.abort_all()
        server.sock.close()
        log.info("embedded broker stopped")

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- connection handling -----------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Connections holding a descriptor now (TLS handshakes included)."""
        return self._server.open_connections if self._server is not None else 0

    def _protocol(self, admission: Admission) -> asyncio.BaseProtocol:
        """What asyncio.start_server would make, told which admission it serves."""
        # MQTT packets are small: Nagle's algorithm would hold each reply back for the peer's
        # delayed ACK (~40 ms). asyncio sets this too; here it holds from the TLS handshake on.
        with contextlib.suppress(OSError):
            admission.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = asyncio.StreamReader(limit=2**16)
        return asyncio.StreamReaderProtocol(reader, functools.partial(self._on_connection, admission=admission))

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                             admission: Admission | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, task, admission)
        except asyncio.CancelledError:
            writer.transport.abort()
        except Exception:
            log.exception("connection handler failed")
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            await self._close(writer)

    @staticmethod
    def _tcp_keepalive(writer: asyncio.StreamWriter) -> None:
        """Let the kernel find dead peers of clients that chose MQTT keepalive 0."""
        sock = writer.get_extra_info("socket")
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in (("TCP_KEEPIDLE", 120), ("TCP_KEEPINTVL", 20), ("TCP_KEEPCNT", 4)):
                if hasattr(socket, name):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[Any],
                     admission: Admission | None = None) -> None:
        peer = writer.get_extra_info("peername")
        self._tcp_keepalive(writer)
        try:
            raw = await asyncio.wait_for(self._read_packet(reader), timeout=self.connect_timeout)
            connect = await ConnectPacket.from_stream(BufferReader(raw))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.info("dropping connection from %s before CONNECT: %r", peer, exc)
            return
        except Exception as exc:  # amqtt's parser raises its own error types on malformed input
            log.warning("dropping connection from %s: unreadable CONNECT: %r", peer, exc)
            return

        if connect.proto_name != "MQTT" or connect.proto_level != 4:
            await self._connack(writer, UNACCEPTABLE_PROTOCOL)
            log.warning("refused CONNECT from %s: protocol %s level %s", peer, connect.proto_name, connect.proto_level)
            return
        cert_identity, serial, refusal = self._certificate(writer)
        if refusal is None:
            refusal = await check_connect_async(
                self.credentials,
                username=connect.username,
                password=connect.password,
                client_id=connect.client_id,
                will_flag=connect.will_flag,
                will_topic=connect.will_topic,
                will_retain=connect.will_retain_flag,
                cert_identity=cert_identity,
                device_passwords=self.device_passwords,
            )
        if refusal is not None:
            code, reason = refusal
            log.warning(
                "refused CONNECT from %s: user=%r client_id=%r: %s",
                peer,
                connect.username,
                connect.client_id,
                reason,
            )
            await self._connack(writer, code or NOT_AUTHORIZED)
            return

        client_id: str = connect.client_id
        if admission is not None:
            admission.active = True  # a real client now: never closed to make room for another
        if cert_identity is not None:
            raw = self._as_ticket_connect(connect, cert_identity)
        conn = _Connection(client_id, connect.keep_alive, writer, task, username=cert_identity or connect.username,
                           serial=serial)
        await self._take_over(client_id)
        self._live[client_id] = conn
        try:
            broker = self._broker
            if broker is None:
                return
            await broker.external_connected(_ReplayReader(raw, reader, conn), StreamWriterAdapter(writer), _LISTENER)
        finally:
            if self._live.get(client_id) is conn:
                del self._live[client_id]

    def _certificate(self, writer: asyncio.StreamWriter) -> tuple[str | None, int | None, tuple[int, str] | None]:
        """(device id, serial, refusal) from the client certificate; all None without one.

        TLS already checked the chain (CERT_OPTIONAL: a presented certificate must verify);
        here the CRL is consulted, reread first if it changed, so a revocation counts at once.
        """
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None, None, None
        identity = device_identity(der)
        if identity is None:
            return None, None, (NOT_AUTHORIZED, "client certificate names no device")
        device_id, serial = identity
        self._revocations.refresh()
        if serial in self._revocations.serials:
            return device_id, serial, (BAD_USERNAME_OR_PASSWORD, f"certificate {serial:x} of {device_id!r} is revoked")
        return device_id, serial, None

    @staticmethod
    def _as_ticket_connect(connect: ConnectPacket, device_id: str) -> bytes:
        """The CONNECT re-encoded with the certificate's identity and a one-time gate ticket."""
        assert connect.variable_header is not None and connect.payload is not None
        connect.payload.username = device_id
        connect.payload.password = GATE_TICKETS.issue(connect.client_id, device_id)
        connect.variable_header.username_flag = True
        connect.variable_header.password_flag = True
        return connect.to_bytes()

    async def _watch_revocations(self) -> None:
        """Close live connections whose certificate was revoked or whose password user was removed."""
        passwd_stamp: tuple[int, int] | None = None
        while True:
            await asyncio.sleep(self.revocation_interval)
            try:
                st = self.credentials_path.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
            except FileNotFoundError:
                stamp = None
            users_changed = stamp != passwd_stamp
            passwd_stamp = stamp
            crl_changed = self._revocations.refresh()
            if not (users_changed or crl_changed):
                continue
            users = set(self.credentials.usernames()) if users_changed else None
            for conn in list(self._live.values()):
                if conn.serial is not None and conn.serial in self._revocations.serials:
                    why = f"certificate {conn.serial:x} revoked"
                elif conn.serial is None and users is not None and conn.username not in users:
                    why = "its password was removed"
                else:
                    continue
                log.warning("closed the connection of client %r: %s", conn.client_id, why)
                conn.writer.transport.abort()

    async def disconnect(self, client_id: str) -> bool:
        """Close the live connection of ``client_id`` now (its Last Will is published)."""
        conn = self._live.get(client_id)
        if conn is None:
            return False
        log.warning("closed the connection of client %r on request", client_id)
        conn.writer.transport.abort()
        if conn.task is not None and not conn.task.done():
            await asyncio.wait([conn.task], timeout=5)
        return True

    async def _take_over(self, client_id: str) -> None:
        """Close an older connection with the same client id and let amqtt finish it first.

        amqtt then publishes that connection's Last Will, as Mosquitto 2.0 does on a takeover, so
        the service sees "offline" before the new connection's "online", never after it.
        """
        old = self._live.pop(client_id, None)
        if old is None:
            return
        log.info("client %r connected again: closing its previous connection", client_id)
        old.writer.transport.abort()
        if old.task is not None and not old.task.done():
            await asyncio.wait([old.task], timeout=5)

    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> bytes:
        """Read one whole MQTT packet that must be a CONNECT, size-capped."""
        first = await reader.readexactly(1)
        if first[0] != 0x10:
            raise ValueError(f"first packet type {first[0] >> 4} is not CONNECT")
        header = bytearray(first)
        length, multiplier = 0, 1
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            header.append(byte)
            length += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                break
            multiplier *= 128
        else:
            raise ValueError("malformed remaining length")
        if length > MAX_CONNECT_BYTES:
            raise ValueError(f"CONNECT of {length} bytes is too large")
        return bytes(header) + await reader.readexactly(length)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """Close gracefully (flushes a refusal CONNACK and TLS close_notify), abort if that stalls."""
        if writer.transport.is_closing():
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), timeout=2)
        except (TimeoutError, OSError, asyncio.CancelledError):
            writer.transport.abort()

    @staticmethod
    async def _connack(writer: asyncio.StreamWriter, code: int) -> None:
        writer.write(bytes((0x20, 0x02, 0x00, code)))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), timeout=2)

    async def _sweep_keepalives(self) -> None:
        """Abort connections silent for more than 1.5 x their keepalive, so Last Wills fire."""
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for conn in list(self._live.values()):
                if conn.keepalive > 0 and now - conn.last_rx > 1.5 * conn.keepalive:
                    log.info("client %r silent for %.0f s: closing", conn.client_id, now - conn.last_rx)
                    conn.writer.transport.abort()
                    conn.keepalive = 0  # abort once


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the first address of ``host`` (SO_REUSEADDR, as start_server)."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
