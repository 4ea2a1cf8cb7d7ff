"""Real servers on loopback for the integration tests, with faults on demand.

* :class:`FaultyServer` — a ``ThreadingHTTPServer`` on ``127.0.0.1`` (free port) that
  either serves a directory with byte-range support (206 Partial Content, ``Accept-Ranges``,
  ``Content-Range``, HEAD) or forwards every request to an upstream server (a reverse
  proxy that rewrites the upstream's own URL in bodies to its own), and in both modes can
  be told to misbehave: answer a status (503, 429 with ``Retry-After``), stall, drop the
  connection, cut a body short, or flip one bit of a COG's tile bytes in its body — for
  the next N requests, forever, or at a seeded rate drawing from one fault or a mix of
  them (:func:`fault_mix`). Every request is logged (:attr:`FaultyServer.hits`). It can
  also refuse (403) requests without given headers (:attr:`FaultyServer.required_headers`:
  S3's requester-pays buckets).
* :func:`start_rustac` — ``rustac serve`` (a real STAC API, in-memory backend) loaded with
  collection files and one ``FeatureCollection`` of items; it is ready when its landing
  page answers.
* :class:`LaadsServer` — NASA LAADS DAAC's archive as payesh talks to it: folder
  listings (``<folder>.json``) and files, only with ``Authorization: Bearer <token>``;
  can answer given statuses first (:attr:`LaadsServer.fail_next`) or serve a file's bytes
  zeroed in part or cut short (:attr:`LaadsServer.corrupt`).
* :func:`write_api_items` — turns a static catalog into the files ``rustac serve`` loads,
  asset hrefs rewritten to URLs on an asset server and ``file:checksum`` added.

Any path served by a directory server may start with one throw-away segment that is
ignored when it names no file or folder at the root, e.g. ``/t1/sentinel-2-l2a/x/B04.tif``
is ``<root>/sentinel-2-l2a/x/B04.tif``: tests use it to dodge GDAL's process-wide
``/vsicurl/`` cache, so that each test's reads really reach the server.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import rasterio

RUSTAC = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "rustac"

FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Hit:
    """One request the server received, and what it answered."""

    method: str
    path: str
    range: str | None
    status: int | str  # an HTTP status, or "stall"/"reset"/"truncate"/"bitflip"


@dataclass
class Fault:
    """What to do instead of answering normally."""

    kind: str = "status"  # "status" | "stall" | "reset" | "truncate" | "bitflip"
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0  # for "stall"

    @property
    def label(self) -> str:
        """What the request log and the figures call it: ``429``, ``stall``, ``bitflip``…"""
        return str(self.status) if self.kind == "status" else self.kind


#: The kinds of fault a mix draws from (one each): what a real provider does on a bad day.
def fault_mix(*, stall_s: float) -> list[Fault]:
    """429 (``Retry-After`` 0 and 1 s), 500, 502, 503, a stall of ``stall_s`` seconds, a
    connection reset, a truncated body and a bit flipped in a COG's tile bytes (in a 200 or
    206 body of a ``.tif`` past its header; any other request is answered normally)."""
    return [
        Fault(status=429, retry_after=0),
        Fault(status=429, retry_after=1),
        Fault(status=500),
        Fault(status=502),
        Fault(status=503),
        Fault(kind="stall", seconds=stall_s),
        Fault(kind="reset"),
        Fault(kind="truncate"),
        Fault(kind="bitflip"),
    ]


class Faults:
    """Thread-safe fault schedule: the next N requests, always, or a seeded rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._always: Fault | None = None
        self._rate = 0.0
        self._rate_faults: list[Fault] = [Fault()]
        self._rng = random.Random(0)

    def next(self, n: int, **fault: Any) -> None:
        """The next ``n`` requests get ``Fault(**fault)``."""
        with self._lock:
            self._queue.extend(Fault(**fault) for _ in range(n))

    def always(self, **fault: Any) -> None:
        """Every request gets ``Fault(**fault)`` until :meth:`clear`."""
        with self._lock:
            self._always = Fault(**fault)

    def rate(
        self, p: float, *, seed: int = 0, mix: list[Fault] | None = None, **fault: Any
    ) -> None:
        """Each request fails with probability ``p`` (seeded): with ``Fault(**fault)``, or
        with one drawn uniformly from ``mix`` (e.g. :func:`fault_mix`)."""
        with self._lock:
            self._rate, self._rng = p, random.Random(seed)
            self._rate_faults = list(mix) if mix else [Fault(**fault)]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._always = None
            self._rate = 0.0

    def draw(self) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            if self._always is not None:
                return self._always
            if self._rate and self._rng.random() < self._rate:
                return self._rng.choice(self._rate_faults)
            return None

    def randrange(self, start: int, stop: int) -> int:
        """A seeded choice in ``[start, stop)`` (where to flip a bit)."""
        with self._lock:
            return self._rng.randrange(start, stop)


