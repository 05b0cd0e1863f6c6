"""What every ``cloudimaging`` verb module shares: exit codes, the parser class, the
connection options, output, and how a verb gets its client.

A leaf of the CLI: :mod:`client.cli` and the verb modules (:mod:`client.manage_cli`,
:mod:`client.scan_cli`) import it, it imports none of them, so the verbs form no circle.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import BaseModel

from client.api import CloudImagingClient
from client.config import ClientConfig, load_config
from client.errors import ApiError, ClientError
from client.render import service_long, services_table
from schemas.enums import JobState, ServiceKind

PROG = "cloudimaging"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Exit code of ``--wait`` for each terminal job state.
WAIT_EXIT_CODES = {JobState.COMPLETED: 0, JobState.ABORTED: 1, JobState.CANCELED: 2}

class UsageError(Exception):
    """A command line that cannot be run: exit code 2, one line on stderr."""

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None) -> None:
        super().__init__(message)
        self.parser = parser


class ParserExit(Exception):
    """argparse wanted to exit (``--help``): ``main`` returns ``status``."""

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
        raise ParserExit(status)


def exit_code_for(state: JobState) -> int:
    """The ``--wait`` exit code: 0 completed, 1 aborted, 2 canceled (1 if not ended)."""
    return WAIT_EXIT_CODES.get(JobState(state), EXIT_ERROR)


def parse_job_ref(text: str) -> int:
    """``42`` or lp's request id ``office-42`` -> 42."""
    match = re.fullmatch(r"(?:.+-)?(\d{1,18})", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (42 or printer-42)")
    return int(match.group(1))


def positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def connection_options(*, top: bool) -> argparse.ArgumentParser:
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


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
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
    out(json.dumps(_dump(value), indent=2, ensure_ascii=False))


def config_for(args: argparse.Namespace) -> ClientConfig:
    """The configuration for a verb: flags first, then environment, then client.json."""
    return load_config(getattr(args, "url", None), getattr(args, "token", None), getattr(args, "ca", None))


def client_for(args: argparse.Namespace) -> CloudImagingClient:
    """The client for a verb (see :func:`config_for`)."""
    return CloudImagingClient.from_config(config_for(args))


#: What each kind's services are called on the command line, and the flag that names one.
KIND_WORDS = {ServiceKind.PRINT: ("printer", "-p"), ServiceKind.SCAN: ("scanner", "-s"),
              ServiceKind.FAXOUT: ("fax service", "-f")}


@dataclass(frozen=True)
class Chosen:
    """The service a submit goes to, and why that one: every submit says both."""

    name: str
    why: str

    def describe(self, kind: ServiceKind) -> str:
        """``printer office (the only printer)``; no reason when the user named it."""
        return f"{KIND_WORDS[kind][0]} {self.name}" + (f" ({self.why})" if self.why else "")


def choose_service(client: CloudImagingClient, config: ClientConfig, kind: ServiceKind,
                   named: str | None) -> Chosen:
    """The service for a submit, as lp chooses a printer: the one named (``-p``), else the local
    default in client.json (``cloudimaging default``), else the user's default on the service,
    else the only one the user may use. With several and no default it is an error that lists
    them: a new printer must never silently take everyone's jobs."""
    word, flag = KIND_WORDS[kind]
    if named:
        return Chosen(named, "")
    local = config.defaults.get(kind.value)
    if local:
        return Chosen(local, f"your local default, in {config.path}")
    try:
        remote = client.default_service(kind)
    except ApiError as exc:
        if exc.status != 404:  # an older service without defaults: go on to the only one
            raise
        remote = None
    if remote:
        return Chosen(remote, "your default on the service")
    names = sorted(s.name for s in client.services(kind))
    if len(names) == 1:
        return Chosen(names[0], f"the only {word}")
    if not names:
        raise ClientError(f"no {kind.value} services are shared with you")
    verb = "cloudimaging default NAME" + ("" if kind is ServiceKind.PRINT else f" --kind {kind.value}")
    raise ClientError(f"{len(names)} {word}s and no default: choose one with {flag} NAME, or set a default "
                      f"with `{verb}` ({', '.join(names)})")


def naming(chosen: Chosen, kind: ServiceKind, exc: ApiError) -> ClientError:
    """A refusal of a submit, with the service it was sent to when the user did not name it
    and the message does not say: a newcomer must see which printer said no."""
    text = str(exc)
    if not chosen.why or chosen.name in text:
        return exc
    return ClientError(f"{KIND_WORDS[kind][0]} {chosen.name}: {text}")


def about_job(job_id: int, error: ApiError) -> str:
    text = str(error)
    return text if str(job_id) in text else f"job {job_id}: {text}"


def cmd_services(args: argparse.Namespace) -> int:
    """List services of ``args.kind`` (lpstat -p); named ones are fetched one by one."""
    with client_for(args) as client:
        if args.names:
            services = [client.service(args.kind, name) for name in args.names]
        else:
            services = client.services(args.kind)
    if args.json:
        emit_json({"services": services})
    elif not services:
        err(f"no {args.kind} services")
    elif args.long:
        out("\n\n".join(service_long(s) for s in services))
    else:
        out(services_table(services))
    return EXIT_OK
