"""/readyz names the dependency that is down and comes back when it does; /healthz stays
liveness (the broker case, with the service in its own process, is in test_service_process)."""

from __future__ import annotations

from pathlib import Path

from tests.support.stack import running_stack


async def test_readyz_follows_the_object_store(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        ready = await stack.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "objects": "ok"}}

        objects = stack.service.config.objects_dir
        objects.rename(objects.with_name("objects.away"))  # the shared volume is gone
        try:
            down = await stack.http.get("/readyz")
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "not-ready"
            assert down.json()["checks"]["objects"].startswith("unreachable")
            assert down.json()["checks"]["database"] == "ok" and down.json()["checks"]["broker"] == "ok"
            assert (await stack.http.get("/healthz")).status_code == 200
        finally:
            objects.with_name("objects.away").rename(objects)
        assert (await stack.http.get("/readyz")).status_code == 200
