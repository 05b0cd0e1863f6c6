"""The deploy/mosquitto configuration on a real Mosquitto 2.x (skipped without it, failed under CI)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.credentials import CredentialStore
from tests.support.brokers import (
    DEV_A,
    DEV_B,
    MOSQUITTO_DIR,
    QUIET,
    BrokerContract,
    MosquittoHandle,
    MqttTestClient,
    connect_code,
    mosquitto_broker,
    render_mosquitto_conf,
    wait_until,
)

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoHandle]:
    with mosquitto_broker(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


class TestMosquittoContract(BrokerContract):
    SUBACK_REFUSES = False


def test_client_id_is_replaced_by_the_username(broker: MosquittoHandle) -> None:
    """use_username_as_clientid: dev-a claiming client id dev-b neither kicks dev-b nor gets its topics."""
    pw_a, pw_b = broker.add_user("cid-a"), broker.add_user("cid-b")
    with (
        MqttTestClient(broker, "cid-b", pw_b) as b,
        MqttTestClient(broker, "cid-a", pw_a, client_id="cid-b") as a,
        MqttTestClient(broker, "cloud-service", broker.add_user("cloud-service")) as svc,
    ):
        assert b.connect() == 0
        assert b.subscribe("ci/v1/dev/cid-b/down") == [1]
        assert a.connect() == 0
        a.subscribe("ci/v1/dev/cid-b/down")
        assert svc.connect() == 0
        assert svc.publish("ci/v1/dev/cid-b/down", b"for b")
        msg = b.wait_message(5)
        assert msg is not None and msg.payload == b"for b"
        assert not b.disconnected.is_set()
        assert a.collect(QUIET) == []


def test_credential_store_pbkdf2_file_works_with_mosquitto(broker: MosquittoHandle) -> None:
    """broker.credentials can write Mosquitto's $7$ format, so one tool manages both brokers."""
    store = CredentialStore(broker.passwd, scheme="pbkdf2-sha512")
    store.set("store-made", "s3cret-from-the-store")
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: connect_code(broker, "store-made", "s3cret-from-the-store") == 0, 10, 0.1)
    assert connect_code(broker, "store-made", "wrong") != 0
    # mosquitto_passwd's own lines are still readable by the store.
    assert store.verify(DEV_A, broker.add_user(DEV_A, "pw-from-mosquitto-passwd"))


def test_template_has_no_unfilled_placeholder(tmp_path: Path) -> None:
    values = {
        k: f"/x/{k}"
        for k in ("BIND_HOST", "PORT", "CAFILE", "CERTFILE", "KEYFILE", "PASSWORD_FILE", "ACL_FILE", "RUN_AS_USER")
    }
    text = render_mosquitto_conf(tmp_path / "m.conf", values).read_text()
    assert "${" not in text
    for line in ("allow_anonymous false", "use_username_as_clientid true", "retain_available false"):
        assert line in text.splitlines()
    assert "listener /x/PORT /x/BIND_HOST" in text
    assert (MOSQUITTO_DIR / "README.md").exists()


def test_user_removed_while_running_is_refused(broker: MosquittoHandle) -> None:
    pw = broker.add_user(DEV_B + "-gone")
    broker.remove_user(DEV_B + "-gone")
    assert connect_code(broker, DEV_B + "-gone", pw) != 0
