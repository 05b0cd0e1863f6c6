"""MQTT topic names, in one place.

Each device owns one subtree ``ci/v1/dev/{device_id}/``:

- ``.../up``       device -> cloud: every report and request (hello, attributes, fetch-job, ...).
- ``.../down``     cloud -> device: every notification and reply (sync, job-fetchable, reply, ...).
- ``.../presence`` device -> cloud: "online" on connect, the Last Will "offline" on loss.

One topic per direction, not one per operation: MQTT orders messages within a topic only, so
a device's job-status reports can never overtake each other, and a broker ACL is three lines.
The message type travels in the msgpack envelope (schemas.messages).
"""

from __future__ import annotations

import re

PREFIX = "ci/v1/dev"

#: A device id: DNS-label-like so it is safe in topics, file names, certificates and URLs.
DEVICE_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")

#: The username the Cloud Service uses on the broker; no device may take it.
SERVICE_USERNAME = "cloud-service"


def valid_device_id(device_id: str) -> bool:
    return bool(DEVICE_ID_RE.match(device_id)) and device_id != SERVICE_USERNAME


def up(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/up"


def down(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/down"


def presence(device_id: str) -> str:
    return f"{PREFIX}/{device_id}/presence"


#: What the Cloud Service subscribes to (on a cluster: behind ``$share/cloud/``).
SERVICE_SUBSCRIPTIONS = (f"{PREFIX}/+/up", f"{PREFIX}/+/presence")


def parse(topic: str) -> tuple[str, str] | None:
    """Split ``ci/v1/dev/{id}/{leaf}`` into (device_id, leaf); None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        return None
    device_id, leaf = parts[3], parts[4]
    if not valid_device_id(device_id) or leaf not in ("up", "down", "presence"):
        return None
    return device_id, leaf


def device_may_publish(device_id: str, topic: str) -> bool:
    """ACL: a device publishes only to its own up and presence topics."""
    return topic in (up(device_id), presence(device_id))


def device_may_subscribe(device_id: str, topic_filter: str) -> bool:
    """ACL: a device subscribes only to its own down topic (no wildcards)."""
    return topic_filter == down(device_id)
