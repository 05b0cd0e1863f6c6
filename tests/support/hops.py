"""Counting a store's hops to the database: each call of ``JobStore.run`` (a transaction) or
``JobStore._autocommit`` (``read`` and the other work done without a transaction on
PostgreSQL) is one hop (one thread hop on SQLite)."""

from __future__ import annotations

from typing import Any

import pytest


def count_hops(monkeypatch: pytest.MonkeyPatch, store: Any, hops: list[Any] | None = None,
               names: bool = True) -> list[Any]:
    """Patch ``store`` so each hop appends its work (its ``__qualname__`` if ``names``) to ``hops``."""
    hops = [] if hops is None else hops
    for method in ("run", "_autocommit"):
        real = getattr(store, method)

        async def counted(work: Any, real: Any = real) -> Any:
            hops.append(getattr(work, "__qualname__", "work") if names else work)
            return await real(work)

        monkeypatch.setattr(store, method, counted)
    return hops
