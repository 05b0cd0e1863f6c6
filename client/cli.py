"""The ``cloudimaging`` command: print, list and cancel in the habits of lp, lpstat and cancel.

``main(argv)`` returns the exit code and writes only to ``sys.stdout``/``sys.stderr``, so it
runs in-process in tests; only the console entry point turns the code into ``sys.exit``.
Other packages add verbs (``service``, ``up``, broker and manager tools) through their
``add_parser(subparsers)`` hooks; each verb sets ``func(args) -> int``.

Exit codes: 0 success; 1 error (refused, not found, unreachable, not configured); 2 usage
(bad flags or ``-o`` values); 130 interrupted. ``print --wait`` / ``status --wait`` end with
the job's fate: 0 completed, 1 aborted, 2 canceled.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pydantic import BaseModel

from client.api import CloudImagingClient
from client.config import ClientConfig, load_config
from client.errors import ApiError, ClientError
from client.options import OptionError, build_ticket
from client.progress import ProgressBar
from client.render import (
    job_status,
    jobs_table,
    request_id,
    service_long,
    services_table,
    state_line,
)
from schemas.api import JobInfo
from schemas.enums import JobState, Reason, ServiceKind
from schemas.text import check_mime

PROG = "cloudimaging"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Exit code of ``--wait`` for each terminal job state.
WAIT_EXIT_CODES = {JobState.COMPLETED: 0, JobState.ABORTED: 1, JobState.CANCELED: 2}

#: Modules whose ``add_parser(subparsers)`` adds verbs; a missing one is skipped.
EXTENSIONS = ("client.manage_cli", "client.scanfax_cli", "broker.cli", "manager.cli", "cloud_service.cli")

#: How verbs get a client from the resolved configuration; tests may replace it.
client_factory: Callable[[ClientConfig], CloudImagingClient] = CloudImagingClient.from_config


class UsageError(Exception):
    """A command line that cannot be run: exit code 2, one line on stderr."""

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None) -> None:
        super().__init__(message)
        self.parser = parser


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class CliParser(argparse.ArgumentParser):
    """argparse that raises instead of calling sys.exit, so ``main`` can return the code."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


def exit_code_for(state: JobState) -> int:
    """The ``--wait`` exit code: 0 completed, 1 aborted, 2 canceled (1 if not ended)."""
    return WAIT_EXIT_CODES.get(JobState(state), EXIT_ERROR)


def parse_job_ref(text: str) -> int:
    """``42`` or lp's request id ``office-42`` -> 42."""
    match = re.fullmatch(r"(?:.+-)?(\d{1,18})", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (42 or printer-42)")
    return int(match.group(1))


def _positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _connection_options(*, top: bool) -> argparse.ArgumentParser:
    """--url/--token/--ca/--json, accepted before or after the verb.

    On sub-commands the defaults are SUPPRESS, so an option given before the verb is not
    reset by the sub-parser.
    """
    parser = argparse.ArgumentParser(add_help=False)
    default = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("service connection (default: environment or client.json)")
    group.add_argument("--url", default=default, help="service URL, e.g. https://127.0.0.1:8443")
    group.add_argument("--token", default=default, help="bearer token (prefer CLOUDIMAGING_TOKEN)")
    group.add_argument("--ca", default=default, metavar="PEM", help="CA certificate file to verify TLS")
    group.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the API objects as JSON on stdout, nothing else",
    )
    return parser


# ------------------------------------------------------------------------------ output


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """API objects as JSON on stdout: the only thing ``--json`` writes there."""
    _out(json.dumps(_dump(value), indent=2, ensure_ascii=False))


def _client(args: argparse.Namespace) -> CloudImagingClient:
    config = load_config(getattr(args, "url", None), getattr(args, "token", None), getattr(args, "ca", None))
    return client_factory(config)


def _about_job(job_id: int, error: ApiError) -> str:
    text = str(error)
    return text if str(job_id) in text else f"job {job_id}: {text}"


# ------------------------------------------------------------------------------ verbs


def cmd_printers(args: argparse.Namespace) -> int:
    """List services (lpstat -p); named ones are fetched one by one."""
    with _client(args) as client:
        if args.names:
            services = [client.service(args.kind, name) for name in args.names]
        else:
            services = client.services(args.kind)
    if args.json:
        emit_json({"services": services})
    elif not services:
        _err(f"no {args.kind} services")
    elif args.long:
        _out("\n\n".join(service_long(s) for s in services))
    else:
        _out(services_table(services))
    return EXIT_OK


def _wait(client: CloudImagingClient, job: JobInfo, args: argparse.Namespace) -> int:
    """Follow a job to its end; Ctrl-C stops following and leaves the job alone."""
    shown: list[str] = []

    def show(info: JobInfo) -> None:
        line = state_line(info)
        if not args.json and line not in shown[-1:]:  # a new version may look the same
            shown.append(line)
            _out(line)

    try:
        final = client.wait(job.id, on_change=show)
    except KeyboardInterrupt:
        _err(f"stopped waiting; job {request_id(job)} was not canceled")
        return EXIT_INTERRUPTED
    if args.json:
        emit_json(final)
    return exit_code_for(final.state)


