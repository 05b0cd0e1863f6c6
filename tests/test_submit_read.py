"""A submit's one read (``Admission.read_usable``), on the real store (SQLite and PostgreSQL):
the service with its device, its policy and the user's quotas on it in one statement, with
the same answers as the reads it replaced (``sharing.usable_in``, ``Admission.read``): only
a service the user sees, only that service's policy and quotas, the user's own and the
each-user one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from cloud_service.accounting import Admission, set_policy, set_quota
from cloud_service.auth import User
from cloud_service.sharing import add_share, usable_in
from cloud_service.store import JobStore
from schemas.enums import ServiceKind
from schemas.messages import Attributes, PrintServiceAttributes, Reply, decode_down, encode
from tests.support.inprocess import ServiceParts, service_parts
from tests.test_change_statements import on_postgresql, statements

ALICE = User("alice", "user")
BOB = User("bob", "user")


@pytest.fixture
async def parts(tmp_path: Path, database_url: str) -> AsyncIterator[ServiceParts]:
    async with service_parts(tmp_path, database_url=database_url) as parts:
        protocol = parts.devices()
        for device, names in (("dev-1", ("office", "lobby")), ("dev-2", ("annex",))):
            out = await protocol.handle(device, "up", encode(Attributes(
                services=[PrintServiceAttributes(name=n) for n in names])))
            reply = decode_down(encode(out[0][1]))
            assert isinstance(reply, Reply) and reply.ok
        await parts.store.set_device("dev-1", owner="olga")
        await parts.store.set_device("dev-2", owner="olga")
        yield parts


async def both(store: JobStore, admission: Admission, user: User, name: str) -> tuple[object, object]:
    """(the one read's answer, the answer of the reads it replaced), in one hop each."""
    def one(conn: Connection) -> object:
        return admission.read_usable(conn, user, ServiceKind.PRINT.value, name)

    def apart(conn: Connection) -> object:
        found = usable_in(conn, user, ServiceKind.PRINT.value, name)
        return None if found is None else (found, admission.read(conn, user, found[0]))

    return await store.read(one), await store.read(apart)


def summary(answer: object) -> object:
    """What the two answers are compared on: the rows' identities and the values decided on."""
    if answer is None:
        return None
    (service, device), (policy, quotas) = answer  # type: ignore[misc]
    return (service.id, service.name, device.id if device else None,
            None if policy is None else (policy.service_name, policy.price_per_impression),
            sorted((q.user, q.impression_limit, q.period_days) for q in quotas))


async def test_the_one_read_answers_as_the_reads_it_replaced(parts: ServiceParts) -> None:
    store = parts.store
    admission = Admission(store, parts.config)
    # Rules on the office and on its neighbour: only the office's may come with the office.
    await set_policy(store, "dev-1", "office", "olga", price_per_impression=3)
    await set_policy(store, "dev-1", "lobby", "olga", price_per_impression=9)
    await set_quota(store, "dev-1", "office", "*", 100, 30.0, "olga")
    await set_quota(store, "dev-1", "office", "alice", 7, None, "olga")
    await set_quota(store, "dev-1", "lobby", "alice", 1, None, "olga")
    await set_quota(store, "dev-1", "office", "carol", 2, None, "olga")

    # Nobody shared anything: alice sees nothing, the owner and an admin see the office.
    for user, name in ((ALICE, "office"), (ALICE, "nowhere")):
        one, apart = await both(store, admission, user, name)
        assert one is None and apart is None
    for user in (User("olga", "user"), User("root", "admin")):
        one, apart = await both(store, admission, user, "office")
        assert summary(one) == summary(apart) == (
            summary(one)[0], "office", "dev-1", ("office", 3), [("*", 100, 30.0)])  # type: ignore[index]

    await add_share(store, "dev-1", "office", "user", "alice", "olga")
    await add_share(store, "dev-1", "lobby", "user", "bob", "olga")
    one, apart = await both(store, admission, ALICE, "office")
    assert summary(one) == summary(apart)
    assert summary(one)[3:] == (("office", 3), [("*", 100, 30.0), ("alice", 7, None)])  # type: ignore[index]
    # Bob: the each-user quota only; the lobby (shared with him) has no each-user quota and
    # no quota of his, so none; the annex (another device, not shared) is not his to see.
    one, apart = await both(store, admission, BOB, "office")
    assert one is None and apart is None
    one, apart = await both(store, admission, BOB, "lobby")
    assert summary(one) == summary(apart) and summary(one)[3:] == (("lobby", 9), [])  # type: ignore[index]
    one, apart = await both(store, admission, BOB, "annex")
    assert one is None and apart is None


async def test_a_submit_reads_its_service_policy_and_quotas_in_one_statement(parts: ServiceParts) -> None:
    store = parts.store
    admission = Admission(store, parts.config)
    await set_quota(store, "dev-1", "office", "*", 100, None, "olga")
    await add_share(store, "dev-1", "office", "user", "alice", "olga")
    with statements(store) as sent:
        found = await store.read(lambda conn: admission.read_usable(conn, ALICE, ServiceKind.PRINT.value, "office"))
    assert summary(found)[3:] == (None, [("*", 100, None)])  # type: ignore[index]
    # The one statement, and the device's shares (alice neither owns it nor is an admin). (On
    # SQLite the statements run on the store's own thread engine, which nothing listens to.)
    if on_postgresql(store):
        assert len(sent) == 2 and sent[0].startswith("SELECT services.id") and sent[1].startswith("SELECT shares"), sent
