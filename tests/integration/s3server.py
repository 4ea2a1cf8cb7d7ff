"""A real S3-compatible server for tests: ``moto_server`` on loopback, in a subprocess.

``moto_s3()`` starts it on a free port of 127.0.0.1, waits until it answers, creates a
bucket with boto3 and tears it all down on exit. ``MotoS3.env`` holds the environment
payesh reads to reach it (see ``payesh.store.S3Settings``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BUCKET = "payesh-test"
ACCESS_KEY = "payesh-test-key"
SECRET_KEY = "payesh-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point payesh (and boto3) at this server."""
        return {
            "PAYESH_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer within {timeout:g} s: {log.read_text()}")


@contextmanager
def moto_s3(*, timeout: float = 60.0) -> Iterator[MotoS3]:
    """A running ``moto_server`` with an empty bucket :data:`BUCKET`."""
    exe = Path(sys.executable).with_name("moto_server")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        log = Path(tmp) / "moto.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
            )
        try:
            _wait_ready(endpoint, proc, log, timeout)
            server = MotoS3(endpoint=endpoint, bucket=BUCKET)
            server.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
