"""A real Manager Runner paired with the real service's DeviceProtocol, in one process.

As h11's tests pair two real connections, the runner tests pair the two real ends of the
device protocol: the Runner (manager.runner) and ``cloud_service.devices.DeviceProtocol``
on a real JobStore (SQLite in the test's directory) and a real LocalObjectStore, with no
broker between them. ``DeviceLink`` stands where MQTT would: it hands what the Runner
publishes (topic leaf, payload) to ``DeviceProtocol.handle(device_id, leaf, payload)`` one
message at a time, in order (as the service's per-device worker does), and hands the
replies and the service's own messages (doorbells, job-canceled) back to the Runner. It can
lose, duplicate or delay messages on the way, so lost replies, resends and stale versions
are exercised against the service's real rules.

Documents are served by the real service HTTPS app (``create_app``'s presigned object
routes) on 127.0.0.1, or, when a scenario needs a failing URL, by tests.support.docserver
(the URLs are still the real store's presigned ones, only the host differs).

This module is the one place that builds the service side for these tests; it uses only
``DeviceProtocol(store, documents, clf)`` and ``handle``, JobStore calls and the job
operations of cloud_service.jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import text

from broker.pki import Pki
from cloud_service.accounting import Admission
from cloud_service.audit import AuditLog
from cloud_service.auth import User
from cloud_service.clf import ClfLog
from cloud_service.config import ServiceConfig
from cloud_service.db import JobRow, create_schema, make_engine
from cloud_service.devices import DeviceProtocol
from cloud_service.documents import DocumentKey, Documents
from cloud_service.http import Deps, create_app
from cloud_service.jobs import JobOperations
from cloud_service.objects import LocalObjectStore, UrlSigner
from cloud_service.store import JobStore
from manager.runner import Runner
from schemas.enums import ServiceKind
from schemas.messages import Message, Presence, Reply, decode_presence, decode_up, encode
from tests.support.docserver import DocServer

ADMIN = User("admin", "admin")
MAX_DOCUMENT_BYTES = 100 * 1024 * 1024


def _never(_message: Message) -> bool:
    return False


class DeviceLink:
    """The wire between one Runner and the DeviceProtocol, with faults to order.

    ``up`` holds every message the device published, ``replies`` every reply the service
    made, ``down`` every message delivered to the device, ``presence`` the device's presence.
    """

    def __init__(self, protocol: DeviceProtocol, device_id: str) -> None:
        self.protocol = protocol
        self.device_id = device_id
        #: Hands an encoded down message to the device (``attach`` sets it for a Runner).
        self.to_device: Callable[[bytes], None] | None = None
        #: Whether the device is connected; down messages wait for it, as a persistent
        #: MQTT session keeps them for a disconnected client.
        self.connected: Callable[[], bool] = lambda: True
        self._held: list[bytes] = []
        self.up: list[Message] = []
        self.replies: list[Reply] = []
        self.down: list[Message] = []
        self.presence: list[Presence] = []
        #: Lose a message on its way up: the service never sees it.
        self.lose: Callable[[Message], bool] = _never
        #: Let the service apply a message but lose its reply on the way down.
        self.lose_reply: Callable[[Message], bool] = _never
        #: Lose a message the service sends on its own (doorbell, job-canceled, ...).
        self.lose_down: Callable[[Message], bool] = _never
        #: Deliver a message to the service twice (as a QoS 1 redelivery would).
        self.duplicate: Callable[[Message], bool] = _never
        #: Hold a reply this many seconds before the device gets it.
        self.delay: Callable[[Message], float] = lambda _m: 0.0
        #: Runs before the service handles a message: change the job behind the device's back.
        self.before: Callable[[Message], Awaitable[None]] | None = None
        self._queue: asyncio.Queue[tuple[str, bytes, Message]] = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    # ------------------------------------------------------------------ the device's side

    def attach(self, runner: Runner) -> None:
        """Connect a Runner in this process: its publish is ``self.publish``."""
        self.to_device = runner.on_down
        self.connected = runner.connected.is_set

    def publish(self, topic: str, payload: bytes) -> bool:
        """The Runner's publish function (called on the loop, like paho's publish)."""
        leaf = topic.rsplit("/", 1)[-1]
        message: Message
        if leaf == "presence":
            message = decode_presence(payload)
            self.presence.append(message)
            if message.state == "online":
                asyncio.get_running_loop().call_soon(self._flush)  # once the connect is done
        else:
            message = decode_up(payload)
            self.up.append(message)
        if self.lose(message):
            return True
        self._queue.put_nowait((leaf, payload, message))
        if self.duplicate(message):
            self._queue.put_nowait((leaf, payload, message))
        return True

    # ------------------------------------------------------------------ the service's side

    def notify(self, device_id: str, message: Message) -> None:
        """The service's publish to a device (JobOperations' ``notify``)."""
        if device_id == self.device_id and not self.lose_down(message):
            self._deliver(message, 0.0)

    async def inject(self, message: Message) -> list[Message]:
        """Hand the service a message as if this device had sent it before (not recorded)."""
        return [m for _, m in await self.protocol.handle(self.device_id, "up", encode(message))]

    async def _serve(self) -> None:
        while True:
            leaf, payload, message = await self._queue.get()
            if self.before is not None:
                await self.before(message)
            for target, out in await self.protocol.handle(self.device_id, leaf, payload):
                if target != self.device_id:
                    continue
                if isinstance(out, Reply):
                    self.replies.append(out)
                    if out.re == message.id and self.lose_reply(message):
                        continue
                self._deliver(out, self.delay(out))

    def _deliver(self, message: Message, delay: float) -> None:
        self.down.append(message)
        asyncio.get_running_loop().call_later(delay, self._to_device, encode(message))

    def _to_device(self, data: bytes) -> None:
        assert self.to_device is not None, "attach a device first"
        if self.connected():
            self.to_device(data)
        else:
            self._held.append(data)

    def _flush(self) -> None:
        held, self._held = self._held, []
        for data in held:
            self._to_device(data)

    async def close(self) -> None:
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker

    # ------------------------------------------------------------------ reading the traffic

    def of(self, kind: type[Message], job_id: int | None = None, resends: bool = True) -> list[Any]:
        """The device's messages of one kind (for one job), every send; ``resends=False``
        keeps each message once (see ``types``)."""
        seen: set[str] = set()
        found = []
        for m in self.up:
            if not isinstance(m, kind) or (job_id is not None and getattr(m, "job_id", None) != job_id):
                continue
            if not resends and m.id in seen:
                continue
            seen.add(m.id)
            found.append(m)
        return found

    def types(self, job_id: int) -> list[str]:
        """The job's up messages as 'type[:state]' strings, in order, each message once.

        A resend (the same message id, sent again when its reply was slow or lost) is the
        transport's retry, not another report, so it is left out: a reply held past the
        request timeout on a loaded machine must not change the sequence. Count resends
        with ``of``, which keeps every send.
        """
        return [f"{m.type}:{m.state}" if hasattr(m, "state") else m.type
                for m in self.of(Message, job_id, resends=False)]

    def codes(self, job_id: int | None = None, resends: bool = True) -> list[str]:
        """The codes of the service's replies (to one job's messages).

        ``resends=False`` keeps only the first reply to each message: the service answers a
        resend ``duplicate``, which says the first send was applied, not that it was refused.
        """
        seen: set[str] = set()
        codes = []
        for r in self.replies:
            if job_id is not None and r.job_id != job_id:
                continue
            if not resends and r.re in seen:
                continue
            seen.add(r.re)
            codes.append(r.code)
        return codes


@dataclass
class ServiceSide:
    """The real service parts a device talks to, without a broker."""

    store: JobStore
    objects: LocalObjectStore
    protocol: DeviceProtocol
    jobs: JobOperations
    link: DeviceLink
    docs: DocServer | None = None
    _tasks: list[Any] = field(default_factory=list)

    async def add_job(self, documents: list[tuple[bytes, str]], ticket: dict[str, Any] | None = None,
                      service: str = "office") -> int:
        """Create a print job with its documents and close it (the doorbell rings).

        Created through the store, as the job operations do, so a job may have several
        documents and a ticket the device's current capabilities no longer allow (the device
        checks again because its capabilities may have changed since the job was accepted).
        """
        row = await self.store.service(ServiceKind.PRINT.value, service)
        assert row is not None, f"no service {service!r} announced"
        job = await self.store.create_job(
            kind=ServiceKind.PRINT, service=row, owner=ADMIN.name, ticket=dict(ticket or {}),
            documents=[{"format": fmt, "name": f"doc-{n}"} for n, (_, fmt) in enumerate(documents, 1)],
            with_documents=False, key_for=DocumentKey.input_key)
        for doc, (data, _) in zip(await self.store.documents(job.id), documents, strict=True):
            stored = await self.objects.put_stream(doc.object_key, _chunks(data), MAX_DOCUMENT_BYTES)
            await self.store.set_document(job.id, doc.number, size=stored.size, sha256=stored.sha256)
            if self.docs is not None:
                self.docs.put(f"objects/{doc.object_key}", data)
        await self.jobs.close(ADMIN, job.id)
        return job.id

    async def state(self, job_id: int) -> str:
        return (await self.store.get_job(job_id)).state

    async def job(self, job_id: int) -> JobRow:
        return await self.store.get_job(job_id)

    async def document_states(self, job_id: int) -> dict[int, str]:
        return {d.number: d.state for d in await self.store.documents(job_id)}

    async def cancel(self, job_id: int) -> None:
        """Cancel-Job by its owner (job-canceled goes to the device unless ``lose_down`` says)."""
        await self.jobs.cancel(ADMIN, job_id)

    async def delete_job(self, job_id: int) -> None:
        """The job disappears from the database, as the retention sweeper deletes jobs."""
        await self.store.delete_job(job_id)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@contextlib.asynccontextmanager
async def service_side(directory: Path, pki: Pki, device_id: str, *, url_ttl: float = 300.0,
                       docs: DocServer | None = None, database_url: str | None = None) -> AsyncIterator[ServiceSide]:
    """The service's store, object store and DeviceProtocol, and its HTTPS app serving objects.

    With ``docs``, presigned URLs point at that DocServer instead (it can fail on purpose). The
    store is SQLite in ``directory`` unless ``database_url`` names another database.
    """
    directory.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url or f"sqlite+aiosqlite:///{directory / 'service.sqlite'}")
    await create_schema(engine)
    if engine.dialect.name == "postgresql":
        # A running service has its pool's connections open; a first request that had to open
        # them would be slow enough, on a loaded machine, to be resent by the Manager.
        async with contextlib.AsyncExitStack() as opened:
            for _ in range(4):
                conn = await opened.enter_async_context(engine.connect())
                await conn.execute(text("SELECT 1"))
    store = JobStore(engine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"https://127.0.0.1:{docs.port if docs else sock.getsockname()[1]}"
    objects = LocalObjectStore(directory / "objects", UrlSigner(b"k" * 32, base))
    clf = ClfLog(directory / "access.log")
    audit = AuditLog(directory / "security.log")
    config = ServiceConfig(url_ttl=url_ttl)
    documents = Documents(store, objects, MAX_DOCUMENT_BYTES, url_ttl)
    protocol = DeviceProtocol(store, documents, clf)
    link = DeviceLink(protocol, device_id)
    jobs = JobOperations(store, documents, link.notify, Admission(store, config))
    app = create_app(Deps(store=store, jobs=jobs, objects=objects, clf=clf, audit=audit, config=config))
    config = uvicorn.Config(app, ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key),
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    try:
        yield ServiceSide(store, objects, protocol, jobs, link, docs)
    finally:
        await link.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 5)
        sock.close()
        audit.close()
        clf.close()
        await store.close()
        await engine.dispose()
