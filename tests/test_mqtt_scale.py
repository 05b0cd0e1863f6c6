"""The service's MQTT identity and subscriptions: a unique client id by default (replicas must
not knock each other off) that the embedded broker accepts for the service user, and shared
subscriptions only when a group is configured."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from broker import acl
from cloud_service.config import ServiceConfig
from cloud_service.mqtt import default_client_id, service_subscriptions, shared_filter
from schemas import topics


def test_default_client_ids_are_unique_and_accepted_by_the_embedded_broker() -> None:
    ids = {default_client_id() for _ in range(50)}
    assert len(ids) == 50
    for client_id in ids:
        assert client_id.startswith(topics.SERVICE_USERNAME + "-")
        assert acl.client_id_allowed(topics.SERVICE_USERNAME, client_id)
        assert all(ch.isalnum() or ch == "-" for ch in client_id)


def test_plain_subscriptions_without_a_group() -> None:
    assert service_subscriptions(None) == list(topics.SERVICE_SUBSCRIPTIONS)


def test_shared_subscriptions_with_a_group() -> None:
    assert service_subscriptions("cloud") == ["$share/cloud/ci/v1/dev/+/up", "$share/cloud/ci/v1/dev/+/presence"]


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_invalid_group_names_are_refused(group: str) -> None:
    with pytest.raises(ValueError):
        shared_filter(group, "ci/v1/dev/+/up")
    if group:
        with pytest.raises(ValidationError):
            ServiceConfig(mqtt_shared_group=group)


def test_config_defaults_keep_the_embedded_stack_as_it_was() -> None:
    config = ServiceConfig()
    assert config.mqtt_shared_group is None and config.mqtt_client_id is None and config.mqtt_session_expiry == 0
