"""Who may connect as whom and touch which topic: pure rules shared by every enforcement point.

Two kinds of broker user exist:

- a device: username == MQTT client id == device id (schemas.topics.valid_device_id); it
  publishes to its own ``up`` and ``presence`` topics and subscribes to its own ``down`` topic;
- the Cloud Service: username ``cloud-service``, client ids starting with ``cloud-service`` (one
  per replica); it subscribes to every device's ``up``/``presence`` (the wildcard filters of
  schemas.topics.SERVICE_SUBSCRIPTIONS or their exact per-device forms) and publishes to any
  device's ``down`` topic.

Nothing may be retained: a retained publish or a retained Last Will is refused for everyone.
The Mosquitto ACL in deploy/mosquitto/acl states the same rules.
"""

from __future__ import annotations

from schemas import topics

SERVICE_USERNAME = topics.SERVICE_USERNAME


def is_service(username: str | None) -> bool:
    return username == SERVICE_USERNAME


def client_id_allowed(username: str | None, client_id: str | None) -> bool:
    """A device's client id is its username; the service's starts with ``cloud-service``."""
    if not username or not client_id:
        return False
    if is_service(username):
        return client_id.startswith(SERVICE_USERNAME)
    return topics.valid_device_id(username) and client_id == username


def may_publish(username: str | None, topic: str | None) -> bool:
    if not username or not topic:
        return False
    if is_service(username):
        parsed = topics.parse(topic)
        return parsed is not None and parsed[1] == "down"
    return topics.valid_device_id(username) and topics.device_may_publish(username, topic)


def may_subscribe(username: str | None, topic_filter: str | None) -> bool:
    if not username or not topic_filter:
        return False
    if is_service(username):
        if topic_filter in topics.SERVICE_SUBSCRIPTIONS:
            return True
        parsed = topics.parse(topic_filter)
        return parsed is not None and parsed[1] in ("up", "presence")
    return topics.valid_device_id(username) and topics.device_may_subscribe(username, topic_filter)


def may_receive(username: str | None, topic: str | None) -> bool:
    """Delivery-time check (defence in depth): what a subscriber may be sent."""
    if not username or not topic:
        return False
    if is_service(username):
        parsed = topics.parse(topic)
        return parsed is not None and parsed[1] in ("up", "presence")
    return topics.valid_device_id(username) and topic == topics.down(username)


def will_allowed(username: str | None, will_flag: bool, will_topic: str | None, will_retain: bool) -> bool:
    """A Last Will is a publish the broker makes later: same ACL, and never retained."""
    if not will_flag:
        return True
    return not will_retain and may_publish(username, will_topic)
