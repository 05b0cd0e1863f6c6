"""The S3 object store against a real S3-compatible server (moto's standalone server, started
by the test, stopped by its pid): multipart upload with the SHA-256 taken while streaming,
presigned GET and PUT minted by S3, deletion; then a whole stack on it: a real Manager prints
a job whose document it downloads from S3 (never through the service), and retention deletes
the object."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from broker.credentials import generate_password
from cloud_service.objects import ObjectTooLarge, Peeked, UrlSigner
from cloud_service.s3store import S3ObjectStore
from tests.support.brokers import embedded_broker
from tests.support.documents import pdf_bytes
from tests.support.s3 import S3Server, s3_server
from tests.support.stack import Stack, serving

MIB = 1024 * 1024
DEVICE = "s3-printer"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


def _store(s3: S3Server, bucket: str, **options: object) -> S3ObjectStore:
    config = s3.service_config(bucket)
    return S3ObjectStore(bucket, UrlSigner(b"k" * 32, "https://service.example"),
                         endpoint_url=config["s3_endpoint_url"], region=config["s3_region"],
                         access_key_id=config["s3_access_key_id"], secret_access_key=config["s3_secret_access_key"],
                         create_bucket=True, **options)  # type: ignore[arg-type]


async def _chunks(data: bytes, size: int = 300 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def test_multipart_upload_presigned_urls_and_delete(s3: S3Server) -> None:
    store = _store(s3, "unit-bucket", part_bytes=5 * MIB)
    await store.start()
    try:
        await store.check()
        big = os.urandom(12 * MIB + 12345)  # three parts, the last one short
        stored = await store.put_stream("jobs/1/doc-1", _chunks(big), max_bytes=100 * MIB)
        assert stored.size == len(big) and stored.sha256 == hashlib.sha256(big).hexdigest()
        head = await asyncio.to_thread(s3.client().head_object, Bucket="unit-bucket", Key="jobs/1/doc-1")
        assert "-3" in head["ETag"], f"not a 3-part multipart upload: {head['ETag']}"
        assert await store.size("jobs/1/doc-1") == len(big)
        read = b"".join([chunk async for chunk in store.read_stream("jobs/1/doc-1")])
        assert read == big

        small = b"%PDF-1.4 small"
        assert (await store.put_stream("jobs/2/doc-1", _chunks(small), max_bytes=MIB)).size == len(small)
        # peek: one GET; the bytes of an object of one chunk, only the size of a larger one.
        assert await store.peek("jobs/2/doc-1") == Peeked(len(small), small)
        assert await store.peek("jobs/1/doc-1") == Peeked(len(big), None)
        assert await store.peek("jobs/9/doc-1") is None

        # GET is presigned by S3 itself: the bucket's host, a SigV4 signature, and it works.
        url, expires = store.presign("jobs/2/doc-1", "GET", 60)
        assert url.startswith(s3.url + "/unit-bucket/jobs/2/doc-1?") and "X-Amz-Signature=" in url
        assert expires > time.time()
        async with httpx.AsyncClient() as http:
            assert (await http.get(url)).content == small
            # (moto does not check signatures unless its IAM emulation is on: that S3 refuses a
            # tampered or expired URL is S3's promise, not something this test can show.)
            # PUT presigned by S3 works too (kept for operators; uploads normally go through
            # the service, see cloud_service.s3store).
            put = store.s3_url("jobs/3/doc-1", "PUT", 60)
            assert (await http.put(put, content=b"direct")).status_code == 200
        assert await store.size("jobs/3/doc-1") == len(b"direct")
        # Upload URLs handed to clients are the service's own (it counts pages as bytes stream).
        upload, _ = store.presign("jobs/4/doc-1", "PUT", 60)
        assert upload.startswith("https://service.example/objects/jobs/4/doc-1?")

        # Over the cap: refused, and the multipart upload is aborted (nothing left behind).
        with pytest.raises(ObjectTooLarge):
            await store.put_stream("jobs/5/doc-1", _chunks(big), max_bytes=11 * MIB)
        assert await store.size("jobs/5/doc-1") is None
        uploads = await asyncio.to_thread(s3.client().list_multipart_uploads, Bucket="unit-bucket")
        assert not uploads.get("Uploads"), uploads

        await store.delete("jobs/1/doc-1")
        assert await store.size("jobs/1/doc-1") is None
        with pytest.raises(KeyError):
            store.presign("../escape", "GET", 60)
    finally:
        await store.close()


async def test_check_fails_for_a_missing_bucket(s3: S3Server) -> None:
    store = _store(s3, "never-made")
    store.create_bucket = False
    await store.start()
    try:
        with pytest.raises(Exception, match=r"404|Not Found|NoSuchBucket"):
            await store.check()
    finally:
        await store.close()


async def test_a_manager_prints_from_s3_and_retention_deletes_the_object(tmp_path: Path, s3: S3Server) -> None:
    from manager.app import Manager
    from manager.config import ManagerConfig
    from manager.drivers.simulated import SIMULATED_PRINTER_CAPABILITIES

    service_password, device_password = generate_password(), generate_password()
    out = tmp_path / "device" / "output"
    bucket = "e2e-bucket"
    async with embedded_broker(tmp_path / "broker") as b:
        await asyncio.to_thread(b.add_user, "cloud-service", service_password)
        await asyncio.to_thread(b.add_user, DEVICE, device_password)
        config = ManagerConfig.model_validate({
            "device_id": DEVICE, "broker_url": b.url, "password": device_password, "ca_file": str(b.pki.ca_cert),
            "state_dir": str(tmp_path / "device" / "state"), "keepalive": 5, "request_timeout": 3.0,
            "allow_http_documents": True,  # moto serves plain http on loopback; S3 itself is https
            "services": [{"kind": "print", "name": DEVICE, "driver": "simulated",
                          "driver_options": {"output_dir": str(out)},
                          "capabilities": SIMULATED_PRINTER_CAPABILITIES, "make_and_model": "test printer"}]})
        manager = Manager(config)
        async with serving(Stack, tmp_path, b, service_password, **s3.service_config(bucket),
                           document_retention="discard-after-processing", sweep_interval=0.5) as stack:
            try:
                await asyncio.to_thread(manager.start)
                await stack.wait_service(DEVICE)
                document = pdf_bytes(pages=3, size=2000)
                job = (await stack.submit(document, {}, service=DEVICE)).json()
                key = f"jobs/{job['id']}/doc-1"
                # Stored in the bucket, with the digest the service recorded while streaming.
                head = await asyncio.to_thread(s3.client().head_object, Bucket=bucket, Key=key)
                assert head["ContentLength"] == len(document)
                assert job["documents"][0]["sha256"] == hashlib.sha256(document).hexdigest()
                # The device's URL is S3's.
                (access,) = await stack.service.documents.urls(job["id"], "GET")
                assert urlsplit(access.url).netloc == urlsplit(s3.url).netloc

                done = await stack.wait_job(job["id"], timeout=60)
                assert done["state"] == "completed", done
                assert (out / "printed.log").read_text().split() == [str(job["id"])]
                # The bytes went device <-> S3: the service served no object GET.
                access_log = (tmp_path / "service" / "logs" / "access.log").read_text()
                assert "GET /objects/" not in access_log

                # Retention: discarded after processing, deleted from the bucket by the sweeper.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    listing = await asyncio.to_thread(s3.client().list_objects_v2, Bucket=bucket)
                    if not listing.get("Contents"):
                        break
                    await asyncio.sleep(0.2)
                assert not listing.get("Contents"), f"retention left {listing.get('Contents')}"
                ready = await stack.http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "objects": "ok"}
            finally:
                await asyncio.to_thread(manager.stop, 10.0)
