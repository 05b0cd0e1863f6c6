"""``broker.eventloop``: which loop the broker and the service run on, and what a setting that
cannot be honoured does."""

from __future__ import annotations

import asyncio
import sys

import pytest

from broker.eventloop import chosen_loop, run_loop, running_loop_name


async def _name() -> str:
    return running_loop_name()


def test_auto_runs_on_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")
    assert chosen_loop("auto") == "uvloop"
    assert run_loop(_name()) == "uvloop"
    assert run_loop(_name(), "uvloop") == "uvloop"


def test_asyncio_is_pythons_own_loop() -> None:
    assert chosen_loop("asyncio") == "asyncio"
    assert run_loop(_name(), "asyncio") == "asyncio"
    assert type(asyncio.new_event_loop()).__module__.startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_by_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert chosen_loop("auto") == "asyncio"
    assert run_loop(_name()) == "asyncio"
    with pytest.raises(SystemExit, match="uvloop was asked for, and it is not installed"):
        chosen_loop("uvloop")


def test_an_unknown_loop_is_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown event loop 'tornado'"):
        chosen_loop("tornado")
