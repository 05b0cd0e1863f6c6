"""The object store: document bytes live here, never in the database or the broker.

``ObjectStore`` is the interface; ``LocalObjectStore`` keeps files in the data directory and
is served by the service itself under ``/objects/{key}`` through HMAC-signed URLs that expire
and are scoped to one object and one method (GET or PUT). ``cloud_service.s3store`` keeps them
in an S3 bucket behind the same interface (``object_store`` = "s3").
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict
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
#: A job's document key (``jobs/7/doc-1``): its job id and its name in the job.
_JOB_KEY = re.compile(r"jobs/(0|[1-9][0-9]{0,17})/([a-z][a-z0-9_.-]*)")
#: Jobs whose documents share one directory of the local store (see ``LocalObjectStore``).
JOBS_PER_DIRECTORY = 1000
#: A job's input document up to this size, as the local store wrote it, is kept in memory until
#: it is first read (``LocalObjectStore``)...
FRESH_MAX = 64 * 1024
#: ... and of such documents at most this many bytes in all (the oldest are let go first).
FRESH_BUDGET = 8 * 1024 * 1024
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


def _create_new(tmp: Path, checked: bool) -> int:
    """Create ``tmp`` (mode 0600) in its directory, made 0700 if missing; its descriptor.

    A directory this process has not ``checked`` yet is made private first (created 0700, or
    tightened if someone opened it up). A checked one (a thousand jobs' directory, written to
    before) is there nearly always: one ``open``. One missing since (removed by hand) is one
    ``mkdir``, whose mode is 0700 or stricter whatever the umask, so there is nothing to
    tighten; only a missing parent goes through ``private_dir`` (probe, create, tighten).
    """
    if not checked:
        private_dir(tmp.parent)
    try:
        return os.open(tmp, _NEW_FILE, FILE_MODE)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(tmp.parent, DIR_MODE)
    except (FileExistsError, FileNotFoundError):
        private_dir(tmp.parent)
    return os.open(tmp, _NEW_FILE, FILE_MODE)


def _open_new(tmp: Path, checked: bool) -> IO[bytes]:
    return open(_create_new(tmp, checked), "wb")


def _write_whole(tmp: Path, digest: Any, data: bytes | bytearray, path: Path, checked: bool) -> None:
    """A small object in the fewest system calls: open, write, close, rename (a Python file
    object would add four more: two ioctls, an fstat and an lseek)."""
    digest.update(data)
    fd = _create_new(tmp, checked)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_batch(fh: IO[bytes] | None, tmp: Path, digest: Any, data: bytes | bytearray,
                 checked: bool = True) -> IO[bytes]:
    """Hash and write one batch (hashlib and the write release the GIL), opening the file first."""
    digest.update(data)
    if fh is None:
        fh = _open_new(tmp, checked)
    fh.write(data)
    return fh


def _finish(fh: IO[bytes], digest: Any, data: bytes | bytearray, tmp: Path, path: Path) -> None:
    if data:
        _write_batch(fh, tmp, digest, data)
    fh.close()
    os.replace(tmp, path)


def _size(path: Path, legacy: Path | None) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return _size(legacy, None) if legacy is not None else None


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


def _open_read(path: Path, legacy: Path | None) -> int:
    """A descriptor of the object at ``path``, or else at ``legacy`` (where it was written
    before the store's present layout); FileNotFoundError if at neither."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if legacy is None:
            raise
        return os.open(legacy, os.O_RDONLY | os.O_CLOEXEC)


def _open_and_read(path: Path, legacy: Path | None) -> tuple[IO[bytes] | None, bytes]:
    """The file opened and its first chunk; the file is closed already (None) if that was all.
    A small object costs open, read, read, close: no file object (see ``_write_whole``)."""
    fd = _open_read(path, legacy)
    try:
        chunk = _read_up_to(fd, CHUNK)
        if len(chunk) < CHUNK:
            os.close(fd)
            return None, chunk
        return open(fd, "rb"), chunk  # closed by read_stream
    except BaseException:
        os.close(fd)
        raise


def _peek(path: Path, legacy: Path | None) -> Peeked | None:
    """Size, and the bytes of an object of one chunk: open, fstat, read, close."""
    try:
        fd = _open_read(path, legacy)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return Peeked(size, _read_up_to(fd, size) if size <= CHUNK else None)
    finally:
        os.close(fd)


def _delete(path: Path, legacy: Path | None) -> None:
    """Unlink the object wherever it is; a legacy job directory left empty goes too."""
    path.unlink(missing_ok=True)
    if legacy is not None:
        legacy.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (the job's other documents), or gone
            legacy.parent.rmdir()


class LocalObjectStore:
    """Files under ``root``; writes go to a temp file and are renamed, so readers never see
    half an object. Memory use is one chunk whatever the size (beside the small documents kept
    until their first read, below). Documents are private: files 0600 in 0700 directories,
    whatever the process umask.

    A job's documents (``jobs/7/doc-1``) are files of a directory shared by a thousand jobs
    (``jobs/0xxx/7-doc-1``; job 12345's are in ``jobs/12xxx``). A directory of its own per job
    cost a ``mkdir`` per job, a new directory inode (the most expensive file system call of a
    submit here), and stayed behind, empty, once retention deleted the documents: an inode
    and a block per job, for ever. Documents written under that earlier layout
    (``jobs/7/doc-1`` as a path) are still found there, and their directory goes with the last
    of them. Any other key is a path under ``root`` as it reads, except under ``jobs/``, where
    it is refused (``jobs/0xxx/7-doc-1`` would otherwise name job 7's document).

    A job's input document (or its copy transformed for the device) of up to ``FRESH_MAX``
    bytes is kept in memory as written, until its first read (``peek``, ``read_stream``): the
    device's download comes milliseconds after the submit, and answering it from memory saves
    a trip to the store's thread and four system calls (open, fstat, read, close; 110-160 us
    of CPU a job on the 2-core machine of docs/bench.md). Such a document is written once (a
    second upload is refused, a transform is made once), so the copy is what the file holds;
    scan output, which a retried upload may write again, is never kept. At most
    ``FRESH_BUDGET`` bytes are kept, the oldest let go first, and ``delete`` lets go too.
    """

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self.root = root
        self.signer = signer
        private_dir(root)
        #: Directories this process has made private (created 0700, or tightened) already.
        self._checked: set[Path] = set()
        #: key -> the bytes of a small input document written here and not read since.
        self._fresh: OrderedDict[str, bytes] = OrderedDict()
        self._fresh_bytes = 0

    def _paths(self, key: str) -> tuple[Path, Path | None]:
        """Where ``key`` is stored, and where a job's document lived under the earlier layout
        (a directory per job; None for other keys). KeyError for a key the store never names."""
        if not KEY_RE.match(key) or ".." in key:
            raise KeyError(key)
        job = _JOB_KEY.fullmatch(key)
        if job is None:
            if key.startswith("jobs/"):  # no other key may name a path among the jobs' files
                raise KeyError(key)
            return self.root / key, None
        job_id = int(job[1])
        return self.root / "jobs" / f"{job_id // JOBS_PER_DIRECTORY}xxx" / f"{job_id}-{job[2]}", self.root / key

    def _keep_fresh(self, key: str, data: bytes) -> None:
        job = _JOB_KEY.fullmatch(key)
        if job is None or not job[2].startswith("doc-") or len(data) > FRESH_MAX:
            return
        self._take_fresh(key)
        self._fresh[key] = data
        self._fresh_bytes += len(data)
        while self._fresh_bytes > FRESH_BUDGET:
            _, oldest = self._fresh.popitem(last=False)
            self._fresh_bytes -= len(oldest)

    def _take_fresh(self, key: str) -> bytes | None:
        data = self._fresh.pop(key, None)
        if data is not None:
            self._fresh_bytes -= len(data)
        return data

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
        """Network chunks are gathered up to ``CHUNK`` bytes: an object that fits is hashed and
        written in one trip to the store's own thread (file, write, rename: ``WorkerThread``,
        the cheapest hop); a larger one is hashed and written one ``CHUNK`` per trip to anyio's
        worker threads, so the event loop neither hashes nor hops per network
        chunk, and memory stays about one ``CHUNK`` whatever the size."""
        path, _ = self._paths(key)
        tmp = path.with_name(path.name + f".tmp-{secrets.token_hex(4)}")
        checked = path.parent in self._checked
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
                    fh = await anyio.to_thread.run_sync(_write_batch, fh, tmp, digest, data, checked)
            if fh is None:
                await _in_one_trip(functools.partial(_write_whole, tmp, digest, pending, path, checked))
                self._keep_fresh(key, bytes(pending))
            else:
                await anyio.to_thread.run_sync(_finish, fh, digest, pending, tmp, path)
                fh = None
        except BaseException:
            if fh is not None:
                fh.close()
            tmp.unlink(missing_ok=True)
            raise
        self._checked.add(path.parent)
        return StoredObject(key, size, digest.hexdigest())

    async def read_stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes; one that fits in a chunk is read in one trip to the store's own
        thread, a larger one a chunk a trip to anyio's worker threads."""
        fresh = self._take_fresh(key)
        if fresh is not None:
            if fresh:
                yield fresh
            return
        fh, chunk = await _in_one_trip(functools.partial(_open_and_read, *self._paths(key)))
        try:
            if chunk:
                yield chunk
            while fh is not None and (chunk := await anyio.to_thread.run_sync(fh.read, CHUNK)):
                yield chunk
        finally:
            if fh is not None:
                fh.close()

    async def _at(self, key: str, work: Callable[[Path, Path | None], T]) -> T | None:
        """``work(path of key, its legacy path)`` in one trip to the store's thread; None for a
        key it never names."""
        try:
            paths = self._paths(key)
        except KeyError:
            return None
        return await _in_one_trip(functools.partial(work, *paths))

    async def size(self, key: str) -> int | None:
        fresh = self._fresh.get(key)
        if fresh is not None:
            return len(fresh)
        return await self._at(key, _size)

    async def peek(self, key: str) -> Peeked | None:
        """One trip to the store's thread: open, size, and the bytes of an object of one chunk
        (a device's download of a small document is then answered whole, without a stream);
        none for a small input document written here and not read since."""
        fresh = self._take_fresh(key)
        if fresh is not None:
            return Peeked(len(fresh), fresh)
        return await self._at(key, _peek)

    async def delete(self, key: str) -> None:
        self._take_fresh(key)
        await _in_one_trip(functools.partial(_delete, *self._paths(key)))

    def presign(self, key: str, method: str, ttl: float) -> tuple[str, float]:
        self._paths(key)
        return self.signer.sign(key, method, ttl)

    async def check(self) -> None:
        if not await _in_one_trip(self._usable):
            raise OSError(f"{self.root} is not a writable directory")

    def _usable(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
