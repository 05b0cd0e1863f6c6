"""Refusals: why the service says no, in one leaf module every layer may import.

A ``Refusal`` carries what a client needs to act on it (an HTTP-like status, a stable JSON
error code, the attribute at fault and what is supported instead). The domain raises it; the
HTTP and IPP fronts translate it, so the domain never imports a transport.
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A refusal with a status (HTTP's numbers, also mapped to IPP statuses) and an error code."""

    def __init__(self, status: int, code: str, message: str, attribute: str | None = None,
                 supported: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.attribute = attribute
        self.supported = supported
