"""A real S3-compatible server for tests: moto's standalone server, as a subprocess.

    with s3_server(tmp_path) as s3:      # http://127.0.0.1:<ephemeral port>
        config = {"object_store": "s3", **s3.service_config("bucket-name")}

Real S3 semantics over HTTP (SigV4, presigned URLs, multipart uploads): nothing in boto is
patched in-process. moto serves plain http on loopback; production S3 is https (the service
and the Manager verify it like any other TLS peer). Stopped by its pid at the end.

moto_server missing: pytest.skip, unless CI=true, where it is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.brokers import free_port, terminate

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    url: str
    pid: int
    log: Path

    def service_config(self, bucket: str) -> dict[str, Any]:
        """The ServiceConfig fields that put documents in ``bucket`` on this server."""
        return {"object_store": "s3", "s3_endpoint_url": self.url, "s3_bucket": bucket, "s3_region": REGION,
                "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY, "s3_create_bucket": True}

    def env(self, bucket: str) -> dict[str, str]:
        """The same settings as CLOUDIMAGING_* variables (for a service in a subprocess)."""
        return {"CLOUDIMAGING_" + k.upper(): str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in self.service_config(bucket).items()}

    def client(self) -> Any:
        """A plain boto3 client on this server (tests look into the bucket with it)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))


def _moto_server() -> str:
    for candidate in (Path(sys.executable).parent / "moto_server", shutil.which("moto_server")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    reason = "moto_server not found (pip install 'moto[server]', in the test extra)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip")
    pytest.skip(reason)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0) as answer:
            return answer.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def s3_server(directory: Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """moto_server on 127.0.0.1 and an ephemeral port (retried if the port is taken meanwhile)."""
    exe = _moto_server()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION}
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                    env=env)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not _up(url):
            time.sleep(0.1)
        if proc.poll() is None and _up(url):
            break
        terminate(proc)
    else:
        raise AssertionError(f"moto_server did not start; its log:\n{log.read_text()[-3000:]}")
    try:
        yield S3Server(url, proc.pid, log)
    finally:
        terminate(proc)
