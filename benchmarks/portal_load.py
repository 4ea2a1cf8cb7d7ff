"""Load on the portal: N concurrent clients for T seconds against a real `payesh serve`.

Each client loops over: a map tile (random tile of the city at zoom 13–16, random
layer and month) four times out of five, a COG download (one month of ``builtup_prob``,
the largest pixel layer) once. Reports p50/p99 latency per kind, throughput, errors,
and the server's resident memory (sampled every 0.2 s; peak and end).

    .venv/bin/python benchmarks/portal_load.py --store data/demo/store --clients 50 --seconds 30

The store root is read only: the benchmark's admin token goes to a temporary tokens
file (``--tokens``), and the rate limit is lifted for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

EXE = Path(sys.executable).with_name("payesh")


def _rss_mib(pid: int) -> float:
    """Resident memory of the server: the process and its children (workers), MiB."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(_rss_mib(int(c)) for c in children)


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


async def _client(
    c: httpx.AsyncClient,
    city: dict,
    deadline: float,
    out: dict[str, list[float]],
    rng: random.Random,
) -> None:
    w, s, e, n = city["bbox"]
    layers = [lyr["name"] for lyr in city["layers"] if lyr["has_time"]]
    months = city["months"]
    while time.monotonic() < deadline:
        if rng.random() < 0.8:
            z = rng.randint(13, 16)
            x, y = _tile(rng.uniform(w, e), rng.uniform(s, n), z)
            url = f"/api/cities/{city['name']}/tiles/{rng.choice(layers)}/{z}/{x}/{y}.png"
            url += f"?time={rng.choice(months)}"
            kind = "tile"
        else:
            url = f"/api/cities/{city['name']}/download/builtup_prob?format=cog"
            url += f"&time={rng.choice(months)}"
            kind = "cog"
        t0 = time.perf_counter()
        try:
            async with c.stream("GET", url) as r:
                size = 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
            ok = r.status_code == 200 and size > 0
        except httpx.HTTPError:
            ok = False
        dt = time.perf_counter() - t0
        out[kind if ok else f"{kind}-error"].append(dt)


async def _run(url: str, token: str, clients: int, seconds: float, pid: int) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:
        name = (await c.get("/api/cities")).json()[0]["name"]
        city = (await c.get(f"/api/cities/{name}")).json()
        out: dict[str, list[float]] = {"tile": [], "cog": [], "tile-error": [], "cog-error": []}
        rss: list[float] = []

        async def sample() -> None:
            while True:
                rss.append(_rss_mib(pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        rss_before = _rss_mib(pid)
        t0 = time.monotonic()
        deadline = t0 + seconds
        await asyncio.gather(
            *(_client(c, city, deadline, out, random.Random(i)) for i in range(clients))
        )
        wall = time.monotonic() - t0
        sampler.cancel()
    return {"city": name, "out": out, "wall": wall, "rss": rss, "rss_before": rss_before}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--store", default="data/demo/store", help="store root with at least one city")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=1, help="server processes")
    args = p.parse_args()

    from payesh.portal.tokens import TokenStore

    with tempfile.TemporaryDirectory(prefix="payesh-load-") as tmp:
        tokens = Path(tmp) / "tokens.json"
        token = TokenStore(tokens).add(None, label="load benchmark")[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            str(EXE),
            "serve",
            "--store",
            args.store,
            "--port",
            str(port),
            "--tokens",
            str(tokens),
        ]
        cmd += ["--rate", "1000000", "--burst", "1000000", "--log-level", "warning"]
        cmd += ["--workers", str(args.workers)]
        proc = subprocess.Popen(cmd, env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(1200):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.25)
            res = asyncio.run(_run(url, token, args.clients, args.seconds, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    out = res["out"]
    print(
        f"portal load: {args.clients} clients for {res['wall']:.1f} s on loopback, city {res['city']}"
    )
    for kind in ("tile", "cog"):
        lat = np.asarray(out[kind]) * 1000
        errors = len(out[f"{kind}-error"])
        if lat.size:
            p50, p99 = np.percentile(lat, [50, 99])
            print(
                f"  {kind:<5} n={lat.size:<6} {lat.size / res['wall']:7.1f} req/s  "
                f"p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  errors {errors}"
            )
        else:
            print(f"  {kind:<5} no successful request; errors {errors}")
    rss = [v for v in res["rss"] if v == v]
    print(
        f"  server RSS: {res['rss_before']:.0f} MiB before, peak {max(rss):.0f} MiB, "
        f"end {rss[-1]:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