class _Handler(BaseHTTPRequestHandler):
    server: FaultyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- dispatch ---------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        # counted while it waits for its answer, not while the body is written: a client
        # that has its bytes sends its next request while this thread may still be on
        # its way out, and that overlap is not two requests of the client's at once
        with self.server.in_flight():
            if self.server.latency_s:
                time.sleep(self.server.latency_s)  # the round trip to a distant provider
        self._answer()

    def _answer(self) -> None:
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        missing = [k for k, v in self.server.required_headers.items() if self.headers.get(k) != v]
        if missing:
            self.server.log(self, 403)
            denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(denied)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(denied)
            return
        fault = self.server.faults.draw()
        if fault is not None and fault.kind not in ("truncate", "bitflip"):
            self._fault(fault)
            return
        truncate = fault is not None and fault.kind == "truncate"
        if self.server.upstream is not None:
            status, headers, payload = self._forward(body)
        else:
            status, headers, payload = self._file()
        flipped = fault is not None and fault.kind == "bitflip"
        if flipped:
            payload, flipped = self._flip(status, headers, payload)
        self.server.log(self, "truncate" if truncate else "bitflip" if flipped else status)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if truncate:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "stall":
            self.server.log(self, "stall")
            time.sleep(fault.seconds)
            self.close_connection = True
            return
        if fault.kind == "reset":
            self.server.log(self, "reset")
            self.close_connection = True
            # SO_LINGER 0: the client sees a TCP reset, not a clean close
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.server.log(self, fault.status)
        payload = json.dumps({"code": "Injected", "description": f"fault {fault.status}"})
        data = payload.encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", f"{fault.retry_after:g}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _flip(self, status: int, headers: dict[str, str], payload: bytes) -> tuple[bytes, bool]:
        """``payload`` with one bit flipped past the COG header, if it is a 200 or 206 body
        of a ``.tif`` that holds tile bytes; else ``payload`` unchanged (and ``False``)."""
        path = self._resolve() if self.server.root is not None else None
        m = re.match(r"^bytes (\d+)-(\d+)/\d+$", headers.get("Content-Range", ""))
        if path is None or path.suffix != ".tif" or self.command != "GET" or not payload:
            return payload, False
        if status == 206 and m is not None:
            start, end = int(m.group(1)), int(m.group(2))
        elif status == 200:
            start, end = 0, len(payload) - 1
        else:
            return payload, False
        first = max(start, _tile_data_start(path))
        if first > end:
            return payload, False
        at = self.server.faults.randrange(first, end + 1) - start
        data = bytearray(payload)
        data[at] ^= 1 << self.server.faults.randrange(0, 8)
        return bytes(data), True

    # --- a directory, with ranges --------------------------------------------------------
    def _resolve(self) -> Path | None:
        root = self.server.root
        assert root is not None
        rel = self.path.split("?", 1)[0].lstrip("/")
        parts = [p for p in rel.split("/") if p]
        if any(p in ("..", ".") for p in parts):
            return None
        candidate = root.joinpath(*parts) if parts else root
        if not candidate.is_file() and len(parts) > 1:
            candidate = root.joinpath(*parts[1:])  # a throw-away leading segment
        return candidate if candidate.is_file() else None

    def _file(self) -> tuple[int, dict[str, str], bytes]:
        path = self._resolve()
        if path is None:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        size = path.stat().st_size
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if path.suffix == ".json":
            headers["Content-Type"] = "application/json"
        spec = None if self.server.ignore_ranges else self.headers.get("Range")
        m = _RANGE.match(spec.strip()) if spec else None
        if spec and not m:
            # a multi-range or malformed request: ignoring Range is allowed (RFC 9110)
            spec = None
        if m:
            first, last = m.group(1), m.group(2)
            if first == "":  # suffix range: the last N bytes
                n = int(last)
                start, end = max(0, size - n), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                return 416, {"Content-Range": f"bytes */{size}"}, b""
            with path.open("rb") as f:
                f.seek(start)
                data = f.read(end - start + 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return 206, headers, data
        data = path.read_bytes()
        return 200, headers, data

    # --- a reverse proxy -------------------------------------------------------------------
    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.upstream  # type: ignore[misc]
        conn = http.client.HTTPConnection(host, port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Host"] = f"{host}:{port}"
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        mine, theirs = self.server.url.encode(), f"http://{host}:{port}".encode()
        payload = payload.replace(theirs, mine)
        out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
        return resp.status, out, payload


_DATA_START: dict[Path, int] = {}
_DATA_START_LOCK = threading.Lock()


def _tile_data_start(path: Path) -> int:
    """Offset of the first tile (or strip) of any band or overview: the header lies before."""
    with _DATA_START_LOCK:
        if path not in _DATA_START:
            offsets = []
            with rasterio.open(path) as ds:
                for bidx in range(1, ds.count + 1):
                    for ovr in [None, *range(len(ds.overviews(bidx)))]:
                        kw = {"ovr": ovr} if ovr is not None else {}
                        tag = ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=bidx, **kw)
                        if tag:
                            offsets.append(int(tag))
            _DATA_START[path] = min(offsets) if offsets else path.stat().st_size
        return _DATA_START[path]


_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "te",
    "upgrade",
    "accept-encoding",
    "content-encoding",
}


