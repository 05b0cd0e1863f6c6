"""The IPP front: every print service is an IPP/2.0 printer at /ipp/print/NAME (IPP Everywhere,
PWG 5100.14, where it takes JPEG and PWG raster).

Its icons (printer-icons) are served, without credentials, at /ipp/icons/SIZE.png.

An ASGI app mounted at ``/ipp`` on the service's HTTPS server, so ``ipps://HOST:PORT/ipp/
print/NAME`` reaches it (IPP over HTTPS POST, Content-Type application/ipp; RFC 8010). It is
a translation layer only: jobs are created, fed, closed and canceled through JobOperations and
read through JobStore, so a job submitted over IPP is the same job in ``cloudimaging jobs``,
the HTTP API and the device protocol, with the same id (IPP job-id = our job id).

Authentication: HTTP Basic with the user name and an API token as the password, or Bearer
with the token, read by cloud_service.credentials as for the HTTP API. Get-Printer-Attributes
is answered without credentials, as IPP printers and CUPS do, because clients (CUPS
``lpadmin -m everywhere``, phones) query the capabilities before they know they must
authenticate; every other operation needs a user. Credentials that were sent and fail are an
``auth-failed`` event of the security audit log, as on the HTTP API; a request without any is
not (IPP clients send one first to be told they must authenticate).

Document bytes are streamed from the request body into the object store (constant memory):
the attribute section is parsed from the first chunks and whatever follows is the document.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from cloud_service.audit import AuditLog
from cloud_service.auth import User
from cloud_service.credentials import parse_authorization, user_for
from cloud_service.db import JobRow, ServiceRow
from cloud_service.errors import Refusal
from cloud_service.ipp import everywhere
from cloud_service.jobs import JobOperations, parsed_capabilities
from cloud_service.store import JobStore
from schemas.api import JobInfo
from schemas.enums import JobState, ServiceKind
from schemas.ipp import attributes as ia
from schemas.ipp.codec import (
    Attribute,
    Group,
    IppIncomplete,
    IppParseError,
    Message,
    Op,
    Status,
    Tag,
    decode,
    response,
    simple,
)
from schemas.messages import Identify
from schemas.model.service import service_overlay
from schemas.text import check_name
from schemas.tickets import PrintCapabilities

log = logging.getLogger("cloudimaging.ipp")

#: The attribute section of a request may not be larger than this (documents are not limited here).
MAX_ATTRIBUTE_BYTES = 1024 * 1024
REALM = "cloudimaging"
SYSTEM_USER = User("system", "admin")
HOLD_JOB = 0x000C
RELEASE_JOB = 0x000D
OPERATIONS = [Op.PRINT_JOB, Op.VALIDATE_JOB, Op.CREATE_JOB, Op.SEND_DOCUMENT, Op.CANCEL_JOB, Op.GET_JOB_ATTRIBUTES,
              Op.GET_JOBS, Op.GET_PRINTER_ATTRIBUTES, HOLD_JOB, RELEASE_JOB, Op.CANCEL_MY_JOBS, Op.CLOSE_JOB,
              Op.IDENTIFY_PRINTER]
_PATH = re.compile(r"^/print/([a-z0-9][a-z0-9-]{0,63})(?:/([0-9]{1,18}))?/?$")
_ICON = re.compile(r"^/icons/([0-9]{2,3})\.png$")
_JOB_TEMPLATE_IN_JOB = frozenset({"copies", "finishings", "media", "number-up", "orientation-requested",
                                  "page-ranges", "print-color-mode", "print-quality", "sides", "job-hold-until",
                                  "job-priority"})


class IppError(Exception):
    """An IPP error status for the response, with the attributes to list as unsupported."""

    def __init__(self, status: Status, message: str, unsupported: list[Attribute] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.unsupported = unsupported or []


class NeedAuth(Exception):
    """Answer HTTP 401 with a Basic challenge."""


class _BodyTooLarge(Exception):
    pass


class _ClientGone(OSError):
    """The client disconnected before the document was complete."""


class _Body:
    """The request body: the IPP attribute section first, then the document as a stream."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.buffer = bytearray()
        self.done = False
        self.disconnected = False

    async def _more(self) -> bool:
        if self.done:
            return False
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.done = self.disconnected = True
            return False
        self.buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self.done = True
        return True

    async def message(self) -> Message:
        """Read until the attribute section parses; the rest stays as document data."""
        while True:
            try:
                msg, offset = decode(self.buffer)
            except IppIncomplete:
                if len(self.buffer) > MAX_ATTRIBUTE_BYTES:
                    raise _BodyTooLarge from None
                if not await self._more():
                    raise
                continue
            del self.buffer[:offset]
            return msg

    async def has_data(self) -> bool:
        while not self.buffer and not self.done:
            await self._more()
        return bool(self.buffer)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The document bytes after the attribute section; raises _ClientGone if cut short."""
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            yield data
        while not self.done:
            await self._more()
            if self.buffer:
                data = bytes(self.buffer)
                self.buffer.clear()
                yield data
        if self.disconnected:
            raise _ClientGone("the client went away during the document")

    @property
    def consumed(self) -> bool:
        return self.done and not self.buffer


@dataclass
class _Request:
    message: Message
    op: Group
    name: str
    path_job_id: int | None
    body: _Body
    authorization: str
    scope: Scope
    user: User | None = None
    #: job-hold-until=indefinite in the request's job attributes.
    hold: bool = False


class IppFront:
    """ASGI app: one IPP printer per print service, reached at ``/print/{name}`` under its mount.

    ``https_base()`` and ``ipp_base()`` give ``https://host:port`` and ``ipps://host:port``
    (known only once the server socket is bound).
    """

    def __init__(self, *, store: JobStore, jobs: JobOperations, https_base: Callable[[], str],
                 ipp_base: Callable[[], str], audit: AuditLog | None = None) -> None:
        self.store = store
        #: Where failed logins are recorded (the service's security log).
        self.audit = audit
        self.jobs = jobs
        self.https_base = https_base
        self.ipp_base = ipp_base

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        icon = _ICON.match(_route_path(scope))
        if icon is not None and scope["method"] in ("GET", "HEAD"):
            await _icon(send, int(icon.group(1)), scope["method"] == "HEAD")
            return
        match = _PATH.match(_route_path(scope))
        if match is None:
            await _plain(send, 404, b"no such IPP printer\n")
            return
        if scope["method"] != "POST":
            await _plain(send, 405, b"IPP requests are POSTed with Content-Type application/ipp\n",
                         [(b"allow", b"POST")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/ipp":
            await _plain(send, 415, b"Content-Type must be application/ipp\n")
            return
        body = _Body(receive)
        try:
            message = await body.message()
        except _BodyTooLarge:
            await _plain(send, 413, b"IPP attribute section too large\n", close=True)
            return
        except IppParseError as exc:
            await self._parse_failure(send, body, exc)
            return
        request = _Request(message=message, op=message.group(Tag.OPERATION) or Group(Tag.OPERATION),
                           name=match.group(1), path_job_id=int(match.group(2)) if match.group(2) else None,
                           body=body, authorization=headers.get("authorization", ""), scope=scope)
        try:
            reply = await self._handle(request)
        except NeedAuth:
            await _plain(send, 401, b"authentication required\n",
                         [(b"www-authenticate", f'Basic realm="{REALM}"'.encode())], close=not body.consumed)
            return
        except Exception:
            log.exception("IPP %s on %s failed", _op_name(message.code), request.name)
            reply = response(Status.SERVER_ERROR_INTERNAL_ERROR, message.request_id, _version(message),
                             "internal error")
        await _send_ipp(send, reply.encode(), close=not body.consumed)

    async def _parse_failure(self, send: Send, body: _Body, exc: IppParseError) -> None:
        """A malformed request: an IPP bad-request if the header could be read, else HTTP 400."""
        if len(body.buffer) >= 8:
            request_id = int.from_bytes(body.buffer[4:8], "big", signed=True)
            reply = response(Status.CLIENT_ERROR_BAD_REQUEST, request_id, (1, 1), f"malformed request: {exc}")
            await _send_ipp(send, reply.encode(), close=True)
        else:
            await _plain(send, 400, b"not an IPP request\n", close=True)

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, req: _Request) -> Message:
        msg = req.message
        version = _version(msg)
        try:
            self._check_request(req)
            handler = self._handlers().get(msg.code)
            if handler is None:
                raise IppError(Status.SERVER_ERROR_OPERATION_NOT_SUPPORTED,
                               f"operation 0x{msg.code:04x} is not supported")
            if msg.code != Op.GET_PRINTER_ATTRIBUTES:
                req.user = await self._user(req)
            service = await self._service(req.name)
            reply = await handler(req, service)
        except IppError as exc:
            reply = response(exc.status, msg.request_id, version, exc.message)
            if exc.unsupported:
                group = reply.new_group(Tag.UNSUPPORTED_GROUP)
                for attribute in exc.unsupported:
                    group.attributes[attribute.name] = attribute
        reply.version = version
        return reply

    def _handlers(self) -> dict[int, Callable[[_Request, ServiceRow], Any]]:
        return {
            Op.GET_PRINTER_ATTRIBUTES: self._get_printer_attributes,
            Op.VALIDATE_JOB: self._validate_job,
            Op.PRINT_JOB: self._print_job,
            Op.CREATE_JOB: self._create_job,
            Op.SEND_DOCUMENT: self._send_document,
            Op.CLOSE_JOB: self._close_job,
            Op.CANCEL_JOB: self._cancel_job,
            Op.GET_JOB_ATTRIBUTES: self._get_job_attributes,
            Op.GET_JOBS: self._get_jobs,
            Op.IDENTIFY_PRINTER: self._identify_printer,
            HOLD_JOB: self._hold_job,
            RELEASE_JOB: self._release_job,
            Op.CANCEL_MY_JOBS: self._cancel_my_jobs,
        }

    def _check_request(self, req: _Request) -> None:
        """RFC 8011 4.1: version, request-id, the two first operation attributes, the target."""
        msg = req.message
        if msg.version[0] not in (1, 2):
            raise IppError(Status.SERVER_ERROR_VERSION_NOT_SUPPORTED, f"IPP/{msg.version[0]}.{msg.version[1]} "
                                                                      "is not supported")
        if msg.request_id <= 0:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "request-id must be positive")
        if not msg.groups or msg.groups[0].tag != Tag.OPERATION:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "the operation attributes group must come first")
        names = list(req.op.attributes)
        if names[:2] != ["attributes-charset", "attributes-natural-language"]:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "attributes-charset and attributes-natural-language "
                                                            "must be the first two operation attributes")
        charset = req.op.attributes["attributes-charset"]
        if str(charset.value).lower() not in ("utf-8", "us-ascii"):
            raise IppError(Status.CLIENT_ERROR_CHARSET_NOT_SUPPORTED, "only utf-8 is supported", [charset])
        if "printer-uri" not in req.op and "job-uri" not in req.op:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "printer-uri (or job-uri) is required")

    async def _user(self, req: _Request) -> User:
        user = await user_for(self.store, parse_authorization(req.authorization))
        if user is None:
            if req.authorization:
                client = req.scope.get("client") or ("-", 0)
                log.warning("failed IPP authentication from %s", client[0])
                if self.audit is not None:
                    # The header is not logged, not even in part: only that it failed, from where.
                    self.audit.event("auth-failed", outcome="denied", client=client[0], method="POST",
                                     path=req.scope.get("path", ""),
                                     operation=_op_name(req.message.code),
                                     reason="IPP credentials invalid, expired or revoked")
            raise NeedAuth
        req.scope.setdefault("state", {})["user"] = user.name
        return user

    async def _service(self, name: str) -> ServiceRow:
        row = await self.store.service(ServiceKind.PRINT.value, name)
        if row is None:
            raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no printer named {name!r}")
        return row

    # ------------------------------------------------------------------ URIs

    def printer_uri(self, name: str) -> str:
        return f"{self.ipp_base()}/ipp/print/{name}"

    def job_uri(self, name: str, job_id: int) -> str:
        return f"{self.printer_uri(name)}/{job_id}"

    # ------------------------------------------------------------------ printer operations

    async def _printer_info(self, service: ServiceRow) -> tuple[PrintCapabilities, ia.PrinterInfo]:
        online = revoked = False
        queued = 0
        for svc, dev, count in await self.store.services(ServiceKind.PRINT.value, service.name):
            if svc.id == service.id:
                online, revoked, queued = dev.online, dev.revoked_at is not None, count
        # A revoked device's printer says so and refuses jobs, so CUPS stops retrying.
        status = service_overlay(service.state, service.state_reasons, service.state_message, online, revoked)
        uri = self.printer_uri(service.name)
        caps = parsed_capabilities(service)  # parsed once while unchanged (CUPS polls this)
        base = self.https_base()
        changed = int(service.updated_at or 0)
        supplies = everywhere.reported_supplies(service.supplies)
        info = ia.PrinterInfo(
            name=service.name, uri=uri, more_info=f"{self.https_base()}/api/v1/services/print/{service.name}",
            uuid=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, uri)}", state_enum=status.state.ipp,
            state_reasons=everywhere.printer_state_reasons(status.reasons), state_message=status.message,
            info=service.info,
            location=service.location, make_and_model=service.make_and_model, queued_jobs=queued,
            accepting=status.accepting_jobs,
            max_kbytes=math.ceil(self.jobs.documents.max_bytes / 1024),
            formats=everywhere.document_format_supported(caps), raster_types=everywhere.raster_types(caps),
            raster_resolutions=list(everywhere.RASTER_RESOLUTIONS),
            icons=[f"{base}/ipp/icons/{size}.png" for size in everywhere.ICON_SIZES],
            supplies=everywhere.printer_supplies(supplies),
            supply_info_uri=f"{base}/api/v1/services/print/{service.name}",
            config_change_time=changed, state_change_time=changed, extra=everywhere.marker_attributes(supplies))
        return caps, info

    async def _get_printer_attributes(self, req: _Request, service: ServiceRow) -> Message:
        caps, info = await self._printer_info(service)
        everything = ia.printer_attributes(caps, info, int(time.time()), [int(op) for op in OPERATIONS])
        requested = _keywords(req.op.get("requested-attributes"))
        chosen = ia.select(everything, requested, ia.printer_groups(everything))
        reply = response(Status.OK, req.message.request_id)
        reply.new_group(Tag.PRINTER).attributes.update(chosen)
        return reply

    async def _identify_printer(self, req: _Request, service: ServiceRow) -> Message:
        actions = _keywords(req.op.get("identify-actions")) or ["display"]
        text = simple(req.op.get("message"))
        try:
            message = Identify(actions=actions, message=text if isinstance(text, str) else None)
        except ValidationError as exc:
            raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                           f"identify-actions or message: {exc.errors()[0]['msg']}") from None
        self.jobs.notify(service.device_id, message)
        return response(Status.OK, req.message.request_id)

    # ------------------------------------------------------------------ job creation

    def _ticket(self, req: _Request, service: ServiceRow, document_format: str | None) -> tuple[dict, list[Attribute]]:
        """The checked ticket and what was ignored, honouring ipp-attribute-fidelity."""
        parsed = ia.ticket_from_job_attributes(req.message.group(Tag.JOB))
        originals = dict((req.message.group(Tag.JOB) or Group(Tag.JOB)).attributes)
        job_name = req.op.get("job-name")
        if job_name is not None and isinstance(simple(job_name), str):
            parsed.ticket["job-name"] = simple(job_name)
            originals["job-name"] = job_name
        fidelity = simple(req.op.get("ipp-attribute-fidelity")) is True
        req.hold = parsed.hold
        compression = req.op.get("compression")
        if compression is not None and simple(compression) != "none":
            raise IppError(Status.CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED, "only compression=none is supported",
                           [compression])
        if parsed.unsupported and fidelity:
            raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                           "unsupported job attributes with ipp-attribute-fidelity=true", parsed.unsupported)
        ticket = dict(parsed.ticket)
        ignored = list(parsed.unsupported)
        for _ in range(len(ticket) + 2):
            try:
                self.jobs.check_ticket(service, ticket, document_format)
                return ticket, ignored
            except Refusal as exc:
                where = exc.attribute or ""
                if where == "document-format":
                    fmt = req.op.get("document-format") or ia.attr("document-format", Tag.MIME_TYPE,
                                                                   document_format or "")
                    raise IppError(Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED, exc.message, [fmt]) from None
                original = originals.get(where) or ia.attr(where or "job-template", Tag.UNSUPPORTED_VALUE, None)
                if fidelity or where not in ticket:
                    raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, exc.message,
                                   [original]) from None
                del ticket[where]
                ignored.append(original)
        raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, "the job ticket cannot be honoured")

    def _document_format(self, req: _Request, service: ServiceRow) -> str:
        fmt = simple(req.op.get("document-format"))
        if isinstance(fmt, str) and fmt:
            return fmt.lower()
        return PrintCapabilities.model_validate(service.capabilities).document_format_default

    async def _validate_job(self, req: _Request, service: ServiceRow) -> Message:
        _, ignored = self._ticket(req, service, self._document_format(req, service))
        return _with_unsupported(response(_ok(ignored), req.message.request_id), ignored)

    async def _print_job(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        fmt = self._document_format(req, service)
        ticket, ignored = self._ticket(req, service, fmt)
        if not await req.body.has_data():
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "Print-Job needs document data")
        row = await self._call(self.jobs.create(req.user, ServiceKind.PRINT, service.name, ticket, fmt,
                                                _document_name(req), None))
        if req.hold:
            await self._call(self.jobs.hold(req.user, row.id))
        row = await self._feed(req, row.id, close=True)
        return await self._job_reply(req, row, ignored)

    async def _create_job(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        fmt = simple(req.op.get("document-format"))
        fmt = fmt.lower() if isinstance(fmt, str) and fmt else "application/octet-stream"
        ticket, ignored = self._ticket(req, service, fmt)
        row = await self._call(self.jobs.create(req.user, ServiceKind.PRINT, service.name, ticket, fmt,
                                                _document_name(req), None))
        if req.hold:
            row = await self._call(self.jobs.hold(req.user, row.id))
        return await self._job_reply(req, row, ignored)

    async def _send_document(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        row = await self._job_row(req, service)
        last = req.op.get("last-document")
        if last is None or not isinstance(last.value, bool):
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "last-document (boolean) is required")
        if JobState(row.state).terminal:
            raise IppError(Status.CLIENT_ERROR_NOT_POSSIBLE, f"job {row.id} has ended ({row.state})")
        docs = await self.store.documents(row.id)
        have_document = bool(docs) and docs[0].sha256 is not None
        has_data = await req.body.has_data()
        if have_document:
            if has_data:
                raise IppError(Status.SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED,
                               "a job holds one document")
            if last.value:
                row = await self._call(self.jobs.close(req.user, row.id))
            return await self._job_reply(req, row, [])
        if not has_data:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "Send-Document needs document data")
        given = simple(req.op.get("document-format"))
        if isinstance(given, str) and given:
            fmt = given.lower()
            try:
                self.jobs.check_ticket(service, {}, fmt)
            except Refusal as exc:
                raise IppError(Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED, exc.message,
                               [req.op.attributes["document-format"]]) from None
            values: dict[str, Any] = {"format": fmt}
            name = _document_name(req)
            if name:
                values["name"] = name
            await self.store.set_document(row.id, 1, **values)
        row = await self._feed(req, row.id, close=last.value)
        return await self._job_reply(req, row, [])

    async def _feed(self, req: _Request, job_id: int, close: bool) -> JobRow:
        """Stream the request's document into the job; cancel the job if that fails."""
        assert req.user is not None
        try:
            stored = await self.jobs.store_document(job_id, req.body.chunks())
            if stored.size == 0:
                raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "the document is empty")
        except BaseException as exc:
            with contextlib.suppress(Refusal):
                await self.jobs.cancel(SYSTEM_USER, job_id)
            if isinstance(exc, Refusal):
                raise _ipp_error(exc) from None
            if isinstance(exc, _ClientGone):
                raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, str(exc)) from None
            raise
        if close:
            return await self._call(self.jobs.close(req.user, job_id))
        return await self.store.get_job(job_id)

    async def _close_job(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        row = await self._job_row(req, service)
        return await self._job_reply(req, await self._call(self.jobs.close(req.user, row.id)), [])

    # ------------------------------------------------------------------ job operations

    async def _job_row(self, req: _Request, service: ServiceRow) -> JobRow:
        assert req.user is not None
        job_id = req.path_job_id
        given = req.op.get("job-id")
        if given is not None:
            if not isinstance(given.value, int) or isinstance(given.value, bool):
                raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-id must be an integer", [given])
            job_id = given.value
        elif "job-uri" in req.op:
            found = re.search(r"/([0-9]{1,18})/?$", str(req.op.attributes["job-uri"].value))
            job_id = int(found.group(1)) if found else None
        if job_id is None:
            raise IppError(Status.CLIENT_ERROR_BAD_REQUEST, "job-id (or job-uri) is required")
        row = await self._call(self.jobs.get(req.user, job_id))
        if row.service_name != service.name or row.kind != ServiceKind.PRINT.value:
            raise IppError(Status.CLIENT_ERROR_NOT_FOUND, f"no job {job_id} on printer {service.name}")
        return row

    async def _cancel_job(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        row = await self._job_row(req, service)
        if JobState(row.state).terminal:
            raise IppError(Status.CLIENT_ERROR_NOT_POSSIBLE, f"job {row.id} has already ended ({row.state})")
        await self._call(self.jobs.cancel(req.user, row.id))
        return response(Status.OK, req.message.request_id)

    async def _hold_job(self, req: _Request, service: ServiceRow) -> Message:
        """Hold-Job: job-hold-until (operation attribute) may only be indefinite, its default."""
        assert req.user is not None
        until = req.op.get("job-hold-until")
        if until is not None and simple(until) != "indefinite":
            raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED,
                           "job-hold-until: only indefinite (released by Release-Job)", [until])
        row = await self._job_row(req, service)
        await self._call(self.jobs.hold(req.user, row.id))
        return response(Status.OK, req.message.request_id)

    async def _release_job(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        row = await self._job_row(req, service)
        await self._call(self.jobs.release(req.user, row.id))
        return response(Status.OK, req.message.request_id)

    async def _cancel_my_jobs(self, req: _Request, service: ServiceRow) -> Message:
        """Cancel-My-Jobs (PWG 5100.11): the user's unfinished jobs here, or those of job-ids."""
        assert req.user is not None
        ids = req.op.get("job-ids")
        rows = await self.store.list_jobs(owner=req.user.name, include_ended=False, kind=ServiceKind.PRINT.value,
                                          service=service.name, limit=5000)
        if ids is not None:
            wanted = {v for v in ids.values if isinstance(v, int) and not isinstance(v, bool)}
            found = {r.id for r in rows}
            if wanted - found:
                raise IppError(Status.CLIENT_ERROR_NOT_POSSIBLE, "job-ids names jobs that are not yours, "
                               "not here or ended", [ids])
            rows = [r for r in rows if r.id in wanted]
        for row in rows:
            with contextlib.suppress(Refusal):  # one that ended meanwhile is fine
                await self.jobs.cancel(req.user, row.id)
        return response(Status.OK, req.message.request_id)

    async def _get_job_attributes(self, req: _Request, service: ServiceRow) -> Message:
        row = await self._job_row(req, service)
        info = await self.store.job_info(row)
        everything = self.job_attributes(info)
        requested = _keywords(req.op.get("requested-attributes"))
        reply = response(Status.OK, req.message.request_id)
        reply.new_group(Tag.JOB).attributes.update(ia.select(everything, requested, _job_groups(everything)))
        return reply

    async def _get_jobs(self, req: _Request, service: ServiceRow) -> Message:
        assert req.user is not None
        which_attr = req.op.get("which-jobs")
        which = simple(which_attr) or "not-completed"
        if which not in ("completed", "not-completed", "all"):
            raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, f"which-jobs={which} is not "
                           "supported", [which_attr] if which_attr else None)
        my_jobs = simple(req.op.get("my-jobs")) is True
        limit = simple(req.op.get("limit"))
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 500
        owner = req.user.name if (my_jobs or not req.user.is_admin) else None
        job_ids = req.op.get("job-ids")
        rows = await self.store.list_jobs(owner=owner, include_ended=which != "not-completed" or job_ids is not None,
                                          kind=ServiceKind.PRINT.value, service=service.name, limit=5000)
        if job_ids is not None:  # PWG 5100.11: which-jobs is ignored with job-ids
            wanted = {v for v in job_ids.values if isinstance(v, int) and not isinstance(v, bool)}
            rows = [r for r in rows if r.id in wanted]
        elif which == "completed":
            rows = [r for r in rows if JobState(r.state).terminal]
        elif which == "not-completed":
            rows = sorted(rows, key=lambda r: r.id)  # oldest (next to print) first
        rows = rows[:min(limit, 5000)]
        requested = _keywords(req.op.get("requested-attributes")) or ["job-id", "job-uri"]
        reply = response(Status.OK, req.message.request_id)
        for row in rows:
            info = await self.store.job_info(row, with_history="all" in requested or len(requested) > 2)
            everything = self.job_attributes(info)
            reply.new_group(Tag.JOB).attributes.update(ia.select(everything, requested, _job_groups(everything)))
        return reply

    async def _job_reply(self, req: _Request, row: JobRow, ignored: list[Attribute]) -> Message:
        reply = response(_ok(ignored), req.message.request_id)
        _with_unsupported(reply, ignored)
        group = reply.new_group(Tag.JOB)
        group.add("job-id", Tag.INTEGER, row.id)
        group.add("job-uri", Tag.URI, self.job_uri(row.service_name, row.id))
        group.add("job-state", Tag.ENUM, JobState(row.state).ipp)
        group.add("job-state-reasons", Tag.KEYWORD, list(row.state_reasons) or ["none"])
        if row.state_message:
            group.add("job-state-message", Tag.TEXT, row.state_message[:1023])
        return reply

    def job_attributes(self, job: JobInfo) -> dict[str, Attribute]:
        """Every job attribute we can give, from the same JobInfo the HTTP API returns."""
        processing_at = next((e.at for e in job.history if e.state in (JobState.PROCESSING,
                                                                        JobState.PROCESSING_STOPPED)), None)
        size = sum(d.size or 0 for d in job.documents)
        name = job.ticket.get("job-name") or next((d.name for d in job.documents if d.name), None) or f"job-{job.id}"
        out = [
            ia.attr("job-id", Tag.INTEGER, job.id),
            ia.attr("job-uri", Tag.URI, self.job_uri(job.service, job.id)),
            ia.attr("job-printer-uri", Tag.URI, self.printer_uri(job.service)),
            ia.attr("job-uuid", Tag.URI, job.uuid),
            ia.attr("job-more-info", Tag.URI, f"{self.https_base()}/api/v1/jobs/{job.id}"),
            ia.attr("job-name", Tag.NAME, str(name)[:255]),
            ia.attr("job-originating-user-name", Tag.NAME, job.owner[:255]),
            ia.attr("job-state", Tag.ENUM, job.state.ipp),
            ia.attr("job-state-reasons", Tag.KEYWORD, list(job.state_reasons) or ["none"]),
            *([ia.attr("job-state-message", Tag.TEXT, job.state_message[:1023])] if job.state_message else []),
            ia.attr("job-printer-up-time", Tag.INTEGER, int(time.time())),
            ia.attr("time-at-creation", Tag.INTEGER, int(job.created_at)),
            _time_attr("time-at-processing", processing_at),
            _time_attr("time-at-completed", job.completed_at),
            _date_attr("date-time-at-creation", job.created_at),
            _date_attr("date-time-at-processing", processing_at),
            _date_attr("date-time-at-completed", job.completed_at),
            ia.attr("number-of-documents", Tag.INTEGER, sum(1 for d in job.documents if d.sha256)),
            ia.attr("job-k-octets", Tag.INTEGER, math.ceil(size / 1024)),
            ia.attr("job-impressions-completed", Tag.INTEGER, job.impressions_completed),
            ia.attr("output-device-assigned", Tag.NAME, job.device_id[:127]),
        ]
        held = job.state is JobState.PENDING_HELD and "job-hold-until-specified" in job.state_reasons
        out.append(ia.attr("job-hold-until", Tag.KEYWORD, "indefinite" if held else "no-hold"))
        out.append(ia.attr("job-priority", Tag.INTEGER, 50))
        if job.documents:
            out.append(ia.attr("document-format-supplied", Tag.MIME_TYPE, job.documents[0].format))
        out.extend(a for a in ia.ticket_to_job_attributes(job.ticket) if a.name in _JOB_TEMPLATE_IN_JOB)
        return {a.name: a for a in out}

    @staticmethod
    async def _call(coro: Any) -> Any:
        """Await a JobOperations call, turning its refusals into IPP statuses."""
        try:
            return await coro
        except Refusal as exc:
            raise _ipp_error(exc) from None


# ---------------------------------------------------------------------------- helpers


#: Documents the service took but cannot read or print: the bytes are not what their format says
#: (RFC 8011 client-error-document-format-error), or they cannot be printed on the device
#: (PWG 5100.13 client-error-document-unprintable-error), rather than a format not supported.
_DOCUMENT_ERRORS = {
    "document-format-error": Status.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR,
    "document-unprintable-error": Status.CLIENT_ERROR_DOCUMENT_UNPRINTABLE_ERROR,
}


def _ipp_error(exc: Refusal) -> IppError:
    if exc.status == 404:
        status = Status.CLIENT_ERROR_NOT_FOUND
    elif exc.status == 413:
        status = Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE
    elif exc.status == 409:
        status = Status.CLIENT_ERROR_NOT_POSSIBLE
    elif exc.status in (400, 422) and exc.code in _DOCUMENT_ERRORS:
        status = _DOCUMENT_ERRORS[exc.code]
    elif exc.status in (400, 422):
        status = (Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED if exc.attribute == "document-format"
                  else Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED)
    elif exc.status == 403:
        status = Status.CLIENT_ERROR_NOT_AUTHORIZED
    else:
        status = Status.SERVER_ERROR_INTERNAL_ERROR
    return IppError(status, exc.message)


def _ok(ignored: list[Attribute]) -> Status:
    return Status.OK_IGNORED_OR_SUBSTITUTED if ignored else Status.OK


def _with_unsupported(reply: Message, ignored: list[Attribute]) -> Message:
    if ignored:
        group = reply.new_group(Tag.UNSUPPORTED_GROUP)
        for attribute in ignored:
            group.attributes[attribute.name] = attribute
    return reply


def _keywords(attribute: Attribute | None) -> list[str]:
    if attribute is None:
        return []
    return [v for v in attribute.values if isinstance(v, str)]


def _document_name(req: _Request) -> str | None:
    """document-name, or the document-name-supplied job attribute CUPS sends instead.

    Checked as the wire checks a Name (schemas.text.check_name), and refused rather than cut:
    a name the device protocol cannot carry would make a job no device can ever take.
    """
    attribute = req.op.get("document-name")
    name = simple(attribute)
    if not (isinstance(name, str) and name):
        attribute = (req.message.group(Tag.JOB) or Group(Tag.JOB)).get("document-name-supplied")
        name = simple(attribute)
    if not (isinstance(name, str) and name):
        return None
    try:
        return check_name(name)
    except ValueError as exc:
        raise IppError(Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED, f"document-name: {exc}",
                       [attribute] if attribute is not None else None) from None


def _time_attr(name: str, at: float | None) -> Attribute:
    return ia.attr(name, Tag.INTEGER, int(at)) if at else ia.attr(name, Tag.NO_VALUE, None)


def _date_attr(name: str, at: float | None) -> Attribute:
    if not at:
        return ia.attr(name, Tag.NO_VALUE, None)
    return ia.attr(name, Tag.DATETIME, datetime.fromtimestamp(int(at), UTC))


def _job_groups(attributes: dict[str, Attribute]) -> dict[str, frozenset[str] | None]:
    template = frozenset(k for k in attributes if k in _JOB_TEMPLATE_IN_JOB)
    description = frozenset(attributes) - template
    return {"all": None, "job-template": template, "job-description": description, "job-status": description}


def _route_path(scope: Scope) -> str:
    """The path below the mount point (``/print/NAME``): Starlette keeps the full path."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


def _version(message: Message) -> tuple[int, int]:
    major, minor = message.version
    if major == 2:
        return (2, minor if minor in (0, 1, 2) else 0)
    return (1, 1)


def _op_name(code: int) -> str:
    try:
        return Op(code).name.lower().replace("_", "-")
    except ValueError:
        return f"0x{code:04x}"


async def _icon(send: Send, size: int, head: bool) -> None:
    """printer-icons: PNGs drawn at start (no credentials, like the printer attributes)."""
    if size not in everywhere.ICON_SIZES:
        await _plain(send, 404, b"no such icon\n")
        return
    data = everywhere.icon_png(size)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"max-age=86400")]})
    await send({"type": "http.response.body", "body": b"" if head else data})


async def _send_ipp(send: Send, data: bytes, close: bool) -> None:
    headers = [(b"content-type", b"application/ipp"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _plain(send: Send, status: int, text: bytes, extra: list[tuple[bytes, bytes]] | None = None,
                 close: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode()),
               *(extra or [])]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
