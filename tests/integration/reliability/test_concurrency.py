"""Concurrency on the flow-level store of the tiny city: no error, no mixing.

(a) Two whole monitor-flow runs of the same city start at once (two processes forked
    from the zygote of ``flow_zygote``): both end without error; the store is the clean
    run's store; history gains one or two commits: the city lock serializes the commits,
    and each run decided what to compute before either committed, so normally both
    commit (the second re-writes the same months on top of the first: same values); one
    commit only when the second started after the first had committed ("nothing new").
(b) A run commits while the portal (``create_app`` under uvicorn, in its own process)
    serves downloads of that city: many concurrent GETs of JSON, map tiles, GeoTIFFs,
    GeoJSON and CSV during the whole run; every response is 200 with a complete, valid
    payload of one version (at most two distinct payloads per URL: old and new).
(c) Meanwhile a reader in this process opens EVERY version in the history by snapshot id
    (``open_tree(version=...)``) over and over: each is exactly the old or the new
    version. Many commits landing under readers, locally and on S3, are covered at store
    level by ``tests/integration/test_store_readers.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pandas as pd
import pytest
import rasterio
from figures import record
from flow_zygote import (
    FlowZygote,
    job,
    references,
    snapshot_ids,
    values,
    which,
)
from PIL import Image

pytestmark = pytest.mark.integration

MONTH = "2025-02"  # in the old and the new version


def test_two_runs_of_one_city_at_once(
    zygote: FlowZygote, tiny_city: Any, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    refs = references(zygote, tiny_city, tmp_path_factory.mktemp("refs"))
    root = tmp_path_factory.mktemp("twice") / "store"
    shutil.copytree(refs.base, root)
    pids = [zygote.start(job(tiny_city, root)) for _ in range(2)]
    statuses = [zygote.event(pid, "done")[1][2] for pid in pids]
    assert [zygote.reap(pid) for pid in pids] == [(0, 0), (0, 0)], zygote.tail()
    assert set(statuses) <= {"committed", "nothing_new"} and "committed" in statuses, statuses

    ids = snapshot_ids(root)
    added = len(ids) - len(refs.base_ids)
    assert added == statuses.count("committed") and added in (1, 2), (statuses, ids)
    assert ids[added:] == refs.base_ids
    assert which(values(root), refs) == "new"
    for sid in ids[:added]:  # each commit is the whole new version
        assert which(values(root, sid), refs) == "new", sid
    record(
        "concurrency",
        request.node.nodeid,
        concurrent_runs=2,
        commits_added=added,
        errors=0,
        mixed=0,
        data_lost=0,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def _valid(kind: str, body: bytes) -> bool:
    """Whether ``body`` is a complete payload of its kind (opens, parses, has content)."""
    if kind == "json":
        return bool(json.loads(body))
    if kind == "png":
        img = Image.open(io.BytesIO(body))
        img.load()
        return img.size == (256, 256)
    if kind == "tif":
        with rasterio.MemoryFile(body) as mem, mem.open() as src:
            return src.crs is not None and src.read(1).size > 0
    if kind == "csv":
        return len(pd.read_csv(io.BytesIO(body))) > 0
    raise AssertionError(kind)


def test_run_commits_while_portal_serves_and_readers_open_every_version(
    zygote: FlowZygote, tiny_city: Any, tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    from payesh.portal.tokens import TokenStore, tokens_file

    refs = references(zygote, tiny_city, tmp_path_factory.mktemp("refs"))
    root = tmp_path_factory.mktemp("serving") / "store"
    shutil.copytree(refs.base, root)
    token = TokenStore(tokens_file(root)).add("demo")[1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = zygote.serve(root, port, refresh_s=0.3)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(timeout=120, headers=headers) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, zygote.tail()
                time.sleep(0.2)
            info = client.get(url + "/api/cities/demo").json()
            assert info["snapshot"] == refs.base_ids[0]
            w, s, e, n = info["bbox"]
            x, y = _tile_xy((w + e) / 2, (s + n) / 2, 14)
            urls = {
                "/api/cities/demo": "json",
                f"/api/cities/demo/tiles/builtup_prob/14/{x}/{y}.png?time={MONTH}": "png",
                f"/api/cities/demo/download/ntl_sum?format=cog&time={MONTH}": "tif",
                f"/api/cities/demo/download/builtup_prob?format=cog&time={MONTH}": "tif",
                "/api/cities/demo/download/sites?format=geojson": "json",
                f"/api/cities/demo/download/tiles?format=csv&time={MONTH}": "csv",
            }
            bodies: dict[str, set[str]] = {u: set() for u in urls}
            codes: Counter[int] = Counter()
            served: set[str] = set()
            invalid: list[str] = []
            reads: Counter[str] = Counter()
            stop = threading.Event()

            def get(path: str) -> None:
                r = client.get(url + path)
                codes[r.status_code] += 1
                if r.status_code != 200:
                    invalid.append(f"{r.status_code} {path}: {r.text[:200]}")
                    return
                if not _valid(urls[path], r.content):
                    invalid.append(f"invalid {path}")
                bodies[path].add(hashlib.sha256(r.content).hexdigest())
                if path == "/api/cities/demo":
                    served.add(r.json()["snapshot"])

            def reader() -> None:  # (c): every version, by snapshot id, while commits land
                while not stop.is_set():
                    for sid in snapshot_ids(root):
                        reads[which(values(root, sid), refs)] += 1

            t0 = time.monotonic()
            pid = zygote.start(job(tiny_city, root))
            reading = threading.Thread(target=reader, daemon=True)
            reading.start()
            with ThreadPoolExecutor(6) as pool:
                done_at = None
                while done_at is None or time.monotonic() < done_at + 2.0:
                    list(pool.map(get, list(urls)))
                    if done_at is None and zygote.has(pid, "done"):
                        done_at = time.monotonic()
            stop.set()
            reading.join(120)
            status = zygote.event(pid, "done")[1][2]
            assert zygote.reap(pid) == (0, 0)
            run_s = time.monotonic() - t0
    finally:
        zygote.kill(server)

    assert status == "committed"
    new_head = snapshot_ids(root)[0]
    assert not invalid, invalid[:5]
    assert set(codes) == {200}, codes
    assert served == {refs.base_ids[0], new_head}, served  # requests spanned the commit
    # every answer is one version's: at most two distinct payloads per URL (variables
    # come in one order for one snapshot: the store sorts them, see open_indicators)
    files = {u: len(b) for u, b in bodies.items()}
    assert all(1 <= n <= 2 for n in files.values()), {u: n for u, n in files.items() if n > 2}
    assert set(reads) <= {"old", "new"}, reads
    assert reads["new"] > 0 and reads["old"] > 0, reads
    record(
        "concurrency",
        request.node.nodeid,
        requests=sum(codes.values()),
        non_200=sum(n for c, n in codes.items() if c != 200),
        errors_5xx=sum(n for c, n in codes.items() if c >= 500),
        invalid_payloads=len(invalid),
        versions_served=len(served),
        version_reads=sum(reads.values()),
        mixed=0,
        data_lost=0,
        run_s=round(run_s, 2),
    )
