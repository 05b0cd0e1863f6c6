"""``cloudimaging default``: the default printer (scanner, fax service), in the habit of ``lpoptions -d``.

    cloudimaging default                      # which printer a job without -p goes to, and why
    cloudimaging default office               # local default, kept in client.json for this service
    cloudimaging default office --on-service  # the user's default on the service (every client, IPP aside)
    cloudimaging default --clear [--on-service]
    cloudimaging default lab-scanner --kind scan

A submit chooses: ``-p``, then the local default, then the default on the service, then the
only service of the kind; with several and no default it is an error listing them
(client.cli_common.choose_service). A default is checked to exist, and to be shared with the
user, when it is set.
"""

from __future__ import annotations

import argparse
from typing import Any

from client.api import CloudImagingClient
from client.cli_common import KIND_WORDS, UsageError, choose_service, config_for, connection_options, emit_json, out
from client.config import set_local_default
from client.errors import ClientError
from schemas.enums import ServiceKind


def cmd_default(args: argparse.Namespace) -> int:
    if args.clear and args.name:
        raise UsageError("give a NAME to set, or --clear, not both")
    kind = ServiceKind(args.kind)
    word = KIND_WORDS[kind][0]
    config = config_for(args)
    with CloudImagingClient.from_config(config) as client:
        if args.clear or args.name:
            if args.name:
                client.service(kind, args.name)  # 404 unless it exists and is shared with this user
            name = None if args.clear else args.name
            if args.on_service:
                client.set_default_service(kind, name)
                where = f"on {config.url}"
            else:
                where = f"in {set_local_default(config, kind.value, name)}"
            result = {"kind": kind.value, "service": name, "scope": "service" if args.on_service else "local"}
            text = f"default {word} {'cleared' if name is None else 'is now ' + name} {where}"
        else:
            local = config.defaults.get(kind.value)
            remote = client.default_service(kind)
            try:
                chosen = choose_service(client, config, kind, None)
                used: dict[str, Any] = {"service": chosen.name, "why": chosen.why}
                text = f"a {kind.value} job without {KIND_WORDS[kind][1]} goes to {chosen.describe(kind)}"
            except ClientError as exc:
                used = {"service": None, "why": str(exc)}
                text = f"a {kind.value} job without {KIND_WORDS[kind][1]} is refused: {exc}"
            result = {"kind": kind.value, "local": local, "on_service": remote, "used": used}
            text += f"\nlocal default: {local or '-'}; default on the service: {remote or '-'}"
    if args.json:
        emit_json(result)
    else:
        out(text)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("default", parents=[connection_options(top=False)],
                       help="show or set your default printer, scanner or fax service (lpoptions -d)")
    p.add_argument("name", nargs="?", metavar="NAME", help="the service to make the default")
    p.add_argument("--kind", choices=[k.value for k in ServiceKind], default=ServiceKind.PRINT.value,
                   help="service kind (default: print)")
    p.add_argument("--on-service", action="store_true",
                   help="keep it on the service, for every client of this user, not in the local client.json")
    p.add_argument("--clear", action="store_true", help="forget the default")
    p.set_defaults(func=cmd_default)
