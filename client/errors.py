"""Exceptions of the client library; the CLI turns each into one ``cloudimaging: error:`` line."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error the client raises on purpose (as opposed to bugs)."""


class ConfigError(ClientError):
    """No usable url/token/CA: nothing configured, or a config file that cannot be used."""


class ApiError(ClientError):
    """The service refused a request, or could not be reached.

    ``status`` is the HTTP status (0 when no response arrived); ``code``, ``message``,
    ``attribute`` and ``supported`` come from the service's error body, so a refused ticket
    names the IPP attribute and what the service supports instead.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        attribute: str | None = None,
        supported: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.attribute = attribute
        self.supported = supported
        super().__init__(describe_error(message, attribute, supported))

    def __repr__(self) -> str:
        return (
            f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r}, "
            f"attribute={self.attribute!r}, supported={self.supported!r})"
        )


class ConnectionFailed(ApiError):
    """No HTTP response: refused connection, TLS failure, timeout. ``status`` is 0."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "connection-failed", message)


def describe_error(message: str, attribute: str | None, supported: Any) -> str:
    """One readable sentence that always names the attribute and the supported values."""
    text = message or "request refused"
    if attribute and attribute not in text:
        text = f"{attribute}: {text}"
    if supported is not None and supported != [] and "supported:" not in text:
        text = f"{text} (supported: {show_value(supported)})"
    return text


def show_value(value: Any) -> str:
    """IPP-ish rendering of a value: lists comma-separated, ranges as lower-upper."""
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, list | tuple) and len(v) == 2 for v in value):
            return ",".join(f"{lo}-{hi}" for lo, hi in value)
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
