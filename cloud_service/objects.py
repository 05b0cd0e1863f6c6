"""The object store: document bytes live here, never in the database or the broker.

``ObjectStore`` is the interface; ``LocalObjectStore`` keeps files in the data directory and
is served by the service itself under ``/objects/{key}`` through HMAC-signed URLs that expire
and are scoped to one object and one method (GET or PUT). ``cloud_service.s3store`` keeps them
in an S3 bucket behind the same interface (``object_store`` = "s3").
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlencode

import anyio
import anyio.to_thread

from broker.private import DIR_MODE, FILE_MODE, create_private, private_dir
from cloud_service.worker import WorkerThread

T = TypeVar("T")

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9/_.-]{0,200}$")
#: Bytes moved per trip to a worker thread: an object up to this size is written (or read) in
#: one trip; a larger one is gathered from the network and hashed and written this much at a time.
CHUNK = 1024 * 1024


class ObjectTooLarge(Exception):
    pass


class BadSignature(Exception):
    """A presigned URL that is expired, tampered with, or for another object or method."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Peeked:
    """An object's size, and its bytes when it fits in one ``CHUNK`` (else None: stream it)."""

    size: int
    data: bytes | None


class ObjectStore(Protocol):
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject: ...

    def read_stream(self, key: str) -> AsyncIterator[bytes]: ...

    async def size(self, key: str) -> int | None: ...

    async def peek(self, key: str) -> Peeked | None:
        """The object's size and, if it fits in one chunk, its bytes; None if there is none."""
        ...

    async def delete(self, key: str) -> None: ...

    def presign(self, key: str, method: str, ttl: float) -> tuple[str, float]: ...

    async def check(self) -> None:
        """Raises unless the store is reachable and usable now (``/readyz``)."""
        ...


class UrlSigner:
    """HMAC-SHA256 over (method, key, expiry): a URL grants one method on one object until exp."""

    def __init__(self, secret: bytes, base_url: str) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")

    def _mac(self, method: str, key: str, expires: int) -> str:
        msg = f"{method}\n{key}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, key: str, method: str, ttl: float, now: float | None = None) -> tuple[str, float]:
        expires = int((now or time.time()) + ttl)
        query = urlencode({"m": method, "exp": expires, "sig": self._mac(method, key, expires)})
        return f"{self.base_url}/objects/{key}?{query}", float(expires)

    def check(self, key: str, method: str, query: dict[str, str], now: float | None = None) -> None:
        try:
            expires = int(query["exp"])
            given_method, sig = query["m"], query["sig"]
        except (KeyError, ValueError):
            raise BadSignature("missing or malformed signature parameters") from None
        if given_method != method:
            raise BadSignature(f"URL is for {given_method}, not {method}")
        if not hmac.compare_digest(sig, self._mac(method, key, expires)):
            raise BadSignature("signature does not match")
        if expires < (now or time.time()):
            raise BadSignature("URL has expired")


def load_or_create_secret(path: Path) -> bytes:
    """The signing key, made once per data directory (mode 0600)."""
    if path.exists():
        create_private(path)  # an older install may have left it readable
        return bytes.fromhex(path.read_text().strip())
    private_dir(path.parent)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


#: The thread that does the object store's one-trip work (a small object written or read whole),
#: started on first use; bigger objects stream through anyio's worker threads, a chunk a trip.
_one_trip: WorkerThread | None = None


async def _in_one_trip(work: Callable[[], T]) -> T:
    global _one_trip
    if _one_trip is None:
        _one_trip = WorkerThread("objects")
    return await _one_trip.call(work)


#: A new object's temporary file: created, never opened over an existing one, not inherited.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _create_new(tmp: Path) -> int:
    """Create ``tmp`` (mode 0600) in its job's directory, made 0700 if missing; its descriptor.

    A new job's directory is one ``mkdir``: its mode is 0700 or stricter whatever the umask, so
    there is nothing to tighten. Only an existing directory, or a missing parent, goes through
    ``private_dir`` (probe, create, tighten). An input document is always the first object of
    its job, so the common case costs two system calls before the write, where it took twelve.
    """
    try:
        os.mkdir(tmp.parent, DIR_MODE)
    except (FileExistsError, FileNotFoundError):
        private_dir(tmp.parent)
    return os.open(tmp, _NEW_FILE, FILE_MODE)


def _open_new(tmp: Path) -> IO[bytes]:
    return open(_create_new(tmp), "wb")


