"""The S3 object store: document bytes in an S3 bucket (aioboto3), behind ``ObjectStore``.

What goes where (docs/operations.md, "Object store"):

- Devices download documents straight from S3: ``presign(key, "GET")`` is a URL presigned by S3
  itself (SigV4, ``url_ttl``), so print data never passes through a replica.
- Uploads (a client's document, a scanner's output) still go to the service's own presigned
  PUT route, which streams them to S3 as a multipart upload: only there can the one-time upload,
  the size cap, the SHA-256 and the page count (``Documents.accept``) be enforced while the bytes
  stream. A PUT presigned by S3 could be replayed to swap a document until it expires and would
  need a second full read to count pages. ``s3_url(key, "PUT")`` is there for an operator who
  wants it anyway.
- Memory per upload is one part (``s3_part_bytes``, 8 MiB by default) whatever the document's
  size; a failed or refused upload is aborted, so no part is left behind in the bucket.

The signing of URLs is local computation (botocore's presigner, no request), so ``presign`` is
synchronous like the local store's.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from cloud_service.objects import KEY_RE, ObjectTooLarge, Peeked, StoredObject, UrlSigner

log = logging.getLogger("cloudimaging.objects")

#: Seconds to wait for S3's answer; completing a multipart upload of gigabytes takes a while.
READ_TIMEOUT = 300
#: Read size of a download stream.
CHUNK = 256 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3ObjectStore:
    """Objects in ``bucket`` under their document keys. ``start()`` before use, ``close()`` after."""

    def __init__(self, bucket: str, signer: UrlSigner, *, endpoint_url: str | None = None,
                 region: str = "us-east-1", access_key_id: str | None = None,
                 secret_access_key: str | None = None, part_bytes: int = 8 * 1024 * 1024,
                 create_bucket: bool = False) -> None:
        self.bucket = bucket
        #: The service's own signer: upload URLs point at the service (see the module's text).
        self.signer = signer
        self.part_bytes = part_bytes
        self.create_bucket = create_bucket
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url, "region_name": region,
            "aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"},
                             retries={"max_attempts": 3, "mode": "standard"},
                             connect_timeout=10, read_timeout=READ_TIMEOUT,
                             # No extra CRC per part: the SHA-256 recorded here is checked end to
                             # end by the Manager, and TLS guards the hop (a quarter faster).
                             request_checksum_calculation="when_required"),
        }
        self._session = aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any = None
        # Presigning needs no connection: a plain botocore client signs locally.
        self._presigner = botocore.session.get_session().create_client("s3", **self._options)

    async def start(self) -> None:
        self._client = await self._stack.enter_async_context(self._session.client("s3", **self._options))
        if self.create_bucket:
            try:
                try:
                    await self._client.head_bucket(Bucket=self.bucket)
                except ClientError:
                    await self._client.create_bucket(Bucket=self.bucket)
                    log.info("created bucket %s", self.bucket)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
        self._presigner.close()

    async def check(self) -> None:
        """Raises unless the bucket is reachable now (``/readyz``)."""
        if self._client is None:
            raise RuntimeError("not started")
        await self._client.head_bucket(Bucket=self.bucket)

    @staticmethod
    def _key(key: str) -> str:
        if not KEY_RE.match(key) or ".." in key:
            raise KeyError(key)
        return key

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> StoredObject:
        """Multipart upload, one part in memory at a time; SHA-256 and size taken on the way.
        A document smaller than one part is one plain PUT."""
        name = self._key(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(f"document exceeds {max_bytes} bytes")
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= self.part_bytes:
                    if upload_id is None:
                        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=name)
                        upload_id = created["UploadId"]
                    part = bytes(buffer[:self.part_bytes])
                    del buffer[:self.part_bytes]
                    number = len(parts) + 1
                    answer = await self._client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                            PartNumber=number, Body=part)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            if upload_id is None:
                await self._client.put_object(Bucket=self.bucket, Key=name, Body=bytes(buffer))
            else:
                if buffer or not parts:
                    number = len(parts) + 1
                    answer = await self._client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                            PartNumber=number, Body=bytes(buffer))
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                await self._complete(name, upload_id, parts, size)
                upload_id = None  # completed: nothing to abort
        except BaseException:
            if upload_id is not None:
                try:
                    await self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                except Exception:
                    log.warning("could not abort the multipart upload of %s (the bucket's lifecycle rule for "
                                "incomplete uploads removes it)", name)
            raise
        return StoredObject(key, size, digest.hexdigest())

    async def _complete(self, name: str, upload_id: str, parts: list[dict[str, Any]], size: int) -> None:
        """CompleteMultipartUpload. Assembling a large object can outlast a read timeout; a
        retry of a completion that in fact succeeded is answered NoSuchUpload, and then the
        object is there with the size that was sent."""
        try:
            await self._client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"NoSuchUpload", "500", "InternalError"}:
                raise
            if await self.size(name) != size:
                raise
            log.info("multipart upload of %s was completed by an earlier attempt", name)

    async def read_stream(self, key: str) -> AsyncIterator[bytes]:
        answer = await self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = answer["Body"]
        try:
            async for chunk in body.iter_chunks(CHUNK):
                yield chunk
        finally:
            body.close()

    async def _found(self, call: Callable[..., Awaitable[Any]], key: str) -> Any | None:
        """S3's answer to ``call`` (HEAD or GET) of the object; None if there is no such object."""
        try:
            return await call(Bucket=self.bucket, Key=self._key(key))
        except KeyError:
            return None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise

    async def size(self, key: str) -> int | None:
        answer = await self._found(self._client.head_object, key)
        return None if answer is None else int(answer["ContentLength"])

    async def peek(self, key: str) -> Peeked | None:
        """One GET: the object's size and, when it fits in one chunk, its bytes."""
        answer = await self._found(self._client.get_object, key)
        if answer is None:
            return None
        body, size = answer["Body"], int(answer["ContentLength"])
        try:
            return Peeked(size, await body.read() if size <= CHUNK else None)
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def s3_url(self, key: str, method: str, ttl: float) -> str:
        """A URL presigned by S3 for GET or PUT of one object, valid ``ttl`` seconds."""
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        return self._presigner.generate_presigned_url(
            operation, Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=max(1, int(ttl)))

    def presign(self, key: str, method: str, ttl: float) -> tuple[str, float]:
        """GET: presigned by S3 (devices download from the bucket); PUT: the service's upload
        route, which streams to the bucket (see the module's text)."""
        if method == "GET":
            return self.s3_url(key, "GET", ttl), time.time() + max(1, int(ttl))
        self._key(key)
        return self.signer.sign(key, method, ttl)
