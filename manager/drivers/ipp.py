"""The ``ipp`` driver: a local IPP (Everywhere) printer behind the Manager.

The cloud never talks to the printer; the Manager does, over the LAN, with the same RFC 8010
codec as the cloud's IPP front (cloud_service.ipp):

- **discovery**: Get-Printer-Attributes at start and every ``discover_interval`` seconds;
  the answer becomes the service's capabilities (published to the cloud, which then checks
  tickets against what the printer really does) unless ``discover`` is false;
- **status**: printer-state and printer-state-reasons are polled every ``poll_interval``
  seconds and become the device status (media-empty, media-jam, toner-low...), which the
  Manager reports as the service state and, while a job prints, as processing-stopped;
- **printing**: Create-Job + Send-Document when the printer has them (a cancel can then reach
  the printer while the document is still uploading), else Print-Job; the document is
  streamed from the spool file;
- **following the job**: when the printer offers ``ippget`` notifications (RFC 3995/3996:
  Get-Notifications in operations-supported, ``ippget`` in notify-pull-method-supported), the
  job request carries a job subscription and the driver waits in Get-Notifications with
  notify-wait (a printer that honours it answers only when the job changes; one that answers
  at once is asked again after a short, growing pause); without them, Get-Job-Attributes at a
  short interval that grows from ``follow_interval`` to ``poll_interval`` (most jobs on a
  LAN printer end within a second: a fixed 2 s poll halved the throughput). Either way the
  state is read with Get-Job-Attributes and job-impressions-completed becomes the progress;
- **cancel**: Cancel-Job on the printer's job; a job canceled or aborted at the printer ends
  canceled (job-canceled-at-device) or aborted with the printer's reasons;
- **identify**: Identify-Printer when the printer supports it;
- **supplies**: marker-* or printer-supply, asked for with every status poll and published
  when they change (manager/drivers/ippsupplies.py).

Options: ``uri`` (ipp:// or ipps://), ``username``/``password`` (HTTP Basic, if the printer
asks), ``ca_file`` or ``verify_tls: false`` for ipps:// printers with their own certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import Field, field_validator

from manager.drivers import ippsupplies
from manager.drivers.base import (
    DeviceStatus,
    DocumentTask,
    DriverError,
    DriverOptions,
    PrintCanceled,
    PrintDriver,
    Progress,
)
from schemas.enums import JobState, Reason
from schemas.ipp import attributes as ia
from schemas.ipp.codec import Group, IppParseError, Message, Op, Resolution, Status, Tag, decode, request, simple
from schemas.model.pages import count_pages
from schemas.supplies import Supply
from schemas.tickets import PrintCapabilities

log = logging.getLogger("cloudimaging.manager.ipp")

CHUNK = 256 * 1024
#: What the status poll asks for (small: it runs every few seconds).
STATUS_ATTRIBUTES = ["printer-state", "printer-state-reasons", "printer-state-message", "printer-is-accepting-jobs"]
JOB_ATTRIBUTES = ["job-id", "job-state", "job-state-reasons", "job-state-message", "job-impressions-completed"]
#: printer-state-reasons that do not stop the printer whatever their suffix (a CUPS queue as
#: the printer says cups-waiting-for-job-completed, unsuffixed, while its backend follows a job).
_INFORMATIONAL = frozenset({"none", "identify-printer-requested", "moving-to-paused", "other",
                            "cups-waiting-for-job-completed"})
#: Reason stems that are warnings even without a "-warning" suffix (supplies running low).
_WARNING_ENDINGS = ("-low", "-near-end", "-almost-empty", "-almost-full", "-nearly-full", "-near-limit")
#: Reasons that stop the printer whatever suffix it gives them (printers disagree on
#: severities; ippeveprinter, for one, reports media-jam-warning while it is jammed).
_BLOCKING = frozenset({"media-jam", "media-empty", "media-needed", "door-open", "cover-open", "interlock-open",
                       "input-tray-missing", "output-tray-missing", "output-area-full", "marker-supply-empty",
                       "toner-empty", "marker-waste-full", "paused", "shutdown", "spool-area-full"})
_STATE_STOPPED = 5
_JOB_TERMINAL = {7: JobState.CANCELED, 8: JobState.ABORTED, 9: JobState.COMPLETED}
#: RFC 3995/3996 operations (not in the codec's Op: only this driver asks for them).
_GET_NOTIFICATIONS = 0x001C
#: successful-ok-events-complete: the subscription will have no more events (RFC 3996).
_EVENTS_COMPLETE = 0x0007
#: The job events the driver subscribes to (those the printer supports, if it lists them).
_JOB_EVENTS = ("job-state-changed", "job-progress", "job-completed")


class IppOptions(DriverOptions):
    #: The printer, e.g. ``ipp://printer.local:631/ipp/print`` (``ipps://`` for TLS).
    uri: str
    username: str | None = None
    password: str | None = None
    #: PEM CA for an ipps:// printer; system CAs when absent.
    ca_file: Path | None = None
    #: False accepts any certificate (printers often have self-signed ones). Trusted LANs only.
    verify_tls: bool = True
    #: Take the capabilities from the printer (Get-Printer-Attributes) instead of the config.
    discover: bool = True
    poll_interval: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: How the driver follows a job: ``auto`` takes ippget notifications where the printer has
    #: them, else polls; ``poll`` never subscribes (for printers whose notifications misbehave).
    follow: Literal["auto", "poll"] = "auto"
    #: First pause between two looks at a job; it doubles up to ``poll_interval``.
    follow_interval: Annotated[float, Field(gt=0, le=60)] = 0.05
    #: Longest time the printer may hold a Get-Notifications (notify-wait) before answering.
    notify_wait: Annotated[float, Field(gt=0, le=600)] = 60.0
    discover_interval: Annotated[float, Field(gt=0, le=86400)] = 300.0
    #: Seconds for one request (a document upload may take longer: it has no overall limit).
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Longest wait for the printer to finish one job before it is given up (aborted).
    job_timeout: Annotated[float, Field(gt=0)] = 3600.0
    #: ``auto``: Create-Job + Send-Document if the printer has them, else Print-Job.
    operation: Literal["auto", "print-job", "create-job"] = "auto"
    requesting_user_name: str = "cloudimaging"

    @field_validator("uri")
    @classmethod
    def _ipp_uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ipp", "ipps", "http", "https") or not parts.hostname:
            raise ValueError("uri must look like ipp://host:631/ipp/print")
        return value


class _QuietPolls(logging.Filter):
    """Drop httpx's INFO line for each request to the printer: the status poll would log
    one every few seconds for ever. Failures still show (they are logged here)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and any(str(a) == self.url for a in (record.args or ())
                                                          if not isinstance(record.args, dict)))


