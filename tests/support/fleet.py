"""A light simulated-device fleet: thousands of MQTT/TLS sessions in one asyncio process.

Each ``FleetDevice`` speaks the real device protocol (``schemas.messages`` on ``schemas.topics``):
presence with a Last Will, ``hello`` -> ``sync``, ``attributes``, then for every doorbell (or
``sync.fetchable``) ``fetch-job``, ``acknowledge-job``, the document by its presigned URL (size and
SHA-256 checked), ``job-status`` / ``document-status`` to completion, each report on the version
of the previous reply.

The MQTT 3.1.1 client is a minimal one on asyncio streams (CONNECT, SUBSCRIBE, PUBLISH at QoS 1
both ways, PINGREQ, DISCONNECT): a session costs one socket, one reader task and a few KB, and a
TLS handshake never blocks the loop. paho runs a blocking connect and keeps a thread or a
socket-callback dance per client; aiomqtt wraps paho and connects in an executor thread; gmqtt
is little maintained. The Manager itself keeps paho: this is a load generator, not a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas import topics
from schemas.enums import DocumentState, JobState
from schemas.messages import (
    AcknowledgeJob,
    Attributes,
    DocumentStatus,
    FetchJob,
    Hello,
    JobFetchable,
    JobStatus,
    Message,
    Presence,
    PrintServiceAttributes,
    ProtocolError,
    Reply,
    Sync,
    decode_down,
    encode,
)

# -- a minimal MQTT 3.1.1 client ---------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class MqttError(Exception):
    """The broker refused or closed the session."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


class MqttSession:
    """One MQTT 3.1.1 session over TLS; ``on_message(topic, payload)`` runs in the reader task."""

    def __init__(self, on_message: Callable[[str, bytes], None]) -> None:
        self.on_message = on_message
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._mid = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()
        #: Whether the TLS handshake resumed an earlier session.
        self.resumed = False

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    async def connect(self, host: str, port: int, context: ssl.SSLContext, client_id: str, username: str,
                      password: str, keepalive: int = 60, will: tuple[str, bytes] | None = None,
                      timeout: float = 30.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout)
        flags = 0x02 | 0x80 | 0x40  # clean session, username, password
        payload = _str(client_id)
        if will is not None:
            flags |= 0x04 | 0x08  # will, will QoS 1
            payload += _str(will[0]) + _str(will[1])
        payload += _str(username) + _str(password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload
        self._writer.write(_packet(CONNECT, 0, body))
        kind, _flags, data = await asyncio.wait_for(self._read_packet(), timeout)
        if kind != CONNACK or len(data) < 2 or data[1] != 0:
            raise MqttError(f"CONNACK refused: {data.hex()}")
        ssl_object = self._writer.get_extra_info("ssl_object")
        self.resumed = bool(getattr(ssl_object, "session_reused", False))
        if isinstance(context, ResumingContext):
            context.learn(self._writer)
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._ping(keepalive))]

    async def _read_packet(self) -> tuple[int, int, bytes]:
        assert self._reader is not None
        head = await self._reader.readexactly(1)
        length, shift = 0, 0
        while True:
            byte = (await self._reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        data = await self._reader.readexactly(length) if length else b""
        return head[0] >> 4, head[0] & 0x0F, data

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, flags, data = await self._read_packet()
                if kind == PUBLISH:
                    (tlen,) = struct.unpack_from("!H", data)
                    topic = data[2:2 + tlen].decode()
                    rest = 2 + tlen
                    if (flags >> 1) & 3:
                        (mid,) = struct.unpack_from("!H", data, rest)
                        rest += 2
                        self._send(_packet(PUBACK, 0, struct.pack("!H", mid)))
                    self.on_message(topic, data[rest:])
                elif kind in (PUBACK, SUBACK):
                    (mid,) = struct.unpack_from("!H", data)
                    future = self._acks.pop(mid, None)
                    if future is not None and not future.done():
                        future.set_result(data[2:])
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.closed.set()
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(MqttError("connection closed"))

    async def _ping(self, keepalive: int) -> None:
        while True:
            await asyncio.sleep(max(1.0, keepalive / 2))
            self._send(_packet(PINGREQ, 0, b""))

    def _send(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise MqttError("connection closed")
        self._writer.write(data)

    async def subscribe(self, topic: str, timeout: float = 30.0) -> None:
        mid = self._next_mid()
        future = self._acks[mid] = asyncio.get_running_loop().create_future()
        self._send(_packet(SUBSCRIBE, 2, struct.pack("!H", mid) + _str(topic) + b"\x01"))
        granted = await asyncio.wait_for(future, timeout)
        if granted[:1] == b"\x80":
            raise MqttError(f"subscription to {topic} refused")

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[Any]:
        """PUBLISH at QoS 1; the future resolves on PUBACK (callers need not wait for it)."""
        mid = self._next_mid()
        future = self._acks[mid] = asyncio.get_running_loop().create_future()
        self._send(_packet(PUBLISH, 2, _str(topic) + struct.pack("!H", mid) + payload))
        return future

    async def close(self) -> None:
        """DISCONNECT (no Last Will), then close the socket."""
        with contextlib.suppress(MqttError, OSError):
            self._send(_packet(DISCONNECT, 0, b""))
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 5)


class ResumingContext(ssl.SSLContext):
    """A client TLS context that offers the broker a session it issued before (``session``).

    A device that reconnects resumes its TLS session (a TLS 1.3 ticket, or a TLS 1.2 session
    id): the broker decrypts the ticket instead of signing a handshake and sending its
    certificate chain, and the client verifies no chain. asyncio's ``open_connection`` has no
    session argument, but it makes its TLS object with ``wrap_bio``, which has one.
    """

    session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, server_side: bool = False,
                 server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self.session
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def learn(self, writer: asyncio.StreamWriter) -> None:
        """Keep the session of an established connection to offer on the next ones (once its
        ticket has arrived: TLS 1.3 sends it after the handshake)."""
        if self.session is not None:
            return
        ssl_object = writer.get_extra_info("ssl_object")
        session = getattr(ssl_object, "session", None)
        if session is not None and (session.has_ticket or session.id):
            self.session = session


def client_context(cafile: str, resume: bool) -> ssl.SSLContext:
    """The fleet's TLS client context: the broker's CA, hostname checked; with ``resume``,
    connections after the first resume a TLS session the broker issued to an earlier one."""
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT) if resume else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=cafile)
    return context


