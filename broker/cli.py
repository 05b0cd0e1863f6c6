"""``cloudimaging broker``: run the embedded broker alone (the service and Managers connect to it).

State lives under the data directory: ``pki/`` (CA and server certificate, shared with the HTTPS
service) and ``broker/passwd`` (the CredentialStore file; add devices there while it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

from broker.embedded import EmbeddedBroker
from broker.eventloop import EVENT_LOOPS, chosen_loop, run_loop, running_loop_name
from broker.limits import RateLimitFilter, raise_open_files_limit
from broker.pki import DEFAULT_HOSTNAMES, ensure_pki
from broker.private import private_dir, private_umask

DEFAULT_DATA_DIR = Path(".cloudimaging")
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "broker",
        help="run the embedded MQTT broker alone (TLS, passwords, per-device ACL)",
        description="Run the embedded amqtt broker until Ctrl-C. Certificates are made on first run "
        "under DATA/pki; device passwords are read from DATA/broker/passwd.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"state directory (default {DEFAULT_DATA_DIR})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8883, help="TLS port; 0 = any free port (default 8883)")
    p.add_argument("--require-device-certificates", action="store_true",
                   help="devices must log in with a client certificate (enrolled); only the service "
                        "keeps a password")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default="auto",
                   help="auto: uvloop where installed (sockets and TLS in C: fewer CPU cycles a message), "
                        "else Python's asyncio loop (default auto)")
    p.set_defaults(func=run)


def hostnames_for(host: str) -> list[str]:
    """Names the server certificate must cover for clients dialling `host`."""
    names = list(DEFAULT_HOSTNAMES)
    if host in _ANY_ADDRESS:
        names += [socket.gethostname(), socket.getfqdn()]
    else:
        names.append(host)
    return list(dict.fromkeys(n for n in names if n))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop."""
    loop = chosen_loop(getattr(args, "event_loop", "auto"))  # an unusable choice fails before anything is made
    private_umask()  # the password file, keys and CRL: this account's alone
    raise_open_files_limit()  # the connection budget is taken from it (broker.limits)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    RateLimitFilter.install()
    data_dir: Path = args.data_dir
    pki = ensure_pki(private_dir(data_dir / "pki"), hostnames_for(args.host))
    broker = EmbeddedBroker(pki, data_dir / "broker" / "passwd", host=args.host, port=args.port,
                            device_passwords=not getattr(args, "require_device_certificates", False))
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_serve(broker), loop)
    return 0


async def _serve(broker: EmbeddedBroker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await broker.start()
    print(f"broker listening on {broker.url}", flush=True)
    print(f"  CA certificate  {broker.pki.ca_cert}", flush=True)
    print(f"  password file   {broker.credentials_path}", flush=True)
    print(f"  CRL (revoked)   {broker.pki.crl}", flush=True)
    print(f"  event loop      {running_loop_name()}", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.stop()


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m broker.cli broker ...``) for when the main CLI is not at hand."""
    parser = argparse.ArgumentParser(prog="cloudimaging")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
