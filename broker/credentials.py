"""Broker credentials: a password file with one ``username:hash`` line per user.

The file is the hand-off between processes: the Cloud Service (or an operator) adds a device's
password and the running broker sees it on the next CONNECT, because every lookup checks whether
the file changed.

Two kinds of secret, two hashes. A device's password is a 192-bit random token
(``generate_password``): nobody can guess it, so a slow hash buys nothing against a stolen file
and costs the broker ~50 ms of CPU on every CONNECT (2,000 devices reconnecting: over a minute
of a core). Tokens are stored as ``hmac-sha256$salt$mac`` (HMAC-SHA256 keyed by a per-entry
salt; a microsecond to check, compared in constant time). Anything that does not look like such
a token (a password a person chose) is stored with scrypt, whose cost is what stands between a
stolen file and a dictionary. Entries written before (scrypt) stay valid, and Mosquitto's
``$7$`` PBKDF2-SHA512 format is read and, on request, written too, so one file can serve
Mosquitto as well (send it SIGHUP). docs/security.md gives the reasoning.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import string
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Scheme = Literal["scrypt", "pbkdf2-sha512", "hmac-sha256"]
#: ``auto``: hmac-sha256 for a random token, scrypt for anything else (see is_random_token).
StoreScheme = Literal["auto", "scrypt", "pbkdf2-sha512"]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
#: Mosquitto's own default; device passwords are 192-bit random tokens, so the count guards little
#: and a single-threaded broker pays it on every CONNECT.
PBKDF2_ITERATIONS = 101
#: Successful verifications remembered; cleared wholesale when exceeded (a reconnect storm needs one
#: entry per device, an attacker cannot add entries without valid passwords).
CACHE_LIMIT = 100_000


#: generate_password's length: 24 random bytes, URL-safe base64.
TOKEN_CHARS = 32
_TOKEN_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")
#: A random 32-character token has ~25 distinct characters; fewer than this reads as typed.
_TOKEN_MIN_DISTINCT = 16


def generate_password() -> str:
    """A fresh random password for a device (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def is_random_token(password: str) -> bool:
    """Whether ``password`` has the shape of generate_password's tokens (>= 32 URL-safe
    characters, >= 192 bits if random) and does not look typed (too few distinct characters).

    Only a guard: the fast hash is for secrets a machine made; a person's password that
    happened to pass would still need 2^100+ guesses only if it were random, which is why
    people's passwords should be set with scheme scrypt explicitly.
    """
    return (len(password) >= TOKEN_CHARS and set(password) <= _TOKEN_ALPHABET
            and len(set(password)) >= _TOKEN_MIN_DISTINCT)


#: Stored schemes that cost milliseconds to check (the others are microseconds or refused).
_SLOW_SCHEMES = ("scrypt$", "pbkdf2-sha512$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, scheme: Scheme = "scrypt") -> str:
    """Encode `password` as ``scrypt$N$r$p$salt$hash``, ``hmac-sha256$salt$mac`` (random tokens
    only: ValueError for anything else) or Mosquitto's ``$7$iter$salt$hash``."""
    if scheme == "hmac-sha256":
        if not is_random_token(password):
            raise ValueError("hmac-sha256 is for random tokens (generate_password); use scrypt")
        salt = secrets.token_bytes(16)
        mac = hmac.new(salt, password.encode(), hashlib.sha256).digest()
        return f"hmac-sha256${_b64(salt)}${_b64(mac)}"
    if scheme == "scrypt":
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2-sha512":
        salt = secrets.token_bytes(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"$7${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown password scheme {scheme!r}")


def check_password(password: str, encoded: str) -> bool:
    """Verify `password` against an encoded hash; False (never an exception) for malformed hashes."""
    try:
        parts = encoded.split("$")
        if parts[0] == "hmac-sha256" and len(parts) == 3:
            salt, want = base64.b64decode(parts[1]), base64.b64decode(parts[2])
            got = hmac.new(salt, password.encode(), hashlib.sha256).digest()
            return len(want) == 32 and hmac.compare_digest(got, want)
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, want = base64.b64decode(parts[4]), base64.b64decode(parts[5])
            got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=128 * n * r * 2)
            return hmac.compare_digest(got, want)
        if parts[0] == "" and parts[1] == "7" and len(parts) == 5:
            iterations = int(parts[2])
            salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
            return hmac.compare_digest(got, want)
    except (ValueError, IndexError):
        return False
    return False


def _check_username(username: str) -> None:
    if not username or any(c in username for c in ":\r\n") or username != username.strip():
        raise ValueError(f"invalid username {username!r}")


class CredentialStore:
    """A password file that reloads itself when another process changes it.

    Thread-safe, so the broker can verify in a worker thread (scrypt costs ~50 ms; a token's
    HMAC a microsecond) without blocking its event loop. Successful verifications are cached in
    memory keyed by (username, sha256(password)) so a reconnect storm costs one hash per device,
    not one per attempt; the cache is dropped whenever the file changes.
    """

    def __init__(self, path: Path, scheme: StoreScheme = "auto") -> None:
        self.path = Path(path)
        self.scheme: StoreScheme = scheme
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, str] = {}
        self._ok: dict[tuple[str, bytes], str] = {}

    # -- reading ---------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> dict[str, str]:
        """Reload when the file's mtime, size or inode changed; return the current users."""
        stamp = self._file_stamp()
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._users = dict(self._parse()) if stamp is not None else {}
                self._stamp = stamp
                self._ok.clear()
            return self._users

    def _parse(self) -> Iterator[tuple[str, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or ":" not in line:
                continue
            username, encoded = line.split(":", 1)
            yield username, encoded

    def usernames(self) -> list[str]:
        return sorted(self._refresh())

    def __contains__(self, username: object) -> bool:
        return username in self._refresh()

    def verify(self, username: str, password: str) -> bool:
        """True when `password` is `username`'s; the hash comparison is constant-time."""
        encoded = self._refresh().get(username)
        if encoded is None or not password:
            return False
        key = (username, hashlib.sha256(password.encode()).digest())
        with self._lock:
            cached = self._ok.get(key)
        if cached is not None and hmac.compare_digest(cached, encoded):
            return True
        if not check_password(password, encoded):
            return False
        with self._lock:
            if len(self._ok) >= CACHE_LIMIT:
                self._ok.clear()
            self._ok[key] = encoded
        return True

    def verify_is_cheap(self, username: str, password: str) -> bool:
        """True when ``verify(username, password)`` costs microseconds, so it may run on the
        event loop: no such user, an HMAC-SHA256 entry (a device token), or a success already
        remembered. False when it would run scrypt or PBKDF2 (milliseconds: use a thread)."""
        encoded = self._refresh().get(username)
        if encoded is None or not password or not encoded.startswith(_SLOW_SCHEMES):
            return True
        key = (username, hashlib.sha256(password.encode()).digest())
        with self._lock:
            cached = self._ok.get(key)
        return cached is not None and hmac.compare_digest(cached, encoded)

    # -- writing ---------------------------------------------------------------------------------

    def set(self, username: str, password: str) -> None:
        """Add `username` or change its password (atomic file replace, mode 0600); with scheme
        ``auto``, a random token is stored as hmac-sha256 and any other password with scrypt."""
        _check_username(username)
        if not password:
            raise ValueError("empty password")
        token = is_random_token(password)
        scheme: Scheme = ("hmac-sha256" if token else "scrypt") if self.scheme == "auto" else self.scheme
        encoded = hash_password(password, scheme)
        with self._file_lock():
            lines = self._read_lines()
            out, found = [], False
            for line in lines:
                if line.split(":", 1)[0] == username and ":" in line:
                    if not found:
                        out.append(f"{username}:{encoded}")
                    found = True
                else:
                    out.append(line)
            if not found:
                out.append(f"{username}:{encoded}")
            self._write_lines(out)
        self._refresh()

    def remove(self, username: str) -> bool:
        """Delete `username`; False when it was not there."""
        with self._file_lock():
            lines = self._read_lines()
            out = [line for line in lines if not (":" in line and line.split(":", 1)[0] == username)]
            if len(out) == len(lines):
                return False
            self._write_lines(out)
        self._refresh()
        return True

    def _read_lines(self) -> list[str]:
        try:
            return [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def _write_lines(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise writers across processes (read-modify-write would otherwise lose users)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


_shared: dict[Path, CredentialStore] = {}
_shared_lock = threading.Lock()


def shared_store(path: Path) -> CredentialStore:
    """One store per file per process, so the broker's plugins and its owner share one cache."""
    key = Path(path).resolve()
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = CredentialStore(key)
        return store