class _Unreachable(Exception):
    """The printer did not answer (connection refused, timeout, HTTP error)."""


class IppDriver(PrintDriver):
    kind = "ipp"
    Options = IppOptions
    options: IppOptions

    def __init__(self, name: str, options: dict[str, object], state_dir: Path) -> None:
        super().__init__(name, options, state_dir)
        parts = urlsplit(self.options.uri)
        secure = parts.scheme in ("ipps", "https")
        netloc = parts.netloc if parts.port else f"{parts.netloc}:631"
        self.url = urlunsplit(("https" if secure else "http", netloc, parts.path or "/", "", ""))
        self.printer_uri = urlunsplit(("ipps" if secure else "ipp", netloc, parts.path or "/", "", ""))
        #: Capabilities discovered from the printer (None until discovery succeeds, or disabled).
        self.discovered: PrintCapabilities | None = None
        self.make_and_model: str | None = None
        self.operations: set[int] = set()
        #: The printer's notify-pull-method-supported and notify-events-supported.
        self.notify_pull_methods: set[str] = set()
        self.notify_events: set[str] = set()
        self.identify_actions: list[str] = []
        self._client: httpx.AsyncClient | None = None
        self._request_id = 0
        self._poller: asyncio.Task[None] | None = None
        self._cancel: dict[int, asyncio.Event] = {}
        self._remote: dict[int, int] = {}
        self._last_discovery = float("-inf")
        #: The printer's supplies (marker-* / printer-supply), read with every status poll.
        self.supplies: tuple[Supply, ...] = ()
        self._raw_supplies: object = None

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        verify: Any = True
        if self.url.startswith("https"):
            if not self.options.verify_tls:
                verify = False
            elif self.options.ca_file:
                verify = ssl.create_default_context(cafile=str(self.options.ca_file))
        auth = (httpx.BasicAuth(self.options.username or self.options.requesting_user_name, self.options.password)
                if self.options.password else None)
        self._client = httpx.AsyncClient(verify=verify, auth=auth, timeout=self.options.timeout,
                                         headers={"Content-Type": "application/ipp"})
        self._quiet = _QuietPolls(self.url)
        logging.getLogger("httpx").addFilter(self._quiet)
        try:
            await asyncio.wait_for(self._refresh(full=True), timeout=min(10.0, self.options.timeout))
        except (TimeoutError, _Unreachable, IppParseError) as exc:
            log.warning("printer %s not reachable at start (%s); will keep trying", self.printer_uri, exc)
            self.set_status(DeviceStatus(stopped=True, reasons=("connecting-to-device",),
                                         message=f"cannot reach the printer at {self.printer_uri}"))
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name=f"ipp-poll-{self.name}")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        if self._client is not None:
            await self._client.aclose()
            logging.getLogger("httpx").removeFilter(self._quiet)

    # ------------------------------------------------------------------ talking IPP

    def _new(self, op: int) -> Message:
        self._request_id = self._request_id % 0x7FFFFFFF + 1
        msg = request(op, self._request_id, (2, 0))
        group = msg.operation()
        group.add("printer-uri", Tag.URI, self.printer_uri)
        group.add("requesting-user-name", Tag.NAME, self.options.requesting_user_name)
        return msg

    async def _send(self, msg: Message, document: AsyncIterator[bytes] | None = None,
                    timeout: float | None = None) -> Message:
        assert self._client is not None, "open() first"
        header = msg.encode()
        content: Any = header
        if document is not None:
            async def stream() -> AsyncIterator[bytes]:
                yield header
                async for chunk in document:
                    yield chunk

            content = stream()
        try:
            reply = await self._client.post(self.url, content=content,
                                            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
        if reply.status_code != 200:
            raise _Unreachable(f"HTTP {reply.status_code}")
        message, _ = decode(reply.content)
        return message

    async def _refresh(self, full: bool) -> None:
        """Get-Printer-Attributes: the status always, the capabilities on ``full``."""
        msg = self._new(Op.GET_PRINTER_ATTRIBUTES)
        if not full:
            msg.operation().add("requested-attributes", Tag.KEYWORD,
                                STATUS_ATTRIBUTES + ippsupplies.SUPPLY_ATTRIBUTES)
        reply = await self._send(msg)
        if reply.code >= 0x100:
            raise _Unreachable(f"Get-Printer-Attributes: status 0x{reply.code:04x}")
        group = reply.group(Tag.PRINTER) or Group(Tag.PRINTER)
        if full:
            self._learn(group)
            self._last_discovery = asyncio.get_running_loop().time()
        changed_caps = False
        if full and self.options.discover:
            caps = with_raster_details(ia.capabilities_from_printer(group), group)
            changed_caps = caps != self.discovered
            self.discovered = caps
        changed_supplies = self._read_supplies(group)
        status = printer_status(group)
        if (changed_caps or changed_supplies) and status == self.status:
            self._announce()
        self.set_status(status)

    def _read_supplies(self, group: Group) -> bool:
        """Take the printer's supplies from an answer (parsed only when it changed); True if
        they changed, so the Manager publishes them."""
        raw = ippsupplies.raw_supplies(group)
        if raw == self._raw_supplies:
            return False
        self._raw_supplies = raw
        supplies = ippsupplies.supplies_from_printer(group)
        changed, self.supplies = supplies != self.supplies, supplies
        return changed

    def _learn(self, group: Group) -> None:
        ops = group.get("operations-supported")
        self.operations = {int(v) for v in ops.values if isinstance(v, int)} if ops else set()
        model = simple(group.get("printer-make-and-model"))
        self.make_and_model = model if isinstance(model, str) else None
        methods = group.get("notify-pull-method-supported")
        self.notify_pull_methods = {v for v in methods.values if isinstance(v, str)} if methods else set()
        events = group.get("notify-events-supported")
        self.notify_events = {v for v in events.values if isinstance(v, str)} if events else set()
        actions = group.get("identify-actions-supported")
        self.identify_actions = [v for v in actions.values if isinstance(v, str)] if actions else []

    def _announce(self) -> None:
        """Tell the Manager something it publishes changed (capabilities, supplies), status or not."""
        for listener in list(self._listeners):
            listener(self.status)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.poll_interval)
            full = (self.discovered is None and self.options.discover) or (
                loop.time() - self._last_discovery >= self.options.discover_interval)
            try:
                await self._refresh(full=full)
            except (_Unreachable, IppParseError) as exc:
                log.debug("printer %s: %s", self.printer_uri, exc)
                self.set_status(DeviceStatus(stopped=True, reasons=("connecting-to-device",),
                                             message=f"cannot reach the printer at {self.printer_uri}"))
            except Exception:
                log.exception("printer %s: status poll failed", self.printer_uri)

    # ------------------------------------------------------------------ printing

    async def print_document(self, task: DocumentTask, path: Path, progress: Progress) -> int:
        job_id = task.job.job_id
        canceled = self._cancel.setdefault(job_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.job_timeout
        use_create = (self.options.operation == "create-job" or
                      (self.options.operation == "auto" and {Op.CREATE_JOB, Op.SEND_DOCUMENT} <= self.operations))
        remote, subscription = await self._submit(task, path, canceled, use_create, deadline,
                                                  self._subscribes())
        self._remote[job_id] = remote
        log.info("job %d: printer job %d at %s, followed by %s", job_id, remote, self.printer_uri,
                 f"notifications (subscription {subscription})" if subscription else "polling")
        last = 0
        sequence = 1
        pause = self.options.follow_interval
        while True:
            if canceled.is_set():
                await self._cancel_remote(remote)
                raise PrintCanceled(f"job {job_id} canceled")
            if loop.time() > deadline:
                await self._cancel_remote(remote)
                raise DriverError(f"the printer did not finish within {self.options.job_timeout:.0f} s")
            try:
                attrs = await self._job_attributes(remote)
            except (_Unreachable, IppParseError) as exc:
                log.info("job %d: printer not answering (%s)", job_id, exc)
                attrs = None
            if attrs is not None:
                impressions = simple(attrs.get("job-impressions-completed"))
                if isinstance(impressions, int) and impressions > last:
                    last = impressions
                    progress(last)
                    pause = self.options.follow_interval  # the job moves: look again soon
                state = simple(attrs.get("job-state"))
                if state in _JOB_TERMINAL:
                    return await self._ended(task, path, attrs, _JOB_TERMINAL[state], last, progress)
            if subscription is not None:
                try:
                    answer = await self._race(self._notifications(subscription, sequence), canceled)
                except PrintCanceled:
                    continue  # canceled while the printer held the request: cancel at the top
                except (_Unreachable, IppParseError) as exc:
                    log.info("job %d: Get-Notifications failed (%s)", job_id, exc)
                    answer = (sequence, False)
                if answer is None:
                    log.info("job %d: subscription %d ended; polling the job", job_id, subscription)
                    subscription = None
                else:
                    sequence, notified = answer
                    if notified:  # an event: read the job now
                        pause = self.options.follow_interval
                        continue
            await _wait(canceled, pause)
            pause = min(pause * 2, max(self.options.poll_interval, self.options.follow_interval))

    def _subscribes(self) -> bool:
        """Whether job requests carry an ippget job subscription (RFC 3995 5.3, RFC 3996)."""
        return (self.options.follow == "auto" and _GET_NOTIFICATIONS in self.operations
                and "ippget" in self.notify_pull_methods)

    async def _notifications(self, subscription: int, sequence: int) -> tuple[int, bool] | None:
        """Get-Notifications with notify-wait: (next sequence number, whether events came), or
        None when the subscription has ended or the printer no longer knows it."""
        msg = self._new(_GET_NOTIFICATIONS)
        op = msg.operation()
        op.add("notify-subscription-ids", Tag.INTEGER, subscription)
        op.add("notify-sequence-numbers", Tag.INTEGER, sequence)
        op.add("notify-wait", Tag.BOOLEAN, True)
        reply = await self._send(msg, timeout=self.options.notify_wait + self.options.timeout)
        if reply.code >= 0x100:
            if reply.code in (Status.CLIENT_ERROR_NOT_FOUND, Status.CLIENT_ERROR_GONE,
                              Status.CLIENT_ERROR_NOT_POSSIBLE, Status.CLIENT_ERROR_BAD_REQUEST):
                return None
            raise _Unreachable(f"Get-Notifications: {_status_name(reply.code)}")
        numbers = [n for g in reply.groups_of(Tag.EVENT_NOTIFICATION)
                   if isinstance(n := simple(g.get("notify-sequence-number")), int)]
        if numbers:
            sequence = max(sequence, max(numbers) + 1)
        if reply.code == _EVENTS_COMPLETE and not numbers:
            return None
        return sequence, bool(numbers)

    async def _submit(self, task: DocumentTask, path: Path, canceled: asyncio.Event, use_create: bool,
                      deadline: float, subscribe: bool) -> tuple[int, int | None]:
        """Send the job to the printer: its job id and the job subscription's id (None without
        one). Retries while the printer is busy or away."""
        ticket = task.job.ticket.wire()
        while True:
            if canceled.is_set():
                raise PrintCanceled(f"job {task.job.job_id} canceled")
            try:
                if use_create:
                    return await self._create_and_send(task, path, ticket, canceled, subscribe)
                reply = await self._race(self._send(self._job_request(Op.PRINT_JOB, task, ticket,
                                                                      subscribe=subscribe),
                                                    _file_chunks(path)), canceled)
                return self._job_id(reply, "Print-Job"), _subscription_id(reply)
            except _Busy as exc:
                reason = str(exc)
            except _Unreachable as exc:
                reason = str(exc)
                self.set_status(DeviceStatus(stopped=True, reasons=("connecting-to-device",),
                                             message=f"cannot reach the printer at {self.printer_uri}"))
            if asyncio.get_running_loop().time() > deadline:
                raise DriverError(f"the printer did not take the job: {reason}")
            log.info("job %d: printer not ready (%s); retrying", task.job.job_id, reason)
            await _wait(canceled, max(self.options.poll_interval, 1.0))

    async def _create_and_send(self, task: DocumentTask, path: Path, ticket: dict[str, Any],
                               canceled: asyncio.Event, subscribe: bool) -> tuple[int, int | None]:
        reply = await self._send(self._job_request(Op.CREATE_JOB, task, ticket, with_document=False,
                                                   subscribe=subscribe))
        remote = self._job_id(reply, "Create-Job")
        subscription = _subscription_id(reply)
        msg = self._new(Op.SEND_DOCUMENT)
        op = msg.operation()
        op.add("job-id", Tag.INTEGER, remote)
        op.add("last-document", Tag.BOOLEAN, True)
        self._document_attributes(op, task)
        try:
            reply = await self._race(self._send(msg, _file_chunks(path)), canceled)
        except PrintCanceled:
            await self._cancel_remote(remote)
            raise
        except _Unreachable:
            with contextlib.suppress(_Unreachable, IppParseError):
                await self._cancel_remote(remote)
            raise
        _check(reply, "Send-Document")
        return remote, subscription

    def _job_request(self, op: int, task: DocumentTask, ticket: dict[str, Any], with_document: bool = True,
                     subscribe: bool = False) -> Message:
        msg = self._new(op)
        group = msg.operation()
        group.add("job-name", Tag.NAME, str(ticket.get("job-name") or task.document_name or
                                            f"cloudimaging job {task.job.job_id}")[:255])
        group.add("ipp-attribute-fidelity", Tag.BOOLEAN, False)
        if with_document:
            self._document_attributes(group, task)
        job = msg.new_group(Tag.JOB)
        for attribute in ia.ticket_to_job_attributes(ticket):
            job.attributes[attribute.name] = attribute
        if not job.attributes:
            msg.groups.remove(job)
        if subscribe:  # a job subscription, pulled with Get-Notifications (RFC 3995 5.3, 3996)
            events = [e for e in _JOB_EVENTS if not self.notify_events or e in self.notify_events]
            subscription = msg.new_group(Tag.SUBSCRIPTION)
            subscription.add("notify-pull-method", Tag.KEYWORD, "ippget")
            subscription.add("notify-events", Tag.KEYWORD, events or ["job-state-changed"])
        return msg

    def _document_attributes(self, group: Group, task: DocumentTask) -> None:
        if task.document_name:
            group.add("document-name", Tag.NAME, task.document_name[:255])
        fmt = task.document_format
        if self.discovered is not None and fmt not in self.discovered.document_format_supported \
                and "application/octet-stream" in self.discovered.document_format_supported:
            fmt = "application/octet-stream"
        group.add("document-format", Tag.MIME_TYPE, fmt)

    @staticmethod
    def _job_id(reply: Message, what: str) -> int:
        _check(reply, what)
        job = reply.group(Tag.JOB)
        value = simple(job.get("job-id")) if job else None
        if not isinstance(value, int):
            raise DriverError(f"{what}: the printer returned no job-id")
        return value

    @staticmethod
    async def _race(coro: Any, canceled: asyncio.Event) -> Any:
        """Run a request unless the job is canceled first (then abandon it: PrintCanceled)."""
        request_task = asyncio.ensure_future(coro)
        cancel_task = asyncio.ensure_future(canceled.wait())
        try:
            await asyncio.wait({request_task, cancel_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel_task.cancel()
        if not request_task.done():
            request_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await request_task
            raise PrintCanceled("canceled during the upload")
        return request_task.result()

    async def _job_attributes(self, remote: int) -> Group | None:
        msg = self._new(Op.GET_JOB_ATTRIBUTES)
        msg.operation().add("job-id", Tag.INTEGER, remote)
        msg.operation().add("requested-attributes", Tag.KEYWORD, JOB_ATTRIBUTES)
        reply = await self._send(msg)
        if reply.code == Status.CLIENT_ERROR_NOT_FOUND:
            raise DriverError(f"the printer lost its job {remote}")
        _check(reply, "Get-Job-Attributes")
        return reply.group(Tag.JOB)

    async def _ended(self, task: DocumentTask, path: Path, attrs: Group, state: JobState, impressions: int,
                     progress: Progress) -> int:
        reasons = [r for r in attrs.get("job-state-reasons").values if isinstance(r, str)] \
            if attrs.get("job-state-reasons") else []
        message = simple(attrs.get("job-state-message"))
        message = message if isinstance(message, str) and message else None
        if state is JobState.COMPLETED:
            if impressions == 0:  # the printer does not count: estimate as the file driver does
                impressions = await asyncio.to_thread(count_pages, path, task.document_format) * task.job.copies
                progress(impressions)
            return impressions
        if state is JobState.CANCELED:
            raise PrintCanceled(message or "canceled at the printer")
        keep = tuple(r for r in reasons if r not in ("none", "job-completed-with-errors", "aborted-by-system"))
        raise DriverError(message or "the printer aborted the job", (Reason.ABORTED_BY_SYSTEM, *keep))

    async def _cancel_remote(self, remote: int) -> None:
        msg = self._new(Op.CANCEL_JOB)
        msg.operation().add("job-id", Tag.INTEGER, remote)
        try:
            reply = await self._send(msg)
        except (_Unreachable, IppParseError) as exc:
            log.warning("printer job %d: Cancel-Job not delivered (%s)", remote, exc)
            return
        if reply.code >= 0x100 and reply.code != Status.CLIENT_ERROR_NOT_POSSIBLE:
            log.warning("printer job %d: Cancel-Job refused (0x%04x)", remote, reply.code)

    def cancel(self, job_id: int) -> None:
        self._cancel.setdefault(job_id, asyncio.Event()).set()

    async def end_job(self, job_id: int, state: JobState) -> None:
        self._cancel.pop(job_id, None)
        self._remote.pop(job_id, None)

    async def identify(self, actions: Sequence[str], message: str | None) -> None:
        if Op.IDENTIFY_PRINTER not in self.operations:
            log.info("printer %s has no Identify-Printer", self.printer_uri)
            return
        msg = self._new(Op.IDENTIFY_PRINTER)
        wanted = [a for a in actions if not self.identify_actions or a in self.identify_actions]
        if wanted:
            msg.operation().add("identify-actions", Tag.KEYWORD, wanted)
        if message:
            msg.operation().add("message", Tag.TEXT, message[:127])
        try:
            _check(await self._send(msg), "Identify-Printer")
        except (_Unreachable, IppParseError, DriverError) as exc:
            log.warning("printer %s: identify failed: %s", self.printer_uri, exc)


class _Busy(_Unreachable):
    """The printer answered server-error-busy / not-accepting-jobs: try again later."""


def _check(reply: Message, what: str) -> None:
    if reply.code < 0x100:
        return
    if reply.code in (Status.SERVER_ERROR_BUSY, Status.SERVER_ERROR_NOT_ACCEPTING_JOBS,
                      Status.SERVER_ERROR_SERVICE_UNAVAILABLE, Status.SERVER_ERROR_TEMPORARY_ERROR):
        raise _Busy(f"{what}: {_status_name(reply.code)}")
    text = simple(reply.operation().get("status-message"))
    detail = f" ({text})" if isinstance(text, str) and text else ""
    reason = Reason.ABORTED_BY_SYSTEM
    if reply.code == Status.CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED:
        reason = Reason.UNSUPPORTED_DOCUMENT_FORMAT
    elif reply.code == Status.CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED:
        reason = Reason.UNSUPPORTED_ATTRIBUTES
    elif reply.code in (Status.CLIENT_ERROR_DOCUMENT_FORMAT_ERROR, Status.CLIENT_ERROR_COMPRESSION_ERROR):
        reason = Reason.DOCUMENT_FORMAT_ERROR
    reasons = (Reason.ABORTED_BY_SYSTEM,) if reason == Reason.ABORTED_BY_SYSTEM else (Reason.ABORTED_BY_SYSTEM, reason)
    raise DriverError(f"{what} refused by the printer: {_status_name(reply.code)}{detail}", reasons)


def _subscription_id(reply: Message) -> int | None:
    """The notify-subscription-id the printer gave the job's subscription, if it made one."""
    group = reply.group(Tag.SUBSCRIPTION)
    value = simple(group.get("notify-subscription-id")) if group else None
    return value if isinstance(value, int) else None


def _status_name(code: int) -> str:
    try:
        return Status(code).keyword
    except ValueError:
        return f"0x{code:04x}"


def printer_status(group: Group) -> DeviceStatus:
    """printer-state and printer-state-reasons as the Manager's DeviceStatus.

    RFC 8011 5.4.12: a reason without a severity suffix is an error; the printer is taken as
    stopped on printer-state stopped, on any error, and on reasons that block printing
    whatever their suffix (media-jam...). Suffixes are stripped (the cloud shows
    ``media-empty``, not ``media-empty-error``) except in ``offline-report``, the keyword the
    cloud itself uses; supply ``*-low`` stems are warnings.
    """
    state = simple(group.get("printer-state"))
    raw = group.get("printer-state-reasons")
    reasons: list[str] = []
    blocking = state == _STATE_STOPPED
    for value in raw.values if raw else []:
        if not isinstance(value, str) or value == "none":
            continue
        stem, severity = value, "error"
        for suffix in ("-error", "-warning", "-report"):
            if value.endswith(suffix):
                severity = suffix[1:]
                stem = value if value == Reason.OFFLINE else value.removesuffix(suffix)
                break
        else:
            if stem.endswith(_WARNING_ENDINGS):
                severity = "warning"
        if (severity == "error" and stem not in _INFORMATIONAL) or stem in _BLOCKING:
            blocking = True
        if stem not in reasons:
            reasons.append(stem)
    message = simple(group.get("printer-state-message"))
    message = message[:1000] if isinstance(message, str) and message else None
    if not reasons and blocking:
        reasons = ["other"]
    return DeviceStatus(stopped=blocking, reasons=tuple(reasons), message=message if blocking or reasons else None)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def with_raster_details(caps: PrintCapabilities, group: Group) -> PrintCapabilities:
    """The printer's PWG raster resolutions and back-side orientation (PWG 5100.14), which the
    service needs to transform documents into the raster this printer takes."""
    extra: dict[str, object] = {}
    found = group.get("pwg-raster-document-resolution-supported")
    dpis = sorted({v.x for v in (found.values if found else [])
                   if isinstance(v, Resolution) and v.x == v.y and v.units == 3 and 72 <= v.x <= 2400})
    if dpis:
        extra["pwg_raster_document_resolution_supported"] = dpis
    back = simple(group.get("pwg-raster-document-sheet-back"))
    if isinstance(back, str) and back in ("normal", "flipped", "rotated", "manual-tumble"):
        extra["pwg_raster_document_sheet_back"] = back
    return caps.model_copy(update=extra) if extra else caps
