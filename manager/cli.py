"""``cloudimaging manager --config FILE``: run a Manager in the foreground until Ctrl-C.

The main CLI (client.cli) calls ``add_parser`` to add this sub-command.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from manager.config import ConfigError, load_config
from manager.drivers import DriverConfigError

log = logging.getLogger("cloudimaging.manager")


def add_parser(subparsers: Any) -> None:
    """Add the ``manager`` sub-command to an argparse sub-parsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "manager",
        help="run the Cloud Print Manager for a device",
        description="Connect a device to the Cloud Imaging service over MQTT and print its jobs.",
    )
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="device configuration (JSON, or TOML if the name ends in .toml); required to run",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO: one line per message in and out)",
    )
    parser.set_defaults(func=run)
    from manager import enroll

    enroll.add_parser(parser.add_subparsers(dest="manager_command", metavar="{enroll}"))


#: Exit status when the broker refused the device's certificate as revoked: retrying cannot
#: help (a supervisor should not restart it); the owner re-enrolls the device.
EXIT_REVOKED = 3


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop, 2 for a bad config, 1 on failure,
    ``EXIT_REVOKED`` (3) when the device's certificate was revoked."""
    from manager.app import Manager  # imported here so `cloudimaging --help` stays fast

    os.umask(os.umask(0o077) | 0o077)  # journal, spool and keys are the device account's alone
    if not getattr(args, "config", None):
        print("cloudimaging manager: --config FILE is required", file=sys.stderr)
        return 2
    level = getattr(args, "log_level", "INFO")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cloudimaging").setLevel(level)
    try:
        config = load_config(args.config)
        manager = Manager(config)
    except (ConfigError, DriverConfigError) as exc:
        print(f"cloudimaging manager: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        manager.start()
        while not stop.wait(0.5):
            if manager.refused.is_set():
                return EXIT_REVOKED  # the session logged why, once
            if not manager.running:
                log.error("the manager stopped unexpectedly")
                return 1
        log.info("stopping (signal received)")
        return 0
    except Exception as exc:
        log.error("manager failed: %s", exc)
        return 1
    finally:
        manager.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m manager --config FILE``."""
    parser = argparse.ArgumentParser(prog="cloudimaging")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["manager", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
