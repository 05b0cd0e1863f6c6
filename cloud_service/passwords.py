"""Passwords of people, for the web console's sign-in only (scripts keep using API tokens).

Hashed with Argon2id (argon2-cffi, the maintained binding of the reference implementation), one
row per user in a table of its own, so a user without a password simply cannot sign in to the
console. A password is set by an admin (``PUT /api/v1/users/{name}/password``,
``cloudimaging users passwd NAME``) or by the user, who must give the current one. Setting a
password ends the user's console sessions; it does not touch their tokens.
"""

from __future__ import annotations

import asyncio
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud_service.auth import USER_NAME_RE
from cloud_service.db import Base, UserRow
from cloud_service.errors import Refusal
from cloud_service.store import JobStore

#: Long enough to resist guessing at the login's rate limit; bounded so hashing stays cheap.
MIN_LENGTH = 10
MAX_LENGTH = 256

#: Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): dear enough for a
#: guesser, cheap enough that a busy two-core service still answers sign-ins promptly.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
#: Verified when a user has no password, so an unknown name costs as much as a wrong password.
_DUMMY = _hasher.hash("no password is set for this user")


class PasswordRow(Base):
    """A user's password as an Argon2id hash (the PHC string: algorithm, parameters, salt)."""

    __tablename__ = "user_passwords"
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(255))


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise Refusal(422, "bad-request", f"a password is {MIN_LENGTH} to {MAX_LENGTH} characters",
                      attribute="password")
    return password


async def set_password(store: JobStore, name: str, password: str, *, by: str) -> None:
    """Store ``password`` for the existing user ``name`` (404 if there is none)."""
    check_password(password)
    async with store.reads() as s:
        if await s.get(UserRow, name) is None:
            raise Refusal(404, "not-found", f"no user {name!r}")
    hashed = await asyncio.to_thread(_hasher.hash, password)
    async with store.sessions.begin() as s:
        if await s.get(UserRow, name) is None:
            raise Refusal(404, "not-found", f"no user {name!r}")
        row = await s.get(PasswordRow, name)
        if row is None:
            s.add(PasswordRow(user=name, hash=hashed, updated_at=time.time(), updated_by=by))
        else:
            row.hash, row.updated_at, row.updated_by = hashed, time.time(), by


async def verify_password(store: JobStore, name: str, password: str) -> bool:
    """True if ``name`` has a password and ``password`` is it; the same work for an existing
    user as for an unknown one (a name that can never exist costs nothing: it reveals nothing)."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH or not USER_NAME_RE.match(name or ""):
        return False
    async with store.reads() as s:
        row = await s.get(PasswordRow, name) if name else None
    try:  # Argon2 is slow on purpose: off the event loop
        ok = await asyncio.to_thread(_hasher.verify, row.hash if row is not None else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return False
    if ok and row is not None and _hasher.check_needs_rehash(row.hash):
        async with store.sessions.begin() as s:
            fresh = await s.get(PasswordRow, name)
            if fresh is not None:
                fresh.hash = await asyncio.to_thread(_hasher.hash, password)
    return ok and row is not None


async def has_password(store: JobStore, name: str) -> bool:
    async with store.reads() as s:
        return await s.get(PasswordRow, name) is not None
