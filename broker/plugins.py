"""amqtt 0.12.1 plugins: password authentication and per-device topic confinement.

Load them through the broker config's ``plugins`` mapping (broker.embedded does):

    "broker.plugins.DeviceAuthPlugin": {"password_file": "/path/passwd"},
    "broker.plugins.DeviceAclPlugin": {},

and never together with amqtt's AnonymousAuthPlugin (it marks every session anonymous, which
turns off offline queueing for everyone).

How amqtt calls them (read from amqtt/broker.py, 0.12.1):

- ``authenticate(session=)`` runs after CONNECT is parsed; False -> CONNACK 0x05 and close.
- ``topic_filtering(session=, topic=, action=)`` runs for SUBSCRIBE (False -> SUBACK 0x80), for
  PUBLISH (False -> the message was already PUBACKed; it is silently dropped) and for RECEIVE
  (per subscriber, at delivery time; False -> that subscriber is skipped).
- ``topic_filtering`` does not see the message, so not its retain flag. amqtt fires the
  ``broker_message_received`` event (with the message) just before the PUBLISH check, as a task
  scheduled ahead of the check's own task; asyncio runs ready tasks in FIFO order, so
  ``on_broker_message_received`` has recorded the message when ``topic_filtering`` runs, and a
  retained publish is denied like any other forbidden publish (dropped, never stored, never
  forwarded). ``on_broker_retained_message`` is a second net: anything that still lands in the
  broker's retained store is deleted at once.
- Last Wills bypass ``topic_filtering`` entirely (amqtt broadcasts them directly), so the auth
  plugin refuses a CONNECT whose will topic the user could not publish to, or whose will is
  retained.
- amqtt sends retained messages on every CONNECT and SUBSCRIBE without any ACL check; since
  nothing can be retained here, there is nothing to leak.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import ApplicationMessage, Session

from broker import acl
from broker.credentials import CredentialStore, shared_store
from schemas import topics

log = logging.getLogger("broker.plugins")


def _peer(session: Session) -> str:
    return f"{session.remote_address}:{session.remote_port}"


#: CONNACK return codes (MQTT 3.1.1, 3.2.2.3) used when refusing.
BAD_USERNAME_OR_PASSWORD = 0x04
NOT_AUTHORIZED = 0x05


class GateTickets:
    """One-time tickets from the embedded broker's gate to the auth plugin.

    A device that authenticated with its client certificate has no password. The gate, which
    saw the certificate, rewrites its CONNECT with username = the certificate's device id and
    password = a fresh random ticket; the auth plugin (which cannot see the TLS layer) accepts
    the ticket once. Tickets never leave the process.
    """

    def __init__(self) -> None:
        self._tickets: dict[str, tuple[str, str]] = {}

    def issue(self, client_id: str, username: str) -> str:
        ticket = "gate-" + secrets.token_urlsafe(32)
        self._tickets[client_id] = (username, ticket)
        return ticket

    def redeem(self, client_id: str | None, username: str | None, password: str | None) -> bool:
        held = self._tickets.get(client_id or "")
        if held is None or password is None or held[0] != username:
            return False
        if not hmac.compare_digest(held[1], password):
            return False
        del self._tickets[client_id or ""]
        return True


GATE_TICKETS = GateTickets()


def check_connect(
    store: CredentialStore,
    *,
    username: str | None,
    password: str | None,
    client_id: str | None,
    will_flag: bool,
    will_topic: str | None,
    will_retain: bool,
    cert_identity: str | None = None,
    device_passwords: bool = True,
) -> tuple[int, str] | None:
    """(CONNACK code, reason) when a CONNECT must be refused, None when it may proceed.

    ``cert_identity`` is the device id of a verified, unrevoked client certificate (the
    caller checked chain and CRL): the device is who the certificate says, whatever password
    it sends, and the username, if any, must be the same. ``device_passwords=False`` refuses
    password logins for devices (the service keeps its password).

    Blocking (scrypt on a cache miss): call it in a thread. Shared by the auth plugin and the
    embedded broker's pre-authentication gate.
    """
    if cert_identity is not None:
        if not topics.valid_device_id(cert_identity):
            return NOT_AUTHORIZED, f"certificate CN {cert_identity!r} is not a device id"
        if username and username != cert_identity:
            return NOT_AUTHORIZED, f"username {username!r} differs from the certificate's {cert_identity!r}"
        if not acl.client_id_allowed(cert_identity, client_id):
            return NOT_AUTHORIZED, f"client id {client_id!r} not allowed for this certificate"
        if not acl.will_allowed(cert_identity, will_flag, will_topic, will_retain):
            return NOT_AUTHORIZED, f"will topic {will_topic!r} (retain={will_retain}) not allowed"
        return None
    if not username:
        return NOT_AUTHORIZED, "no username"
    if not password:
        return BAD_USERNAME_OR_PASSWORD, "no password"
    if not acl.client_id_allowed(username, client_id):
        return NOT_AUTHORIZED, f"client id {client_id!r} not allowed for this user"
    if not acl.will_allowed(username, will_flag, will_topic, will_retain):
        return NOT_AUTHORIZED, f"will topic {will_topic!r} (retain={will_retain}) not allowed"
    if not device_passwords and not acl.is_service(username):
        return NOT_AUTHORIZED, "devices must authenticate with a client certificate"
    if not store.verify(username, password):
        return BAD_USERNAME_OR_PASSWORD, "bad username or password"
    return None


async def check_connect_async(store: CredentialStore, **connect: Any) -> tuple[int, str] | None:
    """``check_connect`` on the event loop when it costs microseconds (a certificate, a device
    token's HMAC-SHA256, a remembered success, an unknown user), in a worker thread when it
    would run scrypt or PBKDF2: a thread hop costs more than an HMAC, a scrypt would stall
    every other client of the loop."""
    if connect.get("cert_identity") is not None or store.verify_is_cheap(connect.get("username") or "",
                                                                         connect.get("password") or ""):
        return check_connect(store, **connect)
    return await asyncio.to_thread(check_connect, store, **connect)


class DeviceAuthPlugin(BaseAuthPlugin):
    """Username/password from a CredentialStore file; client id and Last Will bound to the user."""

    @dataclass
    class Config:
        password_file: str = ""
        """Path of the CredentialStore file (``username:hash`` lines)."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        if not self.config.password_file:
            raise ValueError("DeviceAuthPlugin needs 'password_file'")
        self.store = shared_store(Path(self.config.password_file))

    async def authenticate(self, *, session: Session) -> bool | None:
        if GATE_TICKETS.redeem(session.client_id, session.username, session.password):
            return True  # the gate authenticated this CONNECT by its client certificate
        refusal = await check_connect_async(
            self.store,
            username=session.username,
            password=session.password,
            client_id=session.client_id,
            will_flag=bool(session.will_flag),
            will_topic=session.will_topic,
            will_retain=bool(session.will_retain),
        )
        if refusal is None:
            return True
        log.warning(
            "refused CONNECT from %s: user=%r client_id=%r: %s",
            _peer(session),
            session.username,
            session.client_id,
            refusal[1],
        )
        return False


class DeviceAclPlugin(BaseTopicPlugin):
    """Confines each device to its own topics and the service to the device subtrees; no retain."""

    @dataclass
    class Config:
        """No options: the rules are broker.acl's."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        # The message each client most recently sent, recorded by on_broker_message_received
        # just before amqtt's PUBLISH check for that same message (see module docstring).
        self._last_message: dict[str, ApplicationMessage] = {}

    async def on_broker_message_received(self, *, client_id: str, message: ApplicationMessage | None) -> None:
        # No await before the assignment: it must happen before topic_filtering's task runs.
        if message is not None and client_id:
            self._last_message[client_id] = message

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Session) -> None:
        self._last_message.pop(client_id, None)

    async def on_broker_retained_message(self, *, client_id: str | None, retained_message: Any) -> None:
        # client_id is None for the broker-wide retained store (set by a retained publish or will);
        # otherwise amqtt is queueing for an offline session, which is normal delivery.
        if client_id is not None or not retained_message.data:
            return
        store = self.context.retained_messages  # type: ignore[attr-defined]
        if store.get(retained_message.topic) is retained_message:
            del store[retained_message.topic]
            log.warning("deleted a retained message on %r: retained messages are not allowed", retained_message.topic)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None:
            return False
        username = session.username
        if action == Action.PUBLISH:
            message = self._last_message.pop(session.client_id or "", None)
            if message is not None and message.topic == topic and message.retain:
                log.warning(
                    "denied retained PUBLISH by user=%r client_id=%r to %r (retain is not allowed)",
                    username,
                    session.client_id,
                    topic,
                )
                return False
            allowed = acl.may_publish(username, topic)
        elif action == Action.SUBSCRIBE:
            allowed = acl.may_subscribe(username, topic)
        elif action == Action.RECEIVE:
            allowed = acl.may_receive(username, topic)
        else:
            allowed = False
        if not allowed:
            log.warning(
                "denied %s by user=%r client_id=%r on %r",
                action.value if action else action,
                username,
                session.client_id,
                topic,
            )
        return allowed
