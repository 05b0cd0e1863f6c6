"""The ``cloudimaging`` command: print, list and cancel in the habits of lp, lpstat and cancel.

``main(argv)`` returns the exit code and writes only to ``sys.stdout``/``sys.stderr``, so it
runs in-process in tests; only the console entry point turns the code into ``sys.exit``.
The client's own verb modules (manage_cli, scan_cli) are imported here; the other packages
(broker, manager, cloud_service) add their verbs as plug-ins when installed. Each module has
an ``add_parser(subparsers)`` hook, and each verb sets ``func(args) -> int``.

Exit codes: 0 success; 1 error (refused, not found, unreachable, not configured); 2 usage
(bad flags or ``-o`` values); 130 interrupted. ``print --wait`` / ``status --wait`` end with
the job's fate: 0 completed, 1 aborted, 2 canceled.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from client import default_cli, manage_cli, scan_cli
from client.api import CloudImagingClient
from client.cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliParser,
    ParserExit,
    UsageError,
    about_job,
    choose_service,
    client_for,
    cmd_services,
    config_for,
    connection_options,
    emit_json,
    err,
    exit_code_for,
    naming,
    out,
    parse_job_ref,
    positive,
)
from client.errors import ApiError, ClientError
from client.options import OptionError, build_ticket
from client.progress import ProgressBar
from client.render import job_status, jobs_table, request_id, state_line
from schemas.api import JobInfo
from schemas.enums import JobState, Reason, ServiceKind
from schemas.text import check_mime

#: The client's own verb modules, each with ``add_parser(subparsers)``.
VERB_MODULES = (manage_cli, scan_cli, default_cli)

#: Verbs of the other packages, loaded by name: a device-only or client-only install may lack
#: a package, and then its verbs are simply not there. Any other import failure is an error.
PLUGINS = ("broker.cli", "manager.cli", "cloud_service.cli")


def _wait(client: CloudImagingClient, job: JobInfo, args: argparse.Namespace) -> int:
    """Follow a job to its end; Ctrl-C stops following and leaves the job alone."""
    shown: list[str] = []

    def show(info: JobInfo) -> None:
        line = state_line(info)
        if not args.json and line not in shown[-1:]:  # a new version may look the same
            shown.append(line)
            out(line)

    try:
        final = client.wait(job.id, on_change=show)
    except KeyboardInterrupt:
        err(f"stopped waiting; job {request_id(job)} was not canceled")
        return EXIT_INTERRUPTED
    if args.json:
        emit_json(final)
    return exit_code_for(final.state)


def _read_document(path: str) -> tuple[bytes | str, str | None]:
    if path == "-":
        return sys.stdin.buffer.read(), "(stdin)"
    return path, None


def _submit(client: CloudImagingClient, args: argparse.Namespace, ticket: dict[str, Any], printer: str,
            document_format: str | None, by_reference: bool) -> JobInfo:
    """Send the document (or its URL) to ``printer``, with an upload progress bar on a terminal."""
    if by_reference:
        return client.submit_uri(args.file, ticket, service=printer, document_format=document_format)
    document, name = _read_document(args.file)
    bar = ProgressBar.for_stream(sys.stderr, f"uploading {name or os.path.basename(args.file)}")
    try:
        return client.submit(document, ticket, service=printer, document_format=document_format,
                             document_name=name, progress=bar)
    finally:
        if bar is not None:
            bar.finish()


def cmd_print(args: argparse.Namespace) -> int:
    """Submit one document (lp): check options, upload with progress, optionally wait."""
    try:
        ticket, option_format = build_ticket(args.options, copies=args.copies, title=args.title)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    document_format = args.document_format or option_format
    if document_format is not None:
        try:
            document_format = check_mime(document_format)
        except ValueError as exc:
            raise UsageError(f"document-format: {exc} (got {document_format!r})") from None
    by_reference = re.match(r"https?://", args.file) is not None
    if not by_reference and args.file != "-" and not os.path.isfile(args.file):
        problem = "not a regular file" if os.path.exists(args.file) else "no such file"
        raise ClientError(f"{args.file}: {problem}")
    config = config_for(args)
    with CloudImagingClient.from_config(config) as client:
        chosen = choose_service(client, config, ServiceKind.PRINT, args.printer)
        try:
            job = _submit(client, args, ticket, chosen.name, document_format, by_reference)
        except ApiError as exc:
            raise naming(chosen, ServiceKind.PRINT, exc) from None
        if not args.json:
            out(f"request id is {request_id(job)} (1 file(s)) on {chosen.describe(ServiceKind.PRINT)}")
        if args.wait:
            return _wait(client, job, args)
    if args.json:
        emit_json(job)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    """List this user's jobs (lpstat -o); --all adds ended ones."""
    with client_for(args) as client:
        jobs = client.jobs(all=args.all, kind=args.kind, service=args.printer)
    if args.json:
        emit_json({"jobs": jobs})
    elif jobs:
        out(jobs_table(jobs))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Show one job with its history; --wait follows it to the end."""
    with client_for(args) as client:
        job = client.job(args.job)
        if args.wait and not job.state.terminal:
            return _wait(client, job, args)  # its first line is the current state
    if args.json:
        emit_json(job)
    elif args.wait:
        out(state_line(job))
    else:
        out(job_status(job))
    return exit_code_for(job.state) if args.wait else EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel jobs (cancel): one line each; non-zero if any is unknown or already ended."""
    code = EXIT_OK
    canceled: list[JobInfo] = []
    with client_for(args) as client:
        for job_id in args.jobs:
            try:
                job = client.cancel(job_id)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
                err(f"error: {about_job(job_id, exc)}")
                code = EXIT_ERROR
                continue
            canceled.append(job)
            if args.json:
                continue
            if job.state == JobState.CANCELED:
                out(f"job {request_id(job)} canceled")
            elif Reason.PROCESSING_TO_STOP_POINT in job.state_reasons:
                out(f"job {request_id(job)} is being canceled; waiting for the printer to stop")
            else:
                out(f"job {request_id(job)} is {job.state}")
    if args.json and canceled:
        emit_json(canceled[0] if len(args.jobs) == 1 else {"jobs": canceled})
    return code


