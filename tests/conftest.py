"""Fixtures shared by the test modules; helpers they call live in tests/support/.

Every fixture that starts something binds to 127.0.0.1 on an ephemeral port and stops what it
started when the test ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from broker.pki import Pki, ensure_pki
from client.api import CloudImagingClient
from tests.support.docserver import DocServer
from tests.support.live import LiveStack


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA with a server certificate for 127.0.0.1 (broker.pki, as the product makes it)."""
    return ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def docs(pki: Pki) -> Iterator[DocServer]:
    """A tiny HTTPS object store serving documents to a Manager under test."""
    server = DocServer(pki).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """The real stack with simulated printers (tests/support/live.py), shared by one module."""
    stack = LiveStack(tmp_path_factory.mktemp("live")).start()
    yield stack
    stack.stop()


@pytest.fixture
def user_token(live: LiveStack, request: pytest.FixtureRequest) -> str:
    """A token for a user of this test alone, so it sees only its own jobs."""
    name = "u-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return live.token_for(name)


@pytest.fixture
def user_client(live: LiveStack, user_token: str) -> Iterator[CloudImagingClient]:
    """That user's client of the live stack."""
    client = live.client(token=user_token)
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres() -> None:
    """The machine's PostgreSQL (tests/support/pg.py): skip without it, fail under CI=true."""
    from tests.support import pg

    pg.require()


@pytest.fixture
def pg_database(postgres: None) -> Iterator[str]:
    """A new PostgreSQL database of this test alone (its SQLAlchemy URL), dropped after."""
    from tests.support import pg

    name = pg.create_database()
    yield pg.url(name)
    pg.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The service's database_url, once on SQLite (a file of its own) and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'service.db'}"
    return request.getfixturevalue("pg_database")
