"""API tokens: random, shown once, stored as SHA-256 (a leaked database leaks no token).

A token belongs to a user (a person or a service account, cloud_service.users); the user's
role and groups decide what it may do, so changing a role takes effect on the next request.
Tokens may expire and may be revoked; their public handle is ``token_id`` (a prefix of the
hash), which is safe to show, log and type.

Every API request authenticates, so a token's user is remembered for ``TOKEN_CACHE_SECONDS``
(per replica, per store): a revocation, a disabled user or a changed role made through this
replica forgets the user's entries at once; one made through another replica takes effect here
within that bound (docs/security.md). Expiry is checked on every request, remembered or not.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from cloud_service.db import TokenRow, UserRow
from cloud_service.store import JobStore


@dataclass(frozen=True)
class User:
    """Who a request acts for: a person or a service account, with role and groups."""

    name: str
    role: str
    groups: tuple[str, ...] = ()
    kind: str = "person"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_register_devices(self) -> bool:
        return self.role in ("admin", "owner")


ROLES = ("admin", "owner", "user")
USER_KINDS = ("person", "service-account")
TOKEN_PREFIX = "ci_"
#: Characters of the hash that identify a token (64 bits: unique in practice, useless to guess).
TOKEN_ID_LENGTH = 16
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class TokenNotFound(Exception):
    pass


#: How long a replica trusts a token's user without asking the database again.
TOKEN_CACHE_SECONDS = 5.0
#: Entries kept at most (all dropped at once beyond it: a flood of tokens cannot grow memory).
TOKEN_CACHE_MAX = 10_000

_tokens = TokenRow.__table__
_users = UserRow.__table__
_SELECT_TOKEN = (select(_tokens.c.user, _tokens.c.role, _tokens.c.revoked_at, _tokens.c.expires_at,
                        _users.c.name, _users.c.role.label("user_role"), _users.c.groups, _users.c.kind,
                        _users.c.disabled)
                 .select_from(_tokens.outerjoin(_users, _users.c.name == _tokens.c.user))
                 .where(_tokens.c.token_hash == bindparam("token_hash")))


class TokenCache:
    """token hash -> (user, the token's expiry, when remembered), for one store."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[User, float | None, float]] = {}

    def get(self, hashed: str, now: float) -> tuple[User, float | None] | None:
        found = self.entries.get(hashed)
        if found is None:
            return None
        user, expires_at, at = found
        if not (at <= now < at + TOKEN_CACHE_SECONDS):
            del self.entries[hashed]
            return None
        return user, expires_at

    def put(self, hashed: str, user: User, expires_at: float | None, now: float) -> None:
        if len(self.entries) >= TOKEN_CACHE_MAX:
            self.entries.clear()
        self.entries[hashed] = (user, expires_at, now)

    def forget(self, hashed: str | None = None, user: str | None = None) -> None:
        """Drop one token's entry, or every entry of ``user``."""
        if hashed is not None:
            self.entries.pop(hashed, None)
        if user is not None:
            for key in [k for k, (u, _, _) in self.entries.items() if u.name == user]:
                del self.entries[key]


_caches: weakref.WeakKeyDictionary[JobStore, TokenCache] = weakref.WeakKeyDictionary()


def token_cache(store: JobStore) -> TokenCache:
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = TokenCache()
    return cache


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(hashed: str) -> str:
    """The public id of a token: the start of its hash (the token cannot be derived from it)."""
    return hashed[:TOKEN_ID_LENGTH]


def check_user_name(name: str) -> str:
    if not USER_NAME_RE.match(name or ""):
        raise ValueError("user names are 1-64 letters, digits and . _ @ + - (starting with a letter or digit)")
    return name


async def ensure_user(store: JobStore, name: str, role: str = "user", *, kind: str = "person",
                      created_by: str | None = None, promote: bool = False) -> None:
    """Create ``name`` if missing; with ``promote`` also set its role (operator bootstrap)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    async with store.sessions.begin() as s:
        row = await s.get(UserRow, name)
        if row is None:
            s.add(UserRow(name=name, kind=kind, role=role, groups=[], created_at=time.time(),
                          created_by=created_by, disabled=False))
        elif promote:
            row.role = role
            row.disabled = False
    token_cache(store).forget(user=name)


async def create_token(store: JobStore, user: str, role: str = "user", *, label: str | None = None,
                       created_by: str | None = None, expires_at: float | None = None) -> str:
    """A new token for ``user`` (created with ``role`` if it does not exist yet); returned once."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    await ensure_user(store, user, role, created_by=created_by)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with store.sessions.begin() as s:
        current = await s.get(UserRow, user)
        s.add(TokenRow(token_hash=token_hash(token), user=user, role=current.role if current else role,
                       created_at=time.time(), label=label, created_by=created_by, expires_at=expires_at))
    return token


async def authenticate(store: JobStore, token: str, now: float | None = None) -> User | None:
    """The user a bearer token stands for, or None (unknown, revoked, expired, user disabled)."""
    if not token or len(token) > 200:
        return None
    now = now if now is not None else time.time()
    hashed = token_hash(token)
    cache = token_cache(store)
    found = cache.get(hashed, now)
    if found is None:
        def work(conn: Connection) -> tuple[User, float | None] | None:
            row = conn.execute(_SELECT_TOKEN, {"token_hash": hashed}).mappings().first()
            if row is None or row["revoked_at"] is not None:
                return None
            if row["name"] is None:  # a token made before users existed (schema 1): its own role stands
                return User(row["user"], row["role"]), row["expires_at"]
            if row["disabled"]:
                return None
            return User(row["name"], row["user_role"], tuple(row["groups"] or ()), row["kind"]), row["expires_at"]

        found = await store.read(work)
        if found is None:
            return None
        cache.put(hashed, found[0], found[1], now)
    user, expires_at = found
    if expires_at is not None and expires_at <= now:
        return None
    return user


async def list_tokens(store: JobStore, user: str | None = None) -> list[TokenRow]:
    query = select(TokenRow).order_by(TokenRow.created_at)
    if user is not None:
        query = query.where(TokenRow.user == user)
    async with store.reads() as s:
        return list(await s.scalars(query))


async def find_token(store: JobStore, tid: str) -> TokenRow:
    """The token whose id is ``tid`` (exactly TOKEN_ID_LENGTH hex characters)."""
    if not re.fullmatch(rf"[0-9a-f]{{{TOKEN_ID_LENGTH}}}", tid or ""):
        raise TokenNotFound(tid)
    async with store.reads() as s:
        rows = list(await s.scalars(select(TokenRow).where(TokenRow.token_hash.startswith(tid))))
    if len(rows) != 1:
        raise TokenNotFound(tid)
    return rows[0]


async def revoke_token(store: JobStore, tid: str, now: float | None = None) -> TokenRow:
    row = await find_token(store, tid)
    async with store.sessions.begin() as s:
        await s.execute(update(TokenRow).where(TokenRow.token_hash == row.token_hash, TokenRow.revoked_at.is_(None))
                        .values(revoked_at=now or time.time()))
    token_cache(store).forget(hashed=row.token_hash)
    return await find_token(store, tid)


async def revoke_user_tokens(store: JobStore, user: str, now: float | None = None) -> int:
    async with store.sessions.begin() as s:
        result = await s.execute(update(TokenRow).where(TokenRow.user == user, TokenRow.revoked_at.is_(None))
                                 .values(revoked_at=now or time.time()))
    token_cache(store).forget(user=user)
    return int(result.rowcount or 0)
