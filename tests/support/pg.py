"""The machine's PostgreSQL for tests: a uniquely named database per use, dropped after.

The server is found at ``CLOUDIMAGING_TEST_PG`` (default ``127.0.0.1:5432``, user postgres,
trust authentication, as CI sets it up). When none answers, tests that need it skip with the
reason on a user's machine and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

HOSTPORT = os.environ.get("CLOUDIMAGING_TEST_PG", "127.0.0.1:5432")
USER = os.environ.get("CLOUDIMAGING_TEST_PG_USER", "postgres")
#: Every database a test run makes starts with this, so a crashed run's leftovers are findable.
PREFIX = "ci_test_"

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own in a thread (callers may be inside a running loop)."""
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if not result:
        raise TimeoutError("PostgreSQL did not answer within 60 s")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def dsn(database: str = "postgres") -> str:
    return f"postgresql://{USER}@{HOSTPORT}/{database}"


def url(database: str) -> str:
    """The SQLAlchemy URL of ``database`` (asyncpg driver), as the service's database_url."""
    return f"postgresql+asyncpg://{USER}@{HOSTPORT}/{database}"


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn(), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[test]')"
    try:
        _run(_admin("SELECT 1"))
    except Exception as exc:
        return f"no PostgreSQL at {HOSTPORT} as {USER}: {exc}"
    return None


def require() -> None:
    """Skip (a user's machine) or fail (CI=true) when PostgreSQL is unreachable."""
    reason = unreachable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(reason)


def create_database() -> str:
    """A new empty database; returns its name."""
    name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    return name


def drop_database(name: str) -> None:
    """Drop ``name``, closing whatever connections a test left open to it."""
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