class FaultyServer(ThreadingHTTPServer):
    """A loopback HTTP server (directory with ranges, or a reverse proxy) with faults.

    Use :func:`serve_directory` / :func:`serve_proxy`, which start and stop it.
    """

    daemon_threads = True
    allow_reuse_address = True
    #: connections waiting to be accepted: a provider takes many at once. socketserver's
    #: default (5) made the kernel drop the connections of 64 threads opening at once,
    #: each dropped one costing the client a second (TCP's first SYN retransmit)
    request_queue_size = 128

    def __init__(
        self, *, root: Path | None = None, upstream: tuple[str, int] | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root) if root is not None else None
        self.upstream = upstream
        self.faults = Faults()
        self.hits: list[Hit] = []
        self._hits_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: header -> value every request must carry, else 403 AccessDenied, as S3 answers
        #: a requester-pays bucket's reader who does not say ``x-amz-request-payer``
        self.required_headers: dict[str, str] = {}
        #: seconds each request waits before it is answered (a distant provider's latency)
        self.latency_s = 0.0
        #: the most requests waiting for their answer at once since :meth:`reset`
        self.most_in_flight = 0
        #: answer every GET with the whole file (200), as a server without range support
        self.ignore_ranges = False
        self._in_flight = 0

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request as waiting for its answer while the block runs."""
        with self._hits_lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._hits_lock:
                self._in_flight -= 1

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, handler: _Handler, status: int | str) -> None:
        hit = Hit(handler.command, handler.path, handler.headers.get("Range"), status)
        with self._hits_lock:
            self.hits.append(hit)

    def reset(self) -> FaultyServer:
        """No faults scheduled, no latency, an empty request log; returns the server."""
        self.faults.clear()
        self.take_hits()
        self.latency_s = 0.0
        self.ignore_ranges = False
        with self._hits_lock:
            self.most_in_flight = 0
        return self

    def take_hits(self) -> list[Hit]:
        """The requests logged so far, forgetting them."""
        with self._hits_lock:
            out, self.hits = self.hits, []
        return out

    def start(self) -> FaultyServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def serve_directory(root: Path) -> Iterator[FaultyServer]:
    """Serve ``root`` over HTTP with range support on a free loopback port."""
    server = FaultyServer(root=root).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serve_proxy(upstream_url: str) -> Iterator[FaultyServer]:
    """A fault-injecting reverse proxy in front of ``upstream_url`` (``http://host:port``)."""
    m = re.match(r"^http://([^:/]+):(\d+)/?$", upstream_url)
    if not m:
        raise ValueError(f"not an http://host:port URL: {upstream_url}")
    server = FaultyServer(upstream=(m.group(1), int(m.group(2)))).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(url: str, *, timeout: float = 30.0, proc: subprocess.Popen[Any]) -> None:
    """Poll ``url`` until it answers 200; fail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last = err
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s (last error: {last})")


@contextmanager
def start_rustac(hrefs: Iterable[Path], *, log_file: Path) -> Iterator[str]:
    """``rustac serve`` on a free port, loaded with ``hrefs``; yields its root URL."""
    port = free_port()
    cmd = [str(RUSTAC), "serve", "--addr", f"127.0.0.1:{port}", *map(str, hrefs)]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_ready(url + "/", proc=proc)
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeError(f"{err}; rustac said: {log_file.read_text()[-2000:]}") from err
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def multihash_sha256(path: Path) -> str:
    """``file:checksum`` of a file: multihash hex of its SHA2-256 (``1220…``)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "1220" + h.hexdigest()


def write_api_items(catalog: Path, out: Path, asset_base: str) -> list[Path]:
    """Files for ``rustac serve``: one JSON per collection and ``items.json``.

    Every asset href becomes ``<asset_base>/<path relative to the catalog folder>`` and
    gets a ``file:checksum``; links are dropped (the API makes its own).
    """
    root = catalog.parent
    out.mkdir(parents=True, exist_ok=True)
    files, features = [], []
    for col in sorted(root.glob("*/collection.json")):
        data = json.loads(col.read_text())
        data["links"] = []
        dest = out / f"{data['id']}.json"
        dest.write_text(json.dumps(data))
        files.append(dest)
        for item_path in sorted(col.parent.glob("*/*.json")):
            item = json.loads(item_path.read_text())
            item["links"] = []
            item["collection"] = data["id"]
            if FILE_EXTENSION not in item.setdefault("stac_extensions", []):
                item["stac_extensions"].append(FILE_EXTENSION)
            for asset in item["assets"].values():
                local = (item_path.parent / asset["href"]).resolve()
                asset["href"] = f"{asset_base}/{local.relative_to(root.resolve()).as_posix()}"
                asset["file:checksum"] = multihash_sha256(local)
            features.append(item)
    items = out / "items.json"
    items.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return [*files, items]


def flip_one_tile_byte(src: Path, dst: Path) -> None:
    """Copy the COG ``src`` to ``dst`` with one bit flipped inside its first tile."""
    shutil.copyfile(src, dst)
    with rasterio.open(dst) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    with dst.open("r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([byte[0] ^ 0x01]))


class LaadsServer(ThreadingHTTPServer):
    """LAADS DAAC's archive served from ``root`` on loopback (see the module's index)."""

    daemon_threads = True

    def __init__(self, root: Path, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _LaadsHandler)
        self.root = root
        self.token = token
        self.seen: list[tuple[str, str | None]] = []
        self.fail_next: list[int] = []  # statuses to answer, one per request, before serving
        #: file name -> "zero" (served with 4 kB of its middle zeroed) or "cut" (first half)
        self.corrupt: dict[str, str] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LaadsHandler(BaseHTTPRequestHandler):
    server: LaadsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        with self.server.lock:
            self.server.seen.append((self.path, auth))
            fail = self.server.fail_next.pop(0) if self.server.fail_next else None
        kind = "application/json"
        if fail is not None:
            body, status = b'{"error": "injected"}', fail
        elif auth != f"Bearer {self.server.token}":
            body, status = b'{"error": "unauthorized"}', 401
        elif self.path.endswith(".json"):
            folder = self.server.root / self.path.lstrip("/").removesuffix(".json")
            if folder.is_dir():
                content = [
                    {"name": p.name, "size": p.stat().st_size, "md5sum": _md5_hex(p)}
                    for p in folder.iterdir()
                ]
                body, status = json.dumps({"content": content}).encode(), 200
            else:
                body, status = b'{"error": "not found"}', 404
        else:
            file = self.server.root / self.path.lstrip("/")
            body, status = (file.read_bytes(), 200) if file.is_file() else (b"", 404)
            how = self.server.corrupt.get(file.name) if status == 200 else None
            mid = len(body) // 2
            if how == "zero":
                body = body[:mid] + bytes(4096) + body[mid + 4096 :]
            elif how == "cut":
                body = body[:mid]
            kind = "application/x-hdf5"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _md5_hex(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@contextmanager
def serve_laads(root: Path, token: str) -> Iterator[LaadsServer]:
    """A :class:`LaadsServer` on a thread for the block."""
    server = LaadsServer(root, token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