def _read_document(path: str) -> tuple[bytes | str, str | None]:
    if path == "-":
        return sys.stdin.buffer.read(), "(stdin)"
    return path, None


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
    with _client(args) as client:
        if by_reference:
            job = client.submit_uri(args.file, ticket, service=args.printer, document_format=document_format)
        else:
            document, name = _read_document(args.file)
            label = f"uploading {name or os.path.basename(args.file)}"
            bar = ProgressBar.for_stream(sys.stderr, label)
            try:
                job = client.submit(
                    document,
                    ticket,
                    service=args.printer,
                    document_format=document_format,
                    document_name=name,
                    progress=bar,
                )
            finally:
                if bar is not None:
                    bar.finish()
        if not args.json:
            _out(f"request id is {request_id(job)} (1 file(s))")
        if args.wait:
            return _wait(client, job, args)
    if args.json:
        emit_json(job)
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    """List this user's jobs (lpstat -o); --all adds ended ones."""
    with _client(args) as client:
        jobs = client.jobs(all=args.all, kind=args.kind, service=args.printer)
    if args.json:
        emit_json({"jobs": jobs})
    elif jobs:
        _out(jobs_table(jobs))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Show one job with its history; --wait follows it to the end."""
    with _client(args) as client:
        job = client.job(args.job)
        if args.wait and not job.state.terminal:
            return _wait(client, job, args)  # its first line is the current state
    if args.json:
        emit_json(job)
    elif args.wait:
        _out(state_line(job))
    else:
        _out(job_status(job))
    return exit_code_for(job.state) if args.wait else EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel jobs (cancel): one line each; non-zero if any is unknown or already ended."""
    code = EXIT_OK
    canceled: list[JobInfo] = []
    with _client(args) as client:
        for job_id in args.jobs:
            try:
                job = client.cancel(job_id)
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
                _err(f"error: {_about_job(job_id, exc)}")
                code = EXIT_ERROR
                continue
            canceled.append(job)
            if args.json:
                continue
            if job.state == JobState.CANCELED:
                _out(f"job {request_id(job)} canceled")
            elif Reason.PROCESSING_TO_STOP_POINT in job.state_reasons:
                _out(f"job {request_id(job)} is being canceled; waiting for the printer to stop")
            else:
                _out(f"job {request_id(job)} is {job.state}")
    if args.json and canceled:
        emit_json(canceled[0] if len(args.jobs) == 1 else {"jobs": canceled})
    return code


# ------------------------------------------------------------------------------ parser


def _add_extensions(subparsers: Any) -> None:
    for name in EXTENSIONS:
        try:
            importlib.import_module(name).add_parser(subparsers)
        except (ImportError, AttributeError) as exc:
            if os.environ.get("CLOUDIMAGING_DEBUG"):
                _err(f"note: no verbs from {name}: {exc}")


def build_parser() -> CliParser:
    """The full parser, with the verbs of every installed package."""
    parser = CliParser(
        prog=PROG,
        description="Print through a Cloud Imaging service (PWG Cloud Imaging Model).",
        parents=[_connection_options(top=True)],
        epilog=(
            "exit codes: 0 ok, 1 error, 2 usage; with --wait: 0 completed, 1 aborted, "
            "2 canceled; 130 interrupted. See docs/cli.md."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [_connection_options(top=False)]

    p = sub.add_parser("printers", aliases=["services"], parents=common, help="list print services (lpstat -p)")
    p.add_argument("names", nargs="*", metavar="PRINTER", help="only these services")
    p.add_argument("-l", "--long", action="store_true", help="long form with capabilities")
    p.add_argument(
        "--kind", choices=[k.value for k in ServiceKind], default=ServiceKind.PRINT.value, help="service kind"
    )
    p.set_defaults(func=cmd_printers)

    p = sub.add_parser("print", parents=common, help="print a file (lp)")
    p.add_argument("file", metavar="FILE", help="file to print; - reads stdin; an https URL is fetched by the service")
    p.add_argument("-p", "-d", "--printer", help="print service name (default: the only/first one)")
    p.add_argument("-n", "--copies", type=_positive, help="number of copies")
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

    _add_extensions(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        (exc.parser or parser).print_usage(sys.stderr)
        _err(f"error: {exc}")
        return EXIT_USAGE
    except _ParserExit as exc:
        return exc.status
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except UsageError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except ClientError as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return EXIT_ERROR
        where = f"{exc.filename}: " if exc.filename else ""
        _err(f"error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        _err("interrupted")
        return EXIT_INTERRUPTED
