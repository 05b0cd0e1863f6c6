"""CLI verbs for Cloud Scan and Cloud Fax: ``scanners``, ``scan``, ``faxes``, ``fax``.

Added to ``cloudimaging`` by client.cli (``VERB_MODULES``). ``scan`` creates a scan job,
follows it (one line per change on stderr), then downloads the output through the service:
one file, or for several documents (one image per page) ``OUT`` numbered ``name-1.png``,
``name-2.png``... Exit codes as for ``print --wait``: 0 completed, 1 aborted (the reason is
printed), 2 canceled. ``fax --wait`` exits 0 only when every destination was sent.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from client.api import CloudImagingClient
from client.cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    choose_service,
    cmd_services,
    config_for,
    connection_options,
    emit_json,
    err,
    exit_code_for,
    naming,
    out,
)
from client.errors import ApiError, ClientError
from client.progress import ProgressBar
from client.render import request_id, state_line
from schemas.api import JobInfo
from schemas.enums import JobState, ServiceKind
from schemas.tickets import TEL_URI_PATTERN

#: ``--input-source`` choices: the PWG input-source, plus ``adf-duplex`` for both sides.
INPUT_SOURCES = {"platen": ("platen", None), "adf": ("adf", "one-sided"),
                 "adf-duplex": ("adf", "two-sided-long-edge")}
FORMAT_BY_SUFFIX = {".pdf": "application/pdf", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
#: Named fax resolutions (ITU-T T.4) for ``fax --resolution``.
FAX_RESOLUTIONS = {"standard": (204, 98), "fine": (204, 196), "superfine": (204, 392)}


def scan_ticket(args: argparse.Namespace) -> dict[str, Any]:
    """The scan ticket from the flags; the format from ``--format`` or OUT's suffix."""
    ticket: dict[str, Any] = {}
    if args.input_source:
        source, sides = INPUT_SOURCES[args.input_source]
        ticket["input-source"] = source
        if sides:
            ticket["input-sides"] = sides
    if args.resolution:
        ticket["input-resolution"] = args.resolution
    if args.color_mode:
        ticket["input-color-mode"] = args.color_mode
    if args.media:
        ticket["input-media"] = args.media
    fmt = args.document_format or FORMAT_BY_SUFFIX.get(Path(args.output).suffix.lower())
    if fmt:
        ticket["document-format"] = fmt
    return ticket


def output_paths(out: str, count: int) -> list[Path]:
    """Where each output document goes: OUT itself, or OUT numbered when there are several."""
    path = Path(out)
    if count <= 1:
        return [path]
    return [path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(1, count + 1)]


def _follow(client: Any, job: JobInfo, quiet: bool) -> JobInfo:
    shown: list[str] = []

    def show(info: JobInfo) -> None:
        line = state_line(info)
        if not quiet and line not in shown[-1:]:
            shown.append(line)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return client.wait(job.id, on_change=show)


def cmd_scan(args: argparse.Namespace) -> int:
    """Scan (create the job, follow it, download the output)."""
    ticket = scan_ticket(args)
    config = config_for(args)
    with CloudImagingClient.from_config(config) as client:
        chosen = choose_service(client, config, ServiceKind.SCAN, args.scanner)
        try:
            job = client.scan(ticket, service=chosen.name)
        except ApiError as exc:
            raise naming(chosen, ServiceKind.SCAN, exc) from None
        if not args.json:
            on = chosen.describe(ServiceKind.SCAN)
            sys.stderr.write(f"request id is {request_id(job)} (scanning on {on})\n")
        try:
            final = _follow(client, job, args.json)
        except KeyboardInterrupt:
            err(f"stopped waiting; scan job {request_id(job)} was not canceled")
            return EXIT_INTERRUPTED
        if final.state is not JobState.COMPLETED:
            why = final.state_message or ", ".join(final.state_reasons)
            err(f"error: scan {request_id(final)} {final.state}: {why}")
            if args.json:
                emit_json(final)
            return exit_code_for(final.state)
        docs = sorted(final.documents, key=lambda d: d.number)
        if not docs:
            raise ClientError(f"scan {request_id(final)} completed without output")
        written = []
        for doc, path in zip(docs, output_paths(args.output, len(docs)), strict=True):
            bar = ProgressBar.for_stream(sys.stderr, f"downloading {path.name}")
            try:
                size = client.download(final.id, doc.number, path, progress=bar)
            finally:
                if bar is not None:
                    bar.finish()
            written.append({"path": str(path), "size": size, "format": doc.format})
    if args.json:
        emit_json({"job": final, "files": written})
    else:
        for item in written:
            out(f"{item['path']} ({item['format']}, {item['size']} bytes)")
    return EXIT_OK


def tel_uri(text: str) -> str:
    """``--to`` value: a tel: URI, or a bare number that becomes one."""
    uri = text if text.startswith("tel:") else f"tel:{text}"
    if not re.fullmatch(TEL_URI_PATTERN.strip("^$"), uri):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fax number (e.g. tel:+15551234567)")
    return uri


