"""Request/reply over MQTT 3.1.1: correlation by message id, resend on silence.

MQTT 3.1.1 has no response topics or correlation data, so every request carries its own
``id`` and the service's Reply names it in ``re``. A lost request or reply (the embedded
broker drops in-flight QoS 1 messages on disconnect) shows up as silence; the answer is to
send the *same* message again, same id, which the service treats as a duplicate. Time spent
offline does not count against the attempts: a request simply waits for the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from schemas.messages import Message, Reply

log = logging.getLogger("cloudimaging.manager")


class RequestTimeout(Exception):
    """No reply after the allowed number of sends while connected."""

    def __init__(self, message: Message, attempts: int) -> None:
        super().__init__(f"no reply to {getattr(message, 'type', '?')} {message.id} after {attempts} sends")
        self.request = message
        self.attempts = attempts


class Requester:
    """Sends requests through ``send`` and matches Replies to them by message id.

    ``send(message) -> bool`` publishes (False when it could not, e.g. offline). Runs on one
    asyncio loop; ``resolve`` and ``set_online`` are called on that loop too.
    """

    def __init__(self, send: Callable[[Message], bool], timeout: float = 10.0, attempts: int = 5) -> None:
        self._send = send
        self.timeout = timeout
        self.attempts = attempts
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._online = asyncio.Event()

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def outstanding(self) -> int:
        return len(self._waiting)

    def set_online(self, online: bool) -> None:
        if online:
            self._online.set()
        else:
            self._online.clear()

    def resolve(self, reply: Reply) -> bool:
        """Hand a Reply to the request waiting for it; False if none is (late or duplicate)."""
        future = self._waiting.get(reply.re or "")
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    async def request(self, message: Message, timeout: float | None = None, attempts: int | None = 0) -> Reply:
        """Send ``message`` and return its Reply, resending the same message on silence.

        ``attempts`` is the number of sends while connected before RequestTimeout
        (0: the configured default; None: until answered or cancelled).
        """
        timeout = self.timeout if timeout is None else timeout
        limit = self.attempts if attempts == 0 else attempts
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting[message.id] = future
        sends = 0
        try:
            while True:
                await self._online.wait()
                if self._send(message):
                    sends += 1
                try:
                    return await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    pass
                if limit is not None and sends >= limit and self._online.is_set():
                    raise RequestTimeout(message, sends)
                log.info(
                    "resend %s id=%s (no reply after %.1f s, send %d)",
                    getattr(message, "type", "?"),
                    message.id,
                    timeout,
                    sends,
                )
        finally:
            self._waiting.pop(message.id, None)
            if not future.done():
                future.cancel()