# -- a simulated device --------------------------------------------------------------------------


@dataclass
class FleetContext:
    """What every device of a fleet shares: the broker, TLS, the HTTP client for documents, and
    the callbacks that report to whoever measures."""

    host: str
    port: int
    tls: ssl.SSLContext
    http: httpx.AsyncClient | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    on_doorbell: Callable[[str, int, float], None] = lambda device, job, t: None
    on_done: Callable[[str, int, str, float], None] = lambda device, job, state, t: None
    request_timeout: float = 30.0
    keepalive: int = 60


class FleetDevice:
    """One simulated printer; its service has the device's own name."""

    def __init__(self, ctx: FleetContext, device_id: str, password: str) -> None:
        self.ctx = ctx
        self.device_id = device_id
        self.password = password
        self.session = MqttSession(self._on_message)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._jobs: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, service: bool = True) -> None:
        """Connect with a Last Will; with ``service``, also presence, hello and attributes
        (the device is then online at the service with its print service)."""
        session_id = uuid.uuid4().hex[:16]
        will = encode(Presence(state="offline", session=session_id))
        await self.session.connect(self.ctx.host, self.ctx.port, self.ctx.tls, self.device_id, self.device_id,
                                   self.password, self.ctx.keepalive, (topics.presence(self.device_id), will))
        await self.session.subscribe(topics.down(self.device_id))
        if not service:
            return
        self.session.publish(topics.presence(self.device_id), encode(Presence(state="online", session=session_id)))
        sync = await self.request(Hello(software="cloudimaging-bench-fleet"))
        attrs = PrintServiceAttributes(name=self.device_id, make_and_model="bench fleet printer",
                                       capabilities=self.ctx.capabilities)  # type: ignore[arg-type]
        reply = await self.request(Attributes(services=[attrs]))
        if not isinstance(reply, Reply) or not reply.ok:
            raise MqttError(f"{self.device_id}: attributes refused: {reply}")
        if isinstance(sync, Sync):
            for job_id in sync.fetchable:
                self._start_job(job_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.session.close()

    async def request(self, message: Message, attempts: int = 10) -> Message:
        """Send and wait for the answer (``re`` = its id), resending the same message on timeout
        (a saturated service answers late, not never; the bound keeps a lost one finite)."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        payload = encode(message)
        try:
            for attempt in range(attempts):
                self.session.publish(topics.up(self.device_id), payload)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), self.ctx.request_timeout)
                except TimeoutError:
                    if attempt == attempts - 1:
                        raise
            raise AssertionError("unreachable")
        finally:
            self._pending.pop(message.id, None)

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = decode_down(payload)
        except ProtocolError:
            return  # not ours to judge here; the Manager logs such a message and drops it
        re = getattr(message, "re", None)
        if re is not None and re in self._pending:
            future = self._pending[re]
            if not future.done():
                future.set_result(message)
            return
        if isinstance(message, JobFetchable):
            self.ctx.on_doorbell(self.device_id, message.job_id, time.time())
            self._start_job(message.job_id)

    def _start_job(self, job_id: int) -> None:
        if job_id in self._jobs:
            return
        self._jobs.add(job_id)
        task = asyncio.create_task(self._run_job(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job_id: int) -> None:
        state = "failed"
        try:
            state = await self._print(job_id)
        except (MqttError, TimeoutError, httpx.HTTPError) as exc:
            state = f"failed: {type(exc).__name__}: {exc}"
        finally:
            self._jobs.discard(job_id)
            self.ctx.on_done(self.device_id, job_id, state, time.time())

    async def _expect(self, message: Message) -> Reply:
        reply = await self.request(message)
        if not isinstance(reply, Reply) or not reply.ok:
            raise MqttError(f"{message.type} refused: {reply}")
        return reply

    async def _print(self, job_id: int) -> str:
        fetched = await self.request(FetchJob(job_id=job_id))
        if not isinstance(fetched, Reply) or not fetched.ok or fetched.version is None:
            return f"not fetched: {getattr(fetched, 'code', fetched)}"
        claim = await self._expect(AcknowledgeJob(job_id=job_id, version=fetched.version, accept=True))
        version = claim.version or fetched.version
        version = (await self._expect(JobStatus(job_id=job_id, version=version, state=JobState.PROCESSING,
                                                reasons=["job-printing"]))).version or version
        impressions = 0
        for access in claim.documents:
            number = access.document_number
            version = (await self._expect(DocumentStatus(job_id=job_id, document_number=number, version=version,
                                                         state=DocumentState.PROCESSING))).version or version
            data = await self._download(access.url)
            if len(data) != access.size or (access.sha256 and hashlib.sha256(data).hexdigest() != access.sha256):
                raise MqttError(f"job {job_id} doc {number}: size or SHA-256 mismatch")
            impressions += 1
            version = (await self._expect(DocumentStatus(job_id=job_id, document_number=number, version=version,
                                                         state=DocumentState.COMPLETED,
                                                         impressions_completed=1))).version or version
        await self._expect(JobStatus(job_id=job_id, version=version, state=JobState.COMPLETED,
                                     impressions_completed=impressions))
        return "completed"

    async def _download(self, url: str) -> bytes:
        assert self.ctx.http is not None, "a fleet that prints needs an HTTP client"
        response = await self.ctx.http.get(url)
        response.raise_for_status()
        return response.content


async def connect_all(devices: list[FleetDevice], concurrency: int, service: bool,
                      progress: Callable[[int], Awaitable[None] | None] | None = None) -> list[str]:
    """Connect every device, at most ``concurrency`` handshakes at once; the errors (empty when
    all connected)."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    done = 0

    async def one(device: FleetDevice) -> None:
        nonlocal done
        async with gate:
            try:
                await device.connect(service)
            except (MqttError, OSError, TimeoutError, ssl.SSLError) as exc:
                errors.append(f"{device.device_id}: {type(exc).__name__}: {exc}")
            done += 1
            if progress is not None:
                result = progress(done)
                if asyncio.iscoroutine(result):
                    await result

    await asyncio.gather(*(one(d) for d in devices))
    return errors
