"""A device owner in the console, in a real browser: registers a device, runs the enrollment
command the page shows (as a subprocess, exactly as shown), sees the device come online, shares
it with a user, revokes it, and the user's page shows it revoked."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES
from tests.support.browser import new_page, secure_live, shot, sign_in

PASSWORD = "owner test password"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    stack = secure_live(tmp_path_factory.mktemp("secure"))
    yield stack
    stack.stop()


def _person(live: Any, name: str, role: str) -> str:
    async def make() -> None:
        made = await live.stack.http.post("/api/v1/users", json={"name": name, "role": role})
        assert made.status_code == 201, made.text
        done = await live.stack.http.put(f"/api/v1/users/{name}/password", json={"password": PASSWORD})
        assert done.status_code == 200, done.text

    live.call(make())
    return name


def test_owner_registers_enrolls_shares_and_revokes(secure: Any, browser: Any, tmp_path: Path) -> None:
    owner, user = _person(secure, "olga", "owner"), _person(secure, "ivy", "user")
    page = new_page(browser, tmp_path)
    page.on("dialog", lambda dialog: dialog.accept())  # the revoke confirmation
    sign_in(page, secure.url, owner, PASSWORD, "/devices")
    page.get_by_label("Device id").fill("enr-web")
    page.get_by_role("button", name="Register").click()
    command = page.locator("pre.command").inner_text()
    fingerprint = page.locator("code.fingerprint").inner_text()
    shot(page, tmp_path, "registered")
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(secure.ca.read_text())).hexdigest().upper()
    assert fingerprint.replace(":", "") == digest

    # On the "device": a Manager config naming its service, then the command as shown.
    device = tmp_path / "device"
    device.mkdir()
    (device / "manager.json").write_text(json.dumps({
        "device_id": "enr-web", "state_dir": "state", "keepalive": 5, "request_timeout": 3.0,
        "services": [{"kind": "print", "name": "enr-web", "driver": "file",
                      "driver_options": {"output_dir": str(device / "output")},
                      "capabilities": SIMULATED_PRINTER_CAPABILITIES, "make_and_model": "enrolled printer"}]}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "-e", "-c", command], cwd=device, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "enrolled as device enr-web" in run.stdout
    secure.call(secure.stack.start_enrolled(device / "manager.json"))

    card = page.locator("section.device[data-device=enr-web]")
    card.locator(".device-health", has_text="online").wait_for()
    assert "identity: certificate" in card.inner_text()
    card.get_by_label("Share with").select_option("user")
    card.get_by_label("Name").fill(user)
    card.get_by_role("button", name="Share").click()
    card.locator("li", has_text=f"user {user}").wait_for()
    shot(page, tmp_path, "online-shared")

    their = new_page(browser, tmp_path)
    sign_in(their, secure.url, user, PASSWORD, "/printers")
    their.locator("article[data-service=enr-web] .service-state[data-state=idle]").wait_for()

    card.get_by_role("button", name="Revoke enr-web").click()
    card.locator(".device-health", has_text="revoked").wait_for()
    # The user's page refreshes itself: the printer now says revoked, in words and symbol.
    revoked = their.locator("article[data-service=enr-web] .service-state[data-state=revoked]")
    revoked.wait_for()
    assert "revoked" in revoked.inner_text()
    assert "credentials were revoked" in their.locator("article[data-service=enr-web]").inner_text()
    shot(their, tmp_path, "user-sees-revoked")