# ------------------------------------------------------------------------------ parser


def add_plugin_verbs(subparsers: Any) -> None:
    """Add the verbs of each plug-in module whose package is installed.

    Only a ModuleNotFoundError for the package itself means "not installed"; a plug-in that
    is there but fails to import (a missing dependency, a bug) stops the command with why.
    """
    for name in PLUGINS:
        package = name.partition(".")[0]
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == package:
                continue
            raise ImportError(f"cannot load the {name} verbs: {exc}") from exc
        module.add_parser(subparsers)


def build_parser() -> CliParser:
    """The full parser, with the verbs of every installed package."""
    parser = CliParser(
        prog=PROG,
        description="Print through a Cloud Imaging service (PWG Cloud Imaging Model).",
        parents=[connection_options(top=True)],
        epilog=(
            "exit codes: 0 ok, 1 error, 2 usage; with --wait: 0 completed, 1 aborted, "
            "2 canceled; 130 interrupted. See docs/cli.md."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [connection_options(top=False)]

    p = sub.add_parser("printers", aliases=["services"], parents=common, help="list print services (lpstat -p)")
    p.add_argument("names", nargs="*", metavar="PRINTER", help="only these services")
    p.add_argument("-l", "--long", action="store_true", help="long form with capabilities")
    p.add_argument(
        "--kind", choices=[k.value for k in ServiceKind], default=ServiceKind.PRINT.value, help="service kind"
    )
    p.set_defaults(func=cmd_services)

    p = sub.add_parser("print", parents=common, help="print a file (lp)")
    p.add_argument("file", metavar="FILE", help="file to print; - reads stdin; an https URL is fetched by the service")
    p.add_argument("-p", "-d", "--printer", help="print service (default: `cloudimaging default`, else the only one)")
    p.add_argument("-n", "--copies", type=positive, help="number of copies")
    p.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="job-ticket attribute by IPP name, e.g. sides=two-sided-long-edge (repeatable)",
    )
    p.add_argument("-t", "--title", help="job name")
    p.add_argument("--format", dest="document_format", metavar="TYPE", help="MIME type (default: detected)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit code tells how")
    p.set_defaults(func=cmd_print)

    p = sub.add_parser("jobs", parents=common, help="list your jobs (lpstat -o)")
    p.add_argument("-a", "--all", action="store_true", help="include completed, canceled and aborted jobs")
    p.add_argument("-p", "--printer", help="only jobs of this service")
    p.add_argument("--kind", choices=[k.value for k in ServiceKind], help="only jobs of this kind")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("status", parents=common, help="show a job and its history")
    p.add_argument("job", type=parse_job_ref, metavar="JOB", help="job id (42 or printer-42)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", parents=common, help="cancel jobs (cancel)")
    p.add_argument("jobs", type=parse_job_ref, nargs="+", metavar="JOB", help="job id (42 or printer-42)")
    p.set_defaults(func=cmd_cancel)

    for module in VERB_MODULES:
        module.add_parser(sub)
    add_plugin_verbs(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        (exc.parser or parser).print_usage(sys.stderr)
        err(f"error: {exc}")
        return EXIT_USAGE
    except ParserExit as exc:
        return exc.status
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except UsageError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except ClientError as exc:
        err(f"error: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return EXIT_ERROR
        where = f"{exc.filename}: " if exc.filename else ""
        err(f"error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        err("interrupted")
        return EXIT_INTERRUPTED
