"""Sub-commands of the service side: ``cloudimaging service``, ``cloudimaging up`` and
``cloudimaging cluster``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
from pathlib import Path

from pydantic import ValidationError

from broker.eventloop import run_loop
from broker.limits import RateLimitFilter, raise_open_files_limit
from broker.private import private_dir, private_umask
from cloud_service.config import SECRET_FIELDS, ConfigError, ServiceConfig, env_table


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    service = subparsers.add_parser("service", help="run the Cloud Service (HTTPS API + MQTT dispatcher)")
    service.add_argument("--config", type=Path,
                         help="JSON file of ServiceConfig fields; CLOUDIMAGING_* variables override it")
    service.add_argument("--data-dir", type=Path, help="data directory (default .cloudimaging)")
    service.add_argument("--broker-url", help="mqtts://host:port of the broker")
    service.add_argument("--port", type=int, help="HTTPS port (default 8443)")
    service.add_argument("--new-token", metavar="USER", dest="new_token",
                         help="print a new admin token for USER and exit")
    service.add_argument("--show-config", choices=["env", "effective"], dest="show_config",
                         help="print the table of CLOUDIMAGING_* variables (env) or the configuration this "
                              "command would run with, secrets hidden (effective), and exit")
    service.set_defaults(func=run_service)
    verbs = service.add_subparsers(dest="service_verb", metavar="{db}")
    db = verbs.add_parser("db", help="the service's database: schema revision and upgrades (Alembic)")
    db.add_argument("action", choices=["upgrade", "current", "history"],
                    help="upgrade: migrate to the newest revision; current: the database's revision; "
                         "history: the revisions this software knows")
    db.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="JSON file of ServiceConfig fields")
    db.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, help="data directory (SQLite default)")
    db.add_argument("--database-url", default=argparse.SUPPRESS,
                    help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db (default: the config's)")
    db.set_defaults(func=run_db)

    up = subparsers.add_parser("up", help="run the embedded stack: broker + service + a simulated printer")
    up.add_argument("--data-dir", type=Path, default=Path(".cloudimaging"),
                    help="where state, logs, certificates and printed output live (default .cloudimaging)")
    up.add_argument("--http-port", type=int, default=8443, help="HTTPS port; 0 = any free port (default 8443)")
    up.add_argument("--broker-port", type=int, default=8883, help="MQTT/TLS port; 0 = any free (default 8883)")
    up.add_argument("--no-printer", action="store_true", help="do not start the simulated printer")
    up.add_argument("-v", "--verbose", action="store_true", help="log every message")
    up.set_defaults(func=run_up)

    cluster = subparsers.add_parser(
        "cluster", help="run a local cluster: Mosquitto, PostgreSQL, S3, N replicas behind HAProxy, a device")
    cluster.add_argument("--data-dir", type=Path, default=Path(".cloudimaging"),
                         help="client.json goes here, the cluster's state under DATA/cluster (default .cloudimaging)")
    cluster.add_argument("--replicas", type=int, default=3, help="service replicas (default 3)")
    cluster.add_argument("--devices", type=int, default=1, help="simulated printers (default 1)")
    cluster.add_argument("--http-port", type=int, default=8443,
                         help="HAProxy's HTTPS port; taken: any free port (default 8443)")
    cluster.add_argument("--broker-port", type=int, default=8883,
                         help="Mosquitto's TLS port; taken: any free port (default 8883)")
    cluster.add_argument("--database-url", default=None,
                         help="PostgreSQL database of the cluster, created if missing (default "
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/cloudimaging_cluster)")
    cluster.add_argument("--no-s3", action="store_true", help="share an objects directory instead of S3")
    cluster.set_defaults(func=run_cluster)


def _service_config(args: argparse.Namespace) -> ServiceConfig:
    config = ServiceConfig.from_sources(getattr(args, "config", None))
    updates = {}
    if getattr(args, "data_dir", None):
        updates["data_dir"] = args.data_dir
    if getattr(args, "broker_url", None):
        updates["broker_url"] = args.broker_url
    if getattr(args, "port", None) is not None:
        updates["http_port"] = args.port
    return config.model_copy(update=updates)


def run_db(args: argparse.Namespace) -> int:
    """``cloudimaging service db upgrade|current|history``: what the service does at start-up
    (upgrade), ahead of a rolling deployment, or a look at where the database stands."""
    from cloud_service import migrations
    from cloud_service.db import create_schema, make_engine, schema_revision

    config = _service_config(args)
    if getattr(args, "database_url", None):
        config = config.model_copy(update={"database_url": args.database_url})
    if args.action == "history":
        for revision in migrations.history():
            print(f"{revision['revision']}  {revision['doc']}")
        return 0

    async def main() -> int:
        if config.db_url.startswith("sqlite"):
            private_dir(config.data_dir)
        engine = make_engine(config.db_url)
        try:
            if args.action == "upgrade":
                before, _ = await schema_revision(engine)
                after = await create_schema(engine)
                print(f"database at revision {after}" + (" (unchanged)" if before == after else f" (was {before})"))
                return 0
            at, head = await schema_revision(engine)
            state = "up to date" if at == head else f"behind: `cloudimaging service db upgrade` goes to {head}"
            print(f"database at revision {at or 'none'} ({state})")
            return 0 if at == head else 1
        except RuntimeError as exc:
            print(f"cloudimaging: error: {exc}")
            return 1
        finally:
            await engine.dispose()

    return asyncio.run(main())


def run_service(args: argparse.Namespace) -> int:
    from cloud_service.app import CloudService

    if args.show_config == "env":
        print(env_table(), end="")
        return 0
    try:
        config = _service_config(args)
    except (ConfigError, ValidationError) as exc:
        print(f"cloudimaging service: configuration: {exc}")
        return 2
    if args.show_config == "effective":
        shown = config.model_dump(mode="json")
        for name in SECRET_FIELDS:
            if shown.get(name):
                shown[name] = "(set)"
        print(json.dumps(shown, indent=2))
        return 0
    private_umask()  # documents, database, logs and keys: this account's alone
    raise_open_files_limit()  # the connection budget is taken from it (broker.limits)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    RateLimitFilter.install()

    async def main() -> None:
        service = CloudService(config)
        if args.new_token:
            from cloud_service.auth import create_token, ensure_user
            from cloud_service.db import create_schema, make_engine
            from cloud_service.store import JobStore

            private_dir(config.data_dir)
            engine = make_engine(config.db_url)
            await create_schema(engine)
            store = JobStore(engine)
            await ensure_user(store, args.new_token, "admin", promote=True)  # operator bootstrap
            print(await create_token(store, args.new_token, "admin"))
            await store.close()
            await engine.dispose()
            return
        await service.start()
        settle_heap()
        print(f"cloudimaging service at {service.url}; Ctrl-C stops it", flush=True)
        await _until_signal()
        await service.stop()

    run_loop(main(), config.event_loop)
    return 0


#: Allocations (less deallocations) between two collections of the youngest generation; Python's
#: default is 700.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once started, keep the cyclic garbage collector off what start-up made and will keep.

    Start-up leaves a large heap that lives as long as the process (modules, the ASGI app and its
    routes, compiled statements, pydantic validators); each full collection walked all of it
    (45-75 ms of CPU each), and collections of the youngest generation ran every 700
    allocations: 4.2% of the service's CPU while a fleet's 800 jobs ran, 0.4% after. ``gc.freeze``
    moves what is alive now to a generation the collector never scans, and a higher threshold
    for the youngest generation makes its collections fewer. Reference counting frees almost
    everything a request or a message makes; the collector is only for cycles, which still
    go, a little later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_up(args: argparse.Namespace) -> int:
    from cloud_service.up import EmbeddedStack

    private_umask()  # the service's, the broker's and the Manager's files alike
    raise_open_files_limit()  # the connection budget is taken from it (broker.limits)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    RateLimitFilter.install()

    async def main() -> None:
        stack = EmbeddedStack(args.data_dir, http_port=args.http_port, broker_port=args.broker_port,
                              printer=not args.no_printer)
        await stack.start()
        settle_heap()
        print(stack.banner(), flush=True)
        try:
            await _until_signal()
        finally:
            print("\nstopping...", flush=True)
            await stack.stop()
            print("stopped.", flush=True)

    try:
        run_loop(main())  # uvloop where installed, as the service alone runs
    except OSError as exc:
        print(f"cloudimaging: error: {exc}")
        return 1
    return 0


def run_cluster(args: argparse.Namespace) -> int:
    from cloud_service.cluster import DEFAULT_DATABASE_URL, ClusterError, LocalCluster

    private_umask()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.replicas < 1 or args.devices < 0:
        print("cloudimaging: error: --replicas must be at least 1 and --devices at least 0")
        return 2

    async def main() -> None:
        cluster = LocalCluster(args.data_dir, replicas=args.replicas, devices=args.devices,
                               http_port=args.http_port, broker_port=args.broker_port,
                               database_url=args.database_url or DEFAULT_DATABASE_URL,
                               s3="off" if args.no_s3 else "auto")
        print("starting the cluster...", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.create_task(cluster.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # Ctrl-C while starting: start() stops what it started
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        print(cluster.banner(), flush=True)
        try:
            await stopping
        finally:
            print("\nstopping...", flush=True)
            await cluster.stop()
            print("stopped.", flush=True)

    try:
        asyncio.run(main())
    except (ClusterError, OSError) as exc:
        print(f"cloudimaging: error: {exc}")
        return 1
    return 0
