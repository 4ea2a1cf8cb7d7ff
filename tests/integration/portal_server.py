"""A real ``payesh serve`` (uvicorn) on loopback for the portal tests, and its tokens.

:func:`portal_root` lays out a store root holding two cities, ``demo`` (the monitored
tiny city) and ``rival`` (a copy of it under another name), so that cross-city access
can be attempted; :func:`start_portal` runs the real CLI in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

EXE = Path(sys.executable).with_name("payesh")
LOG = ("--log-level", "warning")


def payesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def api_token(root: Path, city: str | None) -> str:
    """A token added through the library (fast); the CLI is tested on its own."""
    from payesh.portal.tokens import TokenStore, tokens_file

    return TokenStore(tokens_file(root)).add(city)[1]


def add_token(root: Path, *args: str) -> str:
    """``payesh tokens add ...``: the token, from the last line of its output."""
    proc = payesh("tokens", "--store", str(root), "add", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def portal_root(store: Path, city: str, dst: Path) -> Path:
    """``dst`` with the city's store as ``demo`` and a copy of it as ``rival``."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store / city, dst / "demo")
    shutil.copytree(store / city, dst / "rival")
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Portal:
    url: str
    root: Path
    log: Path
    client: httpx.Client

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(self.url + path, headers=headers)


@contextmanager
def start_portal(root: Path, *extra: str, startup_s: float = 180.0) -> Iterator[Portal]:
    port = _free_port()
    log = root.parent / f"portal-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(EXE), "serve", "--store", str(root), "--port", str(port), *LOG, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"payesh serve exited: {log.read_text()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"payesh serve did not start: {log.read_text()}")
            time.sleep(0.2)
        with httpx.Client(timeout=120) as client:
            yield Portal(url, root, log, client)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
