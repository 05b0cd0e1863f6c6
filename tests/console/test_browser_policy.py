"""The browser tests' tool policy: without Chromium they skip with the reason on a user's
machine, and fail under CI=true (a missing tool must never pass as a skip there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import browser


def test_missing_chromium_skips_with_the_reason_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"), browser.chromium():
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"), browser.chromium():
        pass
