"""Planetary Computer items are signed when their assets are read, never at search time.

Real servers on loopback, real ``planetary-computer`` package: a token service (the SAS
endpoint the package calls, pointed at with ``PC_SDK_SAS_URL``) issues short-lived tokens
and counts requests; a "blob storage" server, reached as the HTTP proxy of
``*.blob.core.windows.net`` URLs (``http_proxy``, honoured by GDAL's curl and by
requests), serves the files with byte ranges and answers 403 to any request without a
token. The items come from ``rustac serve`` with unsigned blob hrefs, as PC's API gives them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pystac
import pytest
import xarray as xr
from servers import start_rustac, write_api_items

from payesh.city import load_city
from payesh.errors import SourceError
from payesh.grid import city_geobox
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.sources.load import load_s2
from payesh.sources.signing import item_provider, planetary_computer_module

pytestmark = pytest.mark.integration

PERIOD = Period.parse("2025-01", "2025-08")
ACCOUNT, CONTAINER = "payeshtest", "sentinel2-l2"
BLOB = f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class PCServer(ThreadingHTTPServer):
    """SAS token endpoint (``/token/<account>/<container>``) and proxied blob storage."""

    daemon_threads = True

    def __init__(self, root: Path, *, token_ttl_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _PCHandler)
        self.root = root
        self.token_ttl_s = token_ttl_s
        self.deny_tokens = False
        self.lock = threading.Lock()
        self.token_requests: list[str] = []
        self.blob_requests: list[tuple[str, int]] = []  # (query, status)
        self.issued = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _PCHandler(BaseHTTPRequestHandler):
    server: PCServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.netloc.endswith(".blob.core.windows.net"):
            self._blob(parts.netloc, parts.path, parts.query)
        elif parts.path.startswith("/token/"):
            self._token(parts.path)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _token(self, path: str) -> None:
        with self.server.lock:
            self.server.token_requests.append(path)
            self.server.issued += 1
            n = self.server.issued
        if self.server.deny_tokens:
            self._send(403, b'{"message": "denied"}', {"Content-Type": "application/json"})
            return
        expiry = datetime.now(UTC) + timedelta(seconds=self.server.token_ttl_s)
        token = f"st=2025-01-01&se={expiry:%Y-%m-%dT%H:%M:%SZ}&sp=rl&sig=token{n}"
        body = json.dumps({"msft:expiry": expiry.isoformat(), "token": token}).encode()
        self._send(200, body, {"Content-Type": "application/json"})

    def _blob(self, host: str, path: str, query: str) -> None:
        signed = host == f"{ACCOUNT}.blob.core.windows.net" and "sig" in parse_qs(query)
        rel = path.removeprefix(f"/{CONTAINER}/")
        file = self.server.root / rel
        status = 403 if not signed else (200 if file.is_file() else 404)
        if status != 200:
            with self.server.lock:
                self.server.blob_requests.append((query, status))
            self._send(status, b"AuthenticationFailed" if status == 403 else b"not found")
            return
        size = file.stat().st_size
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        m = _RANGE.match(self.headers.get("Range", "").strip())
        with file.open("rb") as f:
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                f.seek(start)
                data = f.read(end - start + 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                status = 206
            else:
                data = f.read()
        with self.server.lock:
            self.server.blob_requests.append((query, status))
        self._send(status, data, headers)


@pytest.fixture(scope="module")
def pc_server(tiny_city: Any) -> Iterator[PCServer]:
    server = PCServer(tiny_city.catalog.parent, token_ttl_s=30.0)  # < 60 s: renewed every use
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def pc_api(tiny_city: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rustac serve`` holding tiny_city's items with unsigned blob hrefs, as PC's API."""
    folder = tmp_path_factory.mktemp("pc-api")
    hrefs = write_api_items(tiny_city.catalog, folder, BLOB)
    with start_rustac(hrefs, log_file=folder / "rustac.log") as url:
        yield url


@pytest.fixture
def pc_env(pc_server: PCServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PCServer]:
    """The planetary-computer package pointed at the loopback token service."""
    pc = planetary_computer_module()
    monkeypatch.setenv("PC_SDK_SAS_URL", pc_server.url + "/token")
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, pc_server.url)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    pc.settings.Settings.get.cache_clear()  # settings are read once per process
    pc.sas.TOKEN_CACHE.clear()
    with pc_server.lock:
        pc_server.token_requests.clear()
        pc_server.blob_requests.clear()
    pc_server.deny_tokens = False
    yield pc_server
    pc.settings.Settings.get.cache_clear()
    pc.sas.TOKEN_CACHE.clear()


def _hrefs(items: list[pystac.Item]) -> list[str]:
    return [a.href for i in items for a in i.assets.values()]


# rasterio's NotGeoreferencedWarning races under Dask threads (see test_stac_api.py).
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_signed_at_read_time_not_at_search(tiny_city: Any, pc_api: str, pc_env: PCServer) -> None:
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, pc_api, PERIOD, collections=["sentinel-2-l2a"])
    march, april = pd.Timestamp("2025-03-01"), pd.Timestamp("2025-04-01")
    items = plan.month_items("s2", march)
    assert items and all(h.startswith(BLOB) and "?" not in h for h in _hrefs(items))
    assert {item_provider(i).name for i in items} == {"planetary-computer"}  # type: ignore[union-attr]
    assert pc_env.token_requests == []  # searching signed nothing

    gbox = city_geobox(city)
    over_pc = s2_month(items, gbox, march, bands=("red",)).compute()
    first = len(pc_env.token_requests)
    assert first >= 1 and set(pc_env.token_requests) == {f"/token/{ACCOUNT}/{CONTAINER}"}
    served = list(pc_env.blob_requests)
    assert served and all(status in (200, 206) for _, status in served)
    assert any(status == 206 for _, status in served)  # GDAL read byte ranges, signed
    assert {_token_number(q) for q, _ in served} <= set(range(1, first + 1))
    assert all("?" not in h for h in _hrefs(items))  # the plan's items stay unsigned

    static = plan_run(city, str(tiny_city.catalog), PERIOD, collections=["sentinel-2-l2a"])
    from_disk = s2_month(static.month_items("s2", march), gbox, march, bands=("red",))
    xr.testing.assert_identical(over_pc, from_disk.compute())

    # The next batch is signed when it is read, with tokens fetched then (these expire
    # within a minute, so the package does not reuse them): none of the first batch's.
    load_s2(plan.month_items("s2", april), gbox, bands=("red",)).compute()
    later = pc_env.blob_requests[len(served) :]
    assert later and len(pc_env.token_requests) > first
    assert min(_token_number(q) for q, _ in later) > first


def _token_number(query: str) -> int:
    return int(parse_qs(query)["sig"][0].removeprefix("token"))


def test_a_token_service_refusing_is_one_clear_error(
    tiny_city: Any, pc_api: str, pc_env: PCServer
) -> None:
    city = load_city(tiny_city.manifest)
    plan = plan_run(city, pc_api, PERIOD, collections=["sentinel-2-l2a"])
    pc_env.deny_tokens = True
    item = plan.items["s2"][0]
    with pytest.raises(SourceError) as info:
        load_s2([item], city_geobox(city), bands=("red",))
    message = str(info.value)
    assert repr(item.id) in message and "SAS token" in message and pc_env.url in message
    assert "403" in message
    assert all(status != 200 for _, status in pc_env.blob_requests)
