"""A store hop's greenlet kept for the next hop (cloud_service.greenlets): it behaves as
SQLAlchemy's ``greenlet_spawn`` does (results, exceptions both ways, cancellation, context
variables, ``await_only`` inside), and a finished hop's greenlet runs the next one."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import pytest
from greenlet import getcurrent
from sqlalchemy.util import await_only

from cloud_service import greenlets
from cloud_service.greenlets import spawn

REQUEST = contextvars.ContextVar("request", default="none")


class Token:
    """Something a hop returns or is given; weakly referenceable, to see that nothing keeps it."""


def deep(depth: int, value: object) -> object:
    """A stack of Python frames in the hop, then one await on the event loop."""
    if depth:
        return deep(depth - 1, value)
    return await_only(asyncio.sleep(0, value))


@pytest.fixture(autouse=True)
def no_kept_greenlets() -> None:
    greenlets._kept.free.clear()


async def test_a_hop_returns_what_its_work_returns_after_awaiting_on_the_loop() -> None:
    assert await spawn(deep, 40, "done") == "done"
    assert await spawn(lambda a, b: a + b, 2, 3) == 5  # work that never awaits


async def test_the_next_hop_runs_in_the_greenlet_the_last_one_finished_in() -> None:
    def where() -> object:
        await_only(asyncio.sleep(0))
        return getcurrent()

    first = await spawn(where)
    assert await spawn(where) is first
    assert greenlets._kept.free == [first]


async def test_hops_at_once_each_have_a_greenlet_and_all_are_kept_for_the_next_round() -> None:
    release = asyncio.Event()

    def where() -> object:
        await_only(release.wait())
        return getcurrent()

    async def round_of(n: int) -> set[object]:
        release.clear()
        tasks = [asyncio.create_task(spawn(where)) for _ in range(n)]
        await asyncio.sleep(0)
        release.set()
        return set(await asyncio.gather(*tasks))

    first = await round_of(8)
    assert len(first) == 8
    assert await round_of(8) == first  # no new greenlet
    assert len(greenlets._kept.free) == 8


async def test_no_more_than_keep_greenlets_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(greenlets, "KEEP", 3)
    release = asyncio.Event()
    tasks = [asyncio.create_task(spawn(lambda: await_only(release.wait()))) for _ in range(6)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert len(greenlets._kept.free) == 3


async def test_an_exception_of_the_work_is_the_callers_and_the_greenlet_serves_again() -> None:
    def fails() -> None:
        await_only(asyncio.sleep(0))
        raise LookupError("no such job")

    with pytest.raises(LookupError, match="no such job") as raised:
        await spawn(fails)
    assert any(frame.name == "fails" for frame in raised.traceback)  # where it was raised
    assert await spawn(deep, 5, 7) == 7
    assert len(greenlets._kept.free) == 1


async def test_an_exception_of_an_awaited_coroutine_is_thrown_into_the_work_where_it_awaited() -> None:
    async def driver_error() -> None:
        raise ConnectionResetError("the server went away")

    def catches() -> str:
        try:
            await_only(driver_error())
        except ConnectionResetError as exc:
            return f"handled: {exc}"
        return "not raised"

    assert await spawn(catches) == "handled: the server went away"

    def lets_it_through() -> None:
        await_only(driver_error())

    with pytest.raises(ConnectionResetError):
        await spawn(lets_it_through)


async def test_a_cancelled_hop_unwinds_its_work_and_its_greenlet_serves_the_next_hop() -> None:
    started = asyncio.Event()
    cleaned: list[str] = []

    def waits() -> None:
        started.set()
        try:
            await_only(asyncio.sleep(30))
        except asyncio.CancelledError:
            await_only(asyncio.sleep(0))  # cleanup may still await (a connection closed)
            cleaned.append("closed")
            raise

    task = asyncio.create_task(spawn(waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["closed"]
    assert len(greenlets._kept.free) == 1
    assert await spawn(deep, 3, "after") == "after"


async def test_the_work_sees_the_calling_tasks_context_variables() -> None:
    def read() -> str:
        await_only(asyncio.sleep(0))
        return REQUEST.get()

    async def as_request(name: str) -> str:
        REQUEST.set(name)
        return await spawn(read)

    # Each task's hop sees that task's value, though the hops share kept greenlets.
    assert await asyncio.gather(*(asyncio.create_task(as_request(f"r{i}")) for i in range(5))) \
        == [f"r{i}" for i in range(5)]
    assert await asyncio.create_task(spawn(read)) == "none"


async def test_a_kept_greenlet_holds_neither_the_last_works_arguments_nor_its_result() -> None:
    given = Token()
    made: list[weakref.ref[Token]] = []

    def work(_given: Token) -> Token:
        await_only(asyncio.sleep(0))
        returned = Token()
        made.append(weakref.ref(returned))
        return returned

    result = await spawn(work, given)
    assert result is made[0]()
    watched = [weakref.ref(given), made[0]]
    del given, result
    gc.collect()
    assert [ref() for ref in watched] == [None, None]
    assert len(greenlets._kept.free) == 1


def test_await_only_outside_a_hop_is_refused_as_sqlalchemy_refuses_it() -> None:
    from sqlalchemy.exc import MissingGreenlet

    with pytest.raises(MissingGreenlet):
        await_only(asyncio.sleep(0))
