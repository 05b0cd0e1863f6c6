"""The runner tests' stand-in for the service side of the device protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manager.runner import Runner
from schemas.messages import (
    AcknowledgeJob,
    DocumentAccess,
    DocumentStatus,
    FetchDocument,
    FetchJob,
    Hello,
    JobCanceled,
    JobStatus,
    Message,
    Presence,
    Reply,
    Sync,
    decode_presence,
    decode_up,
    encode,
)
from schemas.model.job import Accept, Cancel, DeviceReport, InvalidTransition, Job, Reject
from schemas.tickets import PrintJobTicket
from tests.support.docserver import DocServer


@dataclass
class FakeJob:
    job: Job
    ticket: PrintJobTicket
    service: str
    documents: list[tuple[str, str]]  # (name on the DocServer, format)
    doc_states: dict[int, str] = field(default_factory=dict)


class FakeService:
    """The service side of the protocol, answering through the Runner's publish function."""

    def __init__(self, docs: DocServer, sender: Callable[[Message], None] | None = None) -> None:
        self.docs = docs
        #: How a down message reaches the device: straight into the Runner's loop by default.
        self.sender = sender or self._to_runner
        self.jobs: dict[int, FakeJob] = {}
        self.up: list[Message] = []
        self.replies: list[Reply] = []
        self.presence: list[Presence] = []
        self._answered: dict[str, Reply] = {}
        self.url_ttl = 300.0
        #: Return True to lose an incoming message (it never reaches the service).
        self.lose: Callable[[Message], bool] = lambda m: False
        #: Return True to apply a message but lose its reply.
        self.lose_reply: Callable[[Message], bool] = lambda m: False
        #: Return a Reply to answer instead of the normal logic (or None).
        self.override: Callable[[Message], Reply | None] = lambda m: None
        self.sync_fetchable = True
        self.runner: Runner | None = None

    # plumbing ----------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> bool:
        if topic.endswith("/presence"):
            self.presence.append(decode_presence(payload))
            return True
        message = decode_up(payload)
        self.up.append(message)
        if self.lose(message):
            return True
        reply = self.handle(message)
        if reply is not None and not self.lose_reply(message):
            self.send(reply)
        return True

    def send(self, message: Message) -> None:
        self.sender(message)

    def _to_runner(self, message: Message) -> None:
        assert self.runner is not None
        asyncio.get_running_loop().call_soon(self.runner.on_down, encode(message))

    def of(self, kind: type[Message], job_id: int | None = None) -> list[Any]:
        return [m for m in self.up if isinstance(m, kind) and (job_id is None or m.job_id == job_id)]

    def types(self, job_id: int) -> list[str]:
        """The job's up messages as 'type[:state]' strings, in order."""
        return [
            f"{m.type}:{m.state}" if hasattr(m, "state") else m.type
            for m in self.up
            if getattr(m, "job_id", None) == job_id
        ]

    # jobs ----------------------------------------------------------------------

    def add(
        self,
        job_id: int,
        documents: list[tuple[bytes, str]],
        ticket: dict[str, Any] | None = None,
        service: str = "office",
    ) -> FakeJob:
        names = []
        for n, (data, fmt) in enumerate(documents, 1):
            name = f"j{job_id}d{n}"
            self.docs.put(name, data)
            names.append((name, fmt))
        ticket_model = PrintJobTicket.model_validate({"document-format": documents[0][1], **(ticket or {})})
        fake = FakeJob(Job.created(with_documents=True), ticket_model, service, names)
        self.jobs[job_id] = fake
        return fake

    def cancel(self, job_id: int, notify: bool = True) -> None:
        fake = self.jobs[job_id]
        fake.job = fake.job.apply(Cancel())
        if notify:
            self.send(JobCanceled(job_id=job_id, version=fake.job.version))

    def access(self, fake: FakeJob, number: int) -> DocumentAccess:
        name, fmt = fake.documents[number - 1]
        url, size, sha = self.docs.url(name), len(self.docs.files[name]), self.docs.put(name, self.docs.files[name])[2]
        return DocumentAccess(
            document_number=number,
            url=url,
            expires_at=time.time() + self.url_ttl,
            size=size,
            sha256=sha,
            document_format=fmt,
        )

    # the protocol --------------------------------------------------------------

    def handle(self, message: Message) -> Reply | None:
        if isinstance(message, Hello):
            fetchable = [i for i, f in self.jobs.items() if f.job.fetchable] if self.sync_fetchable else []
            self.send(Sync(re=message.id, fetchable=fetchable))
            return None
        if not hasattr(message, "job_id"):
            return None
        if message.id in self._answered:
            first = self._answered[message.id]
            reply = Reply(
                re=message.id,
                ok=True,
                code="duplicate",
                job_id=first.job_id,
                version=self.jobs[message.job_id].job.version if message.job_id in self.jobs else None,
            )
        else:
            reply = self.override(message) or self.apply(message)
            self._answered[message.id] = reply
        self.replies.append(reply)
        return reply

    def apply(self, m: Any) -> Reply:
        def answer(code: str, **fields: Any) -> Reply:
            return Reply(re=m.id, ok=code == "ok", code=code, job_id=m.job_id, **fields)

        fake = self.jobs.get(m.job_id)
        if fake is None:
            return answer("not-found")
        job = fake.job

        def stale() -> Reply:
            return answer("stale", state=job.state, reasons=list(job.reasons), version=job.version)

        if isinstance(m, FetchJob):
            if not job.fetchable:
                return answer("not-fetchable")
            return answer(
                "ok", version=job.version, service=fake.service, ticket=fake.ticket, document_count=len(fake.documents)
            )
        if isinstance(m, FetchDocument):
            if not job.claimed:
                return answer("not-yours")
            return answer("ok", version=job.version, documents=[self.access(fake, m.document_number)])
        if m.version != job.version:
            return stale()
        try:
            if isinstance(m, AcknowledgeJob):
                event = Accept() if m.accept else Reject(reason=m.reason or "aborted-by-system", message=m.message)
                fake.job = job.apply(event)
                documents = [self.access(fake, n) for n in range(1, len(fake.documents) + 1)] if m.accept else []
                return answer("ok", version=fake.job.version, documents=documents)
            if isinstance(m, JobStatus):
                fake.job = job.apply(DeviceReport(m.state, tuple(m.reasons), m.message, m.impressions_completed))
                return answer("ok", version=fake.job.version)
            if isinstance(m, DocumentStatus):
                fake.doc_states[m.document_number] = m.state
                return answer("ok", version=job.version)
        except InvalidTransition as exc:
            return answer("invalid-transition", message=str(exc)[:200])
        return answer("bad-request")
