"""The management verbs of the CLI against a real stack: users, tokens, devices, shares,
policies, quotas, credits and accounting; secrets are printed once and only when made."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from tests.support.secstack import cli, secure_stack


async def run(capsys: pytest.CaptureFixture[str], stack: object, token: str, *argv: str) -> tuple[int, str]:
    base = ["--url", stack.service.url, "--token", token, "--ca", str(stack.ca)]  # type: ignore[attr-defined]
    code = await asyncio.to_thread(cli, [argv[0], *base, *argv[1:]])
    out, _ = capsys.readouterr()
    return code, out


async def test_management_verbs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with secure_stack(tmp_path) as stack:
        admin = stack.token
        code, out = await run(capsys, stack, admin, "users", "add", "olga", "--role", "owner", "--with-token")
        assert code == 0
        olga = re.search(r"token \(shown once\): (ci_\S+)", out).group(1)  # type: ignore[union-attr]
        code, out = await run(capsys, stack, admin, "users", "add", "ci-bot", "--service-account", "--with-token",
                              "--json")
        assert code == 0 and json.loads(out)["user"]["kind"] == "service-account"
        bot = json.loads(out)["token"]
        code, out = await run(capsys, stack, admin, "users")
        assert code == 0 and "ci-bot" in out and "service-account" in out and olga not in out

        code, out = await run(capsys, stack, admin, "tokens", "--user", "ci-bot", "--json")
        token_id = json.loads(out)["tokens"][0]["id"]
        assert bot not in out
        assert (await run(capsys, stack, bot, "printers"))[0] == 0
        code, out = await run(capsys, stack, admin, "tokens", "revoke", token_id)
        assert code == 0 and "revoked" in out
        code, _ = await run(capsys, stack, bot, "printers")
        assert code == 1  # 401 now

        code, out = await run(capsys, stack, bot, "users")
        assert code == 1
        code, out = await run(capsys, stack, olga, "users")
        assert code == 1  # 403: owners are not admins

        code, out = await run(capsys, stack, olga, "devices", "register", "cli-dev")
        assert code == 0 and "enrollment code" in out
        code, out = await run(capsys, stack, olga, "shares", "cli-dev", "add", "--everyone")
        assert code == 0 and "everyone" in out
        code, out = await run(capsys, stack, olga, "shares", "cli-dev")
        assert code == 0 and "everyone" in out
        code, out = await run(capsys, stack, olga, "devices")
        assert code == 0 and "cli-dev" in out and "olga" in out
        code, out = await run(capsys, stack, olga, "devices", "revoke", "cli-dev", "--reason", "test")
        assert code == 0 and "revoked" in out

        await stack.add_manager("cli-p")
        code, out = await run(capsys, stack, admin, "policy", "cli-p", "--price", "3")
        assert code == 0 and "price_per_impression: 3" in out
        code, out = await run(capsys, stack, admin, "quota", "cli-p", "*", "10", "--days", "30")
        assert code == 0 and "30d" in out
        code, out = await run(capsys, stack, admin, "credit", "olga", "50")
        assert code == 0 and "balance 50" in out
        code, out = await run(capsys, stack, admin, "accounting")
        assert code == 0 and "IMPRESSIONS" in out