def fax_resolution(text: str) -> tuple[int, int]:
    if text in FAX_RESOLUTIONS:
        return FAX_RESOLUTIONS[text]
    match = re.fullmatch(r"(\d{2,4})x(\d{2,4})", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use standard, fine, superfine or XxY in dpi")
    return int(match.group(1)), int(match.group(2))


def cmd_fax(args: argparse.Namespace) -> int:
    """Send a document to one or more fax numbers."""
    if not os.path.isfile(args.file):
        raise ClientError(f"{args.file}: {'not a regular file' if os.path.exists(args.file) else 'no such file'}")
    ticket: dict[str, Any] = {"destination-uris": [{"destination-uri": uri} for uri in args.to]}
    if args.resolution:
        ticket["printer-resolution"] = list(args.resolution)
    if args.retries is not None:
        ticket["number-of-retries"] = args.retries
    if args.title:
        ticket["job-name"] = args.title
    config = config_for(args)
    with CloudImagingClient.from_config(config) as client:
        chosen = choose_service(client, config, ServiceKind.FAXOUT, args.fax)
        bar = ProgressBar.for_stream(sys.stderr, f"uploading {os.path.basename(args.file)}")
        try:
            job = client.submit(args.file, ticket, service=chosen.name, kind=ServiceKind.FAXOUT,
                                document_format=args.document_format, progress=bar)
        except ApiError as exc:
            raise naming(chosen, ServiceKind.FAXOUT, exc) from None
        finally:
            if bar is not None:
                bar.finish()
        if not args.json:
            on = chosen.describe(ServiceKind.FAXOUT)
            out(f"request id is {request_id(job)} (to {', '.join(args.to)}) on {on}")
        if not args.wait:
            if args.json:
                emit_json(job)
            return EXIT_OK
        try:
            final = _follow(client, job, args.json)
        except KeyboardInterrupt:
            err(f"stopped waiting; fax job {request_id(job)} was not canceled")
            return EXIT_INTERRUPTED
    if args.json:
        emit_json(final)
    else:
        for status in final.destination_statuses or []:
            why = ", ".join(status.get("transmission-status-reasons") or [])
            out(f"{status.get('destination-uri')}: {status.get('transmission-status')}"
                 f"{f' ({why})' if why else ''}, {status.get('images-completed', 0)} page(s)")
    statuses = final.destination_statuses or []
    if final.state is JobState.COMPLETED and any(s.get("transmission-status") != "completed" for s in statuses):
        return EXIT_ERROR
    return exit_code_for(final.state)


def add_parser(sub: Any) -> None:
    common = [connection_options(top=False)]

    p = sub.add_parser("scanners", parents=common, help="list scan services")
    p.add_argument("names", nargs="*", metavar="SCANNER", help="only these services")
    p.add_argument("-l", "--long", action="store_true", help="long form with capabilities")
    p.set_defaults(func=cmd_services, kind=ServiceKind.SCAN.value)

    p = sub.add_parser("faxes", parents=common, help="list fax (faxout) services")
    p.add_argument("names", nargs="*", metavar="FAX", help="only these services")
    p.add_argument("-l", "--long", action="store_true", help="long form with capabilities")
    p.set_defaults(func=cmd_services, kind=ServiceKind.FAXOUT.value)

    p = sub.add_parser("scan", parents=common, help="scan to a file (PDF, JPEG or PNG)")
    p.add_argument("-s", "--scanner", help="scan service (default: `cloudimaging default`, else the only one)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="file to write; several images become OUT-1.png, OUT-2.png, ...")
    p.add_argument("--resolution", type=int, metavar="DPI", help="input-resolution in dpi")
    p.add_argument("--color-mode", metavar="MODE", help="input-color-mode: color, monochrome, bi-level")
    p.add_argument("--input-source", choices=list(INPUT_SOURCES), help="platen, adf or adf-duplex")
    p.add_argument("--media", metavar="SIZE", help="input-media, e.g. iso_a4_210x297mm")
    p.add_argument("--format", dest="document_format", metavar="TYPE",
                   help="application/pdf, image/jpeg or image/png (default: from OUT's suffix)")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("fax", parents=common, help="fax a file to one or more numbers")
    p.add_argument("file", metavar="FILE", help="document to send (PDF, JPEG, PNG or text)")
    p.add_argument("--to", action="append", type=tel_uri, required=True, metavar="tel:NUMBER",
                   help="destination, e.g. tel:+15551234567 (repeatable)")
    p.add_argument("-f", "--fax", help="fax service (default: `cloudimaging default`, else the only one)")
    p.add_argument("--resolution", type=fax_resolution, help="standard (204x98), fine (204x196), superfine")
    p.add_argument("--retries", type=int, metavar="N", help="number-of-retries on busy or no answer")
    p.add_argument("-t", "--title", help="job name")
    p.add_argument("--format", dest="document_format", metavar="TYPE", help="MIME type (default: detected)")
    p.add_argument("--wait", action="store_true", help="follow the job; exit 0 only if every destination got it")
    p.set_defaults(func=cmd_fax)


__all__ = ["UsageError", "add_parser"]
