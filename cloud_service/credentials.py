"""The one reader of ``Authorization`` headers, for the HTTP API and the IPP front alike.

Two schemes carry an API token: ``Bearer <token>``, and ``Basic`` with the user name and the
token as the password (what IPP clients such as CUPS can send). Parsing is a pure function, so
both fronts agree on what a header means; what each answers on failure (a JSON 401 with an audit
event, an IPP Basic challenge) stays with the front.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from cloud_service.auth import User, authenticate
from cloud_service.store import JobStore


@dataclass(frozen=True)
class Credentials:
    """A token from an ``Authorization`` header; ``user`` is the name a Basic header gave."""

    scheme: Literal["bearer", "basic"]
    token: str
    user: str | None = None


def parse_authorization(header: str) -> Credentials | None:
    """The credentials in an ``Authorization`` value, or None if it holds none we take
    (empty, another scheme, Bearer without a token, Basic that is not base64 ``user:token``)."""
    scheme, _, rest = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return Credentials("bearer", rest.strip()) if rest else None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, token = decoded.partition(":")
        return Credentials("basic", token, name) if sep else None
    return None


async def user_for(store: JobStore, credentials: Credentials | None) -> User | None:
    """The user the credentials stand for, or None (no, unknown, revoked or expired token, a
    disabled user). The token decides who you are; a Basic user name must agree with it."""
    if credentials is None:
        return None
    user = await authenticate(store, credentials.token)
    if user is None or (credentials.user is not None and user.name != credentials.user):
        return None
    return user
