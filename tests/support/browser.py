"""Playwright driving Debian's Chromium, headless, for the web console's tests.

``chromium()`` gives a running browser or skips with the reason; under ``CI=true`` a missing
Chromium or Playwright fails instead (the tools are installed by ``.ci/run`` and the ``test``
extra). Pages trust the test CA by ignoring certificate errors: Chromium cannot be handed a CA
file, and what is under test is the page, not TLS (the API tests cover that).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CLOUDIMAGING_CHROMIUM", "/usr/bin/chromium"))
#: Generous bounds for a loaded two-core machine (a page step, a job to its end).
STEP_MS = 20_000
JOB_MS = 60_000


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests need {reason} (CI=true: a missing tool fails)")
    pytest.skip(f"browser tests need {reason}")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (its own bundled browsers are never used)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package (pip install -e '.[test]')")
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        _missing(f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, tmp: Path) -> Any:
    """A fresh context (no cookies) and page; console messages and page errors go to a log in
    ``tmp`` so a failing test shows what the page said."""
    context = browser.new_context(ignore_https_errors=True, accept_downloads=True,
                                  viewport={"width": 1100, "height": 800})
    context.set_default_timeout(STEP_MS)
    page = context.new_page()
    log = tmp / "browser.log"

    def note(text: str) -> None:
        with log.open("a") as f:
            f.write(text + "\n")

    page.on("console", lambda msg: note(f"console.{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: note(f"pageerror: {exc}"))
    return page


def sign_in(page: Any, base: str, user: str, password: str, path: str = "/") -> None:
    """Sign in through the form, as a person does, and land on ``path``."""
    page.goto(f"{base}{path}")
    page.wait_for_url("**/login**")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#nav:not([hidden])").wait_for()  # (no wait_for_function: the CSP forbids eval)


def sign_in_by_keyboard(page: Any, base: str, user: str, password: str) -> None:
    """Sign in with the keyboard alone: the user name field has focus, Tab, Enter."""
    page.goto(f"{base}/login")
    page.get_by_label("User name").wait_for()
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.locator("#nav:not([hidden])").wait_for()


def shot(page: Any, tmp: Path, name: str) -> Path:
    """A screenshot in the test's own folder (kept for the reader of a failure)."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def page_errors(tmp: Path) -> list[str]:
    log = tmp / "browser.log"
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if line.startswith("pageerror")]


def secure_live(tmp: Path) -> Any:
    """A LiveStack (a background loop thread, so sync browser tests can drive it) running the
    stack wired for device registration and revocation (tests/support/secstack.py)."""
    from tests.support.live import LiveStack
    from tests.support.secstack import secure_stack

    class SecureLive(LiveStack):
        async def _start(self) -> None:
            self.stack = await self._exit.enter_async_context(secure_stack(self.tmp))

    return SecureLive(tmp).start()


def main_page_shot(page: Any, tmp: Path) -> Path:
    """The README's picture of the console: the visible part of the page as a small palette PNG
    in ``tmp``, also copied to ``$CLOUDIMAGING_CONSOLE_SCREENSHOT`` when that is set (how
    docs/console.png is made)."""
    from PIL import Image

    raw = tmp / "main-raw.png"
    page.screenshot(path=str(raw))
    small = tmp / "main.png"
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=32).save(small, optimize=True)
    target = os.environ.get("CLOUDIMAGING_CONSOLE_SCREENSHOT")
    if target:
        shutil.copyfile(small, target)
    return small
