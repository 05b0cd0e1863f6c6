"""The broker's password file: random device tokens stored under a keyed hash (HMAC-SHA256),
passwords a person chose under scrypt, and entries written before (scrypt, Mosquitto's $7$) still
accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import plugins
from broker.credentials import CredentialStore, check_password, generate_password, hash_password, is_random_token


def _entry(path: Path, username: str) -> str:
    return next(line.split(":", 1)[1] for line in path.read_text().splitlines() if line.startswith(f"{username}:"))


def _other_token(token: str) -> str:
    """The same token with its last character changed: as long, as random-looking, wrong."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_device_token_is_stored_under_a_keyed_hash_and_checked_exactly(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    store = CredentialStore(path)
    token = generate_password()
    store.set("dev-1", token)
    encoded = _entry(path, "dev-1")
    assert encoded.startswith("hmac-sha256$") and token not in path.read_text()
    fresh = CredentialStore(path)  # no cache: the hash itself decides
    assert fresh.verify("dev-1", token)
    assert not fresh.verify("dev-1", _other_token(token))
    assert not fresh.verify("dev-1", "") and not fresh.verify("dev-2", token)
    # Two entries of the same token differ (a salt each), and each checks only its own token.
    again = hash_password(token, "hmac-sha256")
    assert again != encoded and check_password(token, again) and check_password(token, encoded)


def test_a_password_a_person_chose_stays_under_scrypt(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    store = CredentialStore(path)
    store.set("operator", "correct horse battery staple")
    store.set("typed", "a" * 40)  # long, but far too few distinct characters to be random
    assert _entry(path, "operator").startswith("scrypt$") and _entry(path, "typed").startswith("scrypt$")
    fresh = CredentialStore(path)
    assert fresh.verify("operator", "correct horse battery staple") and not fresh.verify("operator", "correct horse")
    assert fresh.verify("typed", "a" * 40)
    with pytest.raises(ValueError):
        hash_password("correct horse battery staple", "hmac-sha256")
    assert not is_random_token("a" * 40) and not is_random_token(generate_password()[:20])
    assert is_random_token(generate_password())


def test_entries_written_before_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    token, human = generate_password(), "hunter2!"
    path.write_text(f"old-device:{hash_password(token, 'scrypt')}\n"
                    f"old-person:{hash_password(human, 'scrypt')}\n"
                    f"mosquitto:{hash_password(token, 'pbkdf2-sha512')}\n")
    store = CredentialStore(path)
    assert store.verify("old-device", token) and not store.verify("old-device", _other_token(token))
    assert store.verify("old-person", human) and not store.verify("old-person", "hunter3!")
    assert store.verify("mosquitto", token)


def test_a_file_for_mosquitto_keeps_its_format(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    CredentialStore(path, scheme="pbkdf2-sha512").set("dev-1", generate_password())
    assert _entry(path, "dev-1").startswith("$7$")  # Mosquitto cannot read hmac-sha256


def test_malformed_keyed_hashes_are_refused_not_raised() -> None:
    token = generate_password()
    for encoded in ("hmac-sha256$", "hmac-sha256$x$y", "hmac-sha256$$", "hmac-sha256$AAAA$AAAA",
                    "hmac-sha256$a$b$c"):
        assert not check_password(token, encoded)


def test_a_token_check_is_cheap_a_scrypt_check_is_not_until_it_succeeded(tmp_path: Path) -> None:
    """What lets the broker check a device token on its event loop and send scrypt to a thread."""
    path = tmp_path / "passwd"
    store = CredentialStore(path)
    token = generate_password()
    store.set("dev-1", token)
    store.set("person", "a password a person chose")
    assert store.verify_is_cheap("dev-1", token) and store.verify_is_cheap("dev-1", _other_token(token))
    assert store.verify_is_cheap("nobody", "x")
    assert not store.verify_is_cheap("person", "a password a person chose")
    assert not store.verify_is_cheap("person", "a wrong guess")
    assert store.verify("person", "a password a person chose")
    assert store.verify_is_cheap("person", "a password a person chose")  # remembered
    assert not store.verify_is_cheap("person", "a wrong guess")  # a guess still costs a scrypt


async def test_the_connect_check_runs_inline_for_a_token_and_in_a_thread_for_scrypt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "passwd"
    store = CredentialStore(path)
    token = generate_password()
    store.set("dev-1", token)
    store.set("person", "a password a person chose")
    threads: list[str] = []
    real = asyncio.to_thread

    async def counted(func, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(kwargs.get("username", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(plugins.asyncio, "to_thread", counted)

    def connect(username: str, password: str) -> dict:
        return {"username": username, "password": password, "client_id": username, "will_flag": False,
                "will_topic": None, "will_retain": False}

    assert await plugins.check_connect_async(store, **connect("dev-1", token)) is None
    refused = await plugins.check_connect_async(store, **connect("dev-1", _other_token(token)))
    assert refused is not None and refused[0] == plugins.BAD_USERNAME_OR_PASSWORD
    assert threads == []
    assert await plugins.check_connect_async(store, **connect("person", "a password a person chose")) is None
    refused = await plugins.check_connect_async(store, **connect("person", "a wrong guess"))
    assert refused is not None and refused[0] == plugins.BAD_USERNAME_OR_PASSWORD
    assert threads == ["person", "person"]