def _write_whole(tmp: Path, digest: Any, data: bytes | bytearray, path: Path) -> None:
    """A small object in the fewest system calls: mkdir, open, write, close, rename (a Python
    file object would add four more: two ioctls, an fstat and an lseek)."""
    digest.update(data)
    fd = _create_new(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_batch(fh: IO[bytes] | None, tmp: Path, digest: Any, data: bytes | bytearray) -> IO[bytes]:
    """Hash and write one batch (hashlib and the write release the GIL), opening the file first."""
    digest.update(data)
    if fh is None:
        fh = _open_new(tmp)
    fh.write(data)
    return fh


def _finish(fh: IO[bytes], digest: Any, data: bytes | bytearray, tmp: Path, path: Path) -> None:
    if data:
        _write_batch(fh, tmp, digest, data)
    fh.close()
    os.replace(tmp, path)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _read_up_to(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``: fewer only at the end of the file."""
    first = os.read(fd, limit)
    if not first or len(first) == limit:
        return first
    parts = [first]
    got = len(first)
    while got < limit and (more := os.read(fd, limit - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _open_and_read(path: Path) -> tuple[IO[bytes] | None, bytes]:
    """The file opened and its first chunk; the file is closed already (None) if that was all.
    A small object costs open, read, read, close: no file object (see ``_write_whole``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunk = _read_up_to(fd, CHUNK)
        if len(chunk) < CHUNK:
            os.close(fd)
            return None, chunk
        return open(fd, "rb"), chunk  # closed by read_stream
    except BaseException:
        os.close(fd)
        raise


def _peek(path: Path) -> Peeked | None:
    """Size, and the bytes of an object of one chunk: open, fstat, read, close."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return Peeked(size, _read_up_to(fd, size) if size <= CHUNK else None)
    finally:
        os.close(fd)


class LocalObjectStore:
    """Files under ``root``; writes go to a temp file and are renamed, so readers never see
    half an object. Memory use is one chunk whatever the size. Documents are private: files
    0600 in 0700 directories, whatever the process umask."""

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self.root = root
        self.signer = signer
        private_dir(root)

    def _path(self, key: str) -> Path:
        if not KEY_RE.match(key) or ".." in key:
            raise KeyError(key)
        return self.root / key

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
        """Network chunks are gathered up to ``CHUNK`` bytes: an object that fits is hashed and
        written in one trip to the store's own thread (directory, file, rename: ``WorkerThread``,
        the cheapest hop); a larger one is hashed and written one ``CHUNK`` per trip to anyio's
        worker threads, so the event loop neither hashes nor hops per network
        chunk, and memory stays about one ``CHUNK`` whatever the size."""
        path = self._path(key)
        tmp = path.with_name(path.name + f".tmp-{secrets.token_hex(4)}")
        digest = hashlib.sha256()
        size = 0
        pending = bytearray()
        fh: IO[bytes] | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(f"document exceeds {max_bytes} bytes")
                pending += chunk
                if len(pending) >= CHUNK:
                    data, pending = pending, bytearray()
                    fh = await anyio.to_thread.run_sync(_write_batch, fh, tmp, digest, data)
            if fh is None:
                await _in_one_trip(functools.partial(_write_whole, tmp, digest, pending, path))
            else:
                await anyio.to_thread.run_sync(_finish, fh, digest, pending, tmp, path)
                fh = None
        except BaseException:
            if fh is not None:
                fh.close()
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(key, size, digest.hexdigest())

    async def read_stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes; one that fits in a chunk is read in one trip to the store's own
        thread, a larger one a chunk a trip to anyio's worker threads."""
        fh, chunk = await _in_one_trip(functools.partial(_open_and_read, self._path(key)))
        try:
            if chunk:
                yield chunk
            while fh is not None and (chunk := await anyio.to_thread.run_sync(fh.read, CHUNK)):
                yield chunk
        finally:
            if fh is not None:
                fh.close()

    async def _at(self, key: str, work: Callable[[Path], T]) -> T | None:
        """``work(path of key)`` in one trip to the store's thread; None for a key it never names."""
        try:
            path = self._path(key)
        except KeyError:
            return None
        return await _in_one_trip(functools.partial(work, path))

    async def size(self, key: str) -> int | None:
        return await self._at(key, _size)

    async def peek(self, key: str) -> Peeked | None:
        """One trip to the store's thread: open, size, and the bytes of an object of one chunk
        (a device's download of a small document is then answered whole, without a stream)."""
        return await self._at(key, _peek)

    async def delete(self, key: str) -> None:
        await _in_one_trip(functools.partial(self._path(key).unlink, missing_ok=True))

    def presign(self, key: str, method: str, ttl: float) -> tuple[str, float]:
        self._path(key)
        return self.signer.sign(key, method, ttl)

    async def check(self) -> None:
        if not await _in_one_trip(self._usable):
            raise OSError(f"{self.root} is not a writable directory")

    def _usable(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
