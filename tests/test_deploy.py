"""deploy/: the Compose file and the Kubernetes manifests are valid (docker-compose config,
kubernetes-validate) and carry exactly the environment table the cluster launcher uses
(deploy/cluster.env), so the three cannot drift; the HAProxy and Mosquitto pieces the launcher
writes are the ones deploy/ ships, and HAProxy accepts them."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.pki import ensure_pki
from cloud_service.cluster import (
    DEPLOY,
    LocalCluster,
    env_table,
    find_tool,
    haproxy_config,
    mosquitto_acl,
    replica_environment,
)
from cloud_service.config import ServiceConfig

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
K8S_VERSION = "1.30"


def _require(tool: str | None, reason: str) -> str:
    if tool:
        return tool
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("replica-")}


# -- one table ------------------------------------------------------------------------------------


def test_table_names_are_service_config_fields() -> None:
    table = env_table()
    assert table, "deploy/cluster.env is empty"
    fields = {f"CLOUDIMAGING_{name.upper()}" for name in ServiceConfig.model_fields}
    # Fields that other parts of the service add (S3, object store) may be missing here before
    # they land; every other name must be a field.
    pending = {n for n in table if n.startswith(("CLOUDIMAGING_S3_", "CLOUDIMAGING_OBJECT_STORE"))}
    assert set(table) - pending <= fields, sorted(set(table) - pending - fields)


def test_launcher_passes_exactly_the_table(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, replicas=2)
    cluster.pki = ensure_pki(tmp_path / "pki")
    cluster.passwords = {cluster.service_user(i): "pw" for i in range(2)}
    cluster.replica_ports = [1001, 1002]
    env = replica_environment(cluster.replica_values(1))
    assert set(env) == set(env_table())
    assert env["CLOUDIMAGING_BROKER_USERNAME"] == "cloud-service.2"
    assert env["CLOUDIMAGING_MQTT_SHARED_GROUP"] == "cloud"
    with pytest.raises(RuntimeError, match="differ"):
        replica_environment({**cluster.replica_values(1), "log_level": "DEBUG"})


def test_compose_replicas_carry_exactly_the_table() -> None:
    compose = _compose()
    replicas = _replicas(compose)
    assert len(replicas) == 3
    for name, service in replicas.items():
        assert service["env_file"] == ["cluster.env"], name
        overrides = set(service.get("environment", {}))
        assert overrides <= set(env_table()), (name, overrides - set(env_table()))
    users = {s["environment"]["CLOUDIMAGING_BROKER_USERNAME"] for s in replicas.values()}
    assert users == {"cloud-service.1", "cloud-service.2", "cloud-service.3"}, "one broker user per replica"
    assert {"mosquitto", "postgres", "s3", "haproxy", "setup"} <= set(compose["services"])


def test_kubernetes_carries_exactly_the_table() -> None:
    docs = _manifests()
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    names = set(config["data"]) | set(secret["stringData"])
    assert not set(config["data"]) & set(secret["stringData"]), "a variable in both"
    assert names == set(env_table()), (sorted(names - set(env_table())), sorted(set(env_table()) - names))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    sources = {(s.get("configMapRef") or s.get("secretRef"))["name"] for s in container["envFrom"]}
    assert sources == {config["metadata"]["name"], secret["metadata"]["name"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}


# -- validators -----------------------------------------------------------------------------------


def test_kubernetes_manifests_validate() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        _require(None, "kubernetes-validate is needed (pip install kubernetes-validate)")
    docs = _manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    _require(None, "docker-compose (Debian package) or the docker compose plugin is needed to check the Compose file")
    raise AssertionError  # not reached


def test_compose_file_validates(tmp_path: Path) -> None:
    command = _compose_command()
    ok = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    broken = _compose()
    broken["services"]["replica-1"]["depends_on"] = 42
    (tmp_path / "cluster.env").write_text((DEPLOY / "cluster.env").read_text())
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    bad = subprocess.run([*command, "-f", str(tmp_path / "compose.yaml"), "config", "-q"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0, "the validator accepted a broken file"


# -- the pieces the launcher writes ---------------------------------------------------------------


def test_compose_haproxy_config_is_the_launchers() -> None:
    shipped = [line for line in (DEPLOY / "haproxy" / "haproxy.cfg").read_text().splitlines()
               if not line.startswith("#")]
    made = haproxy_config("0.0.0.0", 8443, 8404, [(f"replica-{i}", f"replica-{i}", 8443) for i in (1, 2, 3)],
                          Path("/etc/cloudimaging/pki/ca.pem"), "/readyz").splitlines()
    assert shipped == made


def test_haproxy_accepts_the_launchers_config(tmp_path: Path) -> None:
    binary = _require(find_tool("haproxy", "/usr/sbin/haproxy"), "haproxy is needed (apt-get install haproxy)")
    pki = ensure_pki(tmp_path / "pki")
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(haproxy_config("127.0.0.1", 18443, 18404, [("replica-1", "127.0.0.1", 18001),
                                                                ("replica-2", "127.0.0.1", 18002)],
                                   pki.ca_cert, "/healthz"))
    checked = subprocess.run([binary, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_acl_gives_each_replica_the_service_rules() -> None:
    acl = mosquitto_acl(["cloud-service.1", "cloud-service.2"])
    for user in ("cloud-service.1", "cloud-service.2"):
        block = acl.split(f"user {user}\n", 1)[1].split("\nuser ", 1)[0]
        assert "topic read ci/v1/dev/+/up" in block
        assert "topic read ci/v1/dev/+/presence" in block
        assert "topic write ci/v1/dev/+/down" in block
    assert acl.count("pattern write ci/v1/dev/%u/up") == 1
    assert "user cloud-service\n" not in acl
