"""The one Authorization parser (cloud_service.credentials) that the HTTP API and the IPP front share."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import pytest

from cloud_service.auth import TOKEN_CACHE_SECONDS, authenticate, create_token, revoke_token, token_hash, token_id
from cloud_service.credentials import Credentials, parse_authorization, user_for
from cloud_service.db import create_schema, make_engine
from cloud_service.store import JobStore
from cloud_service.users import update_user


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_bearer() -> None:
    assert parse_authorization("Bearer ci_abc") == Credentials("bearer", "ci_abc")
    assert parse_authorization("bearer   ci_abc  ") == Credentials("bearer", "ci_abc")
    # A blank token is still a Bearer header (it then fails as an invalid token, not a missing one).
    assert parse_authorization("Bearer  ") == Credentials("bearer", "")


def test_basic() -> None:
    assert parse_authorization(_basic("alice:ci_abc")) == Credentials("basic", "ci_abc", "alice")
    assert parse_authorization("BASIC " + _basic("alice:a:b")[6:]) == Credentials("basic", "a:b", "alice")
    assert parse_authorization(_basic(":ci_abc")) == Credentials("basic", "ci_abc", "")


@pytest.mark.parametrize("header", [
    "",                              # empty
    "Bearer",                        # no token
    "Token ci_abc",                  # wrong scheme
    "Digest username=alice",         # wrong scheme
    "Basic",                         # nothing to decode
    "Basic not*base64",              # malformed base64
    _basic("alice"),                 # no colon
    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
])
def test_malformed_empty_and_other_schemes(header: str) -> None:
    assert parse_authorization(header) is None


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = make_engine(database_url)
    await create_schema(engine)
    store = JobStore(engine)
    yield store
    await store.close()
    await engine.dispose()


async def test_lookup_to_a_user(store: JobStore) -> None:
    token = await create_token(store, "alice", "owner")
    for header in (f"Bearer {token}", _basic(f"alice:{token}")):
        user = await user_for(store, parse_authorization(header))
        assert user is not None and (user.name, user.role) == ("alice", "owner")
    # The token decides who you are: a Basic user name that disagrees is refused.
    assert await user_for(store, parse_authorization(_basic(f"bob:{token}"))) is None
    assert await user_for(store, parse_authorization("Bearer ci_unknown")) is None
    assert await user_for(store, parse_authorization("Bearer  ")) is None
    assert await user_for(store, None) is None
    await revoke_token(store, token_id(token_hash(token)))
    assert await user_for(store, parse_authorization(f"Bearer {token}")) is None


async def test_remembered_users_follow_changes(store: JobStore, database_url: str) -> None:
    """A token's user is remembered per replica: a revocation, a disabled user or a new role
    made through this replica counts on the next request; another replica (a second store on
    the same database) keeps its remembered answer only until it is TOKEN_CACHE_SECONDS old."""
    token = await create_token(store, "carol", "owner")
    other = JobStore(make_engine(database_url))
    try:
        now = time.time()
        assert (await authenticate(store, token, now)).role == "owner"
        assert (await authenticate(other, token, now)).role == "owner"
        await update_user(store, "carol", role="user")
        assert (await authenticate(store, token, now)).role == "user"  # this replica: at once
        assert (await authenticate(other, token, now)).role == "owner"  # the other: remembered...
        later = now + TOKEN_CACHE_SECONDS + 0.1
        assert (await authenticate(other, token, later)).role == "user"  # ...within the bound
        await revoke_token(store, token_id(token_hash(token)))
        assert await authenticate(store, token, later) is None
        assert await authenticate(other, token, later + TOKEN_CACHE_SECONDS + 0.1) is None
        # Expiry is checked on every request, remembered or not.
        expiring = await create_token(store, "carol", "user", expires_at=later + 1)
        assert await authenticate(store, expiring, later) is not None
        assert await authenticate(store, expiring, later + 1) is None
    finally:
        await other.close()
        await other.engine.dispose()
