"""Bounds of every path parameter, declared once.

A row id is a signed 64-bit integer in every database the service runs on; an id past that
range made SQLite's driver raise ``OverflowError`` and the route answer 500. Declaring the
range here makes FastAPI refuse it (422, in the error envelope) before a handler runs, and
puts the bound in the OpenAPI document, so clients and fuzzers see it too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

#: The largest row id (SQL BIGINT, SQLite INTEGER).
MAX_ROW_ID = 2**63 - 1

JobId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a job's id")]
DocumentNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="a document's number in its job")]
ShareId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a share's id")]
#: A service, user, device or token name in a path: never longer than what the service mints.
PathName = Annotated[str, Path(min_length=1, max_length=255)]
