"""Remote imagery: a bench city's months read over HTTP from a server far away.

    .venv/bin/python benchmarks/remote.py                        # 6 km, 2 months, 30 and 100 ms
    .venv/bin/python benchmarks/remote.py --size 12 --latency-ms 50 --months 1
    .venv/bin/python benchmarks/remote.py --flow                 # + the year's flow

A municipality's run reads Earth Search or Planetary Computer over the internet, where
each range request costs a round trip. This serves a bench city's COGs (the city of
``run.py``, generated or taken from the cache) from a loopback HTTP server with range
requests (the tests' ``servers.FaultyServer``) that waits ``--latency-ms`` before each
answer, and times, on ``--threads`` cores (CPU affinity), for the first ``--months``
months:

1. **payesh, io = cores** — the months as the flow makes them (``payesh.monthly``:
   Sentinel-2 through the aligned reader, Landsat and VIIRS through odc-stac) with
   ``PAYESH_IO_THREADS`` set to the cores: remote requests as many at a time as
   there are cores, as before payesh had a pool for them;
2. **payesh** — the same with ``PAYESH_IO_THREADS`` unset (its default);
3. **notebook peer's load** — what ``peers/notebook_peer.py`` reads before its medians:
   ``odc.stac.load`` of the same Sentinel-2 bands and SCL with Dask chunks, computed on
   ``--threads`` Dask threads (Dask's default: the cores), after
   ``odc.stac.configure_rio(cloud_defaults=True)``; and the same on as many Dask threads
   as payesh has requests in flight (a notebook author who thought of it).

With ``--flow``, also the whole monitor flow (``children.py flow``, one year, a client
of a Prefect server process as in ``run.py``): from the local catalog, then against
``rustac serve`` (a real STAC API) whose items point at the latency server, with io
threads = cores and with payesh's default; wall time, peak RSS, requests.

Each remote month is checked equal to the same month read from the local files. Every
measurement uses URLs of its own (a throw-away path segment), so GDAL's cache of an
earlier one cannot answer. The items' ``file:checksum`` are left out (small bench files
would be downloaded whole to verify them; a real 10 m band is not, see
``payesh.sources.checksum``). Results are appended to
``results/<date>-<host>-<n>cores-remote.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import servers  # noqa: E402

from payesh.parallel import IO_THREADS  # noqa: E402
from run import RESULTS, WORK, _git_head, city_for, machine, record  # noqa: E402

_fresh = itertools.count()


def _remote(items: list[pystac.Item], base: str, root: Path) -> list[pystac.Item]:
    """Copies of ``items`` whose assets are read from ``base`` under a path of their own."""
    tag = f"m{next(_fresh)}"
    out = []
    for item in items:
        copy = item.clone()
        for asset in copy.assets.values():
            local = Path(asset.get_absolute_href() or asset.href).resolve()
            asset.href = f"{base}/{tag}/{local.relative_to(root).as_posix()}"
            asset.extra_fields.pop("file:checksum", None)
        out.append(copy)
    return out


def _payesh_months(
    by_month: dict[pd.Timestamp, dict[str, list[pystac.Item]]], city: Any
) -> tuple[list[Any], dict[str, float]]:
    """Every month's Sentinel-2, Landsat and VIIRS as the flow makes them, and the
    seconds each product took."""
    from payesh.grid import aligned_geobox, city_geobox
    from payesh.monthly import landsat_month, s2_month, viirs_month

    out: list[Any] = []
    seconds = {"s2": 0.0, "landsat": 0.0, "viirs": 0.0}
    boxes = {"s2": city_geobox(city), "landsat": aligned_geobox(city, 30.0)}
    boxes["viirs"] = aligned_geobox(city, 500.0)
    makers: dict[str, Any] = {"s2": s2_month, "landsat": landsat_month, "viirs": viirs_month}
    names = {"s2": "sentinel-2-l2a", "landsat": "landsat-c2-l2", "viirs": "viirs-ntl-monthly"}
    for month, items in by_month.items():
        for name, make in makers.items():
            t0 = time.perf_counter()
            out.append(make(items[names[name]], boxes[name], month))
            seconds[name] += time.perf_counter() - t0
    return out, seconds


def _peer_load(items: list[pystac.Item], city: Any, threads: int) -> Any:
    import odc.stac

    from payesh.features import BANDS
    from payesh.grid import city_geobox

    odc.stac.configure_rio(cloud_defaults=True)
    ds = odc.stac.load(
        items,
        bands=[*BANDS, "scl"],
        geobox=city_geobox(city),
        chunks={"x": 2048, "y": 2048},
        groupby="time",
    )
    return ds.compute(scheduler="threads", num_workers=threads)


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in a process of its own: payesh's months (``base`` None: from the
    local files), or the peer's load (``peer``), of ``job['months']``."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: job["threads"]]))
    os.environ["PAYESH_THREADS"] = str(job["threads"])
    if job["io"] is not None:
        os.environ["PAYESH_IO_THREADS"] = str(job["io"])
    from payesh.city import load_city
    from payesh.parallel import io_threads

    city = load_city(job["manifest"])
    root = Path(job["catalog"]).parent.resolve()
    wanted = {pd.Timestamp(m) for m in job["months"]}
    by_month: dict[pd.Timestamp, dict[str, list[pystac.Item]]] = {
        m: {"sentinel-2-l2a": [], "landsat-c2-l2": [], "viirs-ntl-monthly": []} for m in wanted
    }
    for item in pystac.Catalog.from_file(job["catalog"]).get_items(recursive=True):
        assert item.datetime is not None
        month = pd.Timestamp(item.datetime.replace(tzinfo=None)).to_period("M").to_timestamp()
        if month in by_month and item.collection_id in by_month[month]:
            by_month[month][item.collection_id].append(item)
    by_month = dict(sorted(by_month.items()))
    s2 = [i for items in by_month.values() for i in items["sentinel-2-l2a"]]
    # first use (imports, compiled kernels, GDAL's drivers) from the local files, untimed
    _payesh_months({m: by_month[m] for m in list(by_month)[:1]}, city)
    if job["base"] is not None:
        by_month = {
            m: {k: _remote(v, job["base"], root) for k, v in items.items()}
            for m, items in by_month.items()
        }
    if job["peer"]:
        items = [i for items in by_month.values() for i in items["sentinel-2-l2a"]]
        workers = job["io"] or job["threads"]  # Dask's threads: the cores, unless told
        seconds, _ = _timed(lambda: _peer_load(items, city, workers))
        return {"seconds": round(seconds, 3)}
    seconds, (got, parts) = _timed(lambda: _payesh_months(by_month, city))
    digest = hashlib.sha256()
    for ds in got:
        for name in sorted(ds.data_vars):
            digest.update(np.ascontiguousarray(ds[name].values).tobytes())
    return {
        "seconds": round(seconds, 3),
        "s2_seconds": round(parts["s2"], 3),
        "landsat_seconds": round(parts["landsat"], 3),
        "viirs_seconds": round(parts["viirs"], 3),
        "io_threads": io_threads(),
        "s2_scenes": len(s2),
        "digest": digest.hexdigest(),
    }


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _flows(args: argparse.Namespace, gen: Any, root: Path) -> list[dict[str, Any]]:
    """The monitor flow (``children.py flow``, a client of a Prefect server process, as
    in ``run.py``) from the local catalog, then against ``rustac serve`` whose items point
    at the latency server, with io threads = cores and with payesh's default."""
    import run

    args.work.mkdir(parents=True, exist_ok=True)  # a fresh clone has no data/ yet
    work = Path(tempfile.mkdtemp(prefix="remote-", dir=args.work))
    server = run.PrefectServer(work)
    rows: list[dict[str, Any]] = []

    def flow(label: str, catalog: str, extra: dict[str, str]) -> dict[str, Any]:
        argv = [str(HERE / "children.py"), "flow", "--catalog", catalog]
        argv += ["--manifest", str(gen.manifest), "--start", args.start, "--end", args.end]
        argv += ["--store", str(work / f"store-{label}"), "--threads", str(args.threads)]
        server.pin(args.threads)
        res = run.spawn(label, argv, args.threads, work, {"PREFECT_API_URL": server.url, **extra})
        return {k: res[k] for k in ("seconds", "max_rss_mb", "cpu_seconds") if k in res}

    try:
        local = flow("flow-local", str(gen.catalog), {})
        print(f"flow, local files: {local['seconds']:.2f} s", flush=True)
        rows.append({"latency_ms": None, "local": local})
        api_dir = work / "api"
        with servers.serve_directory(root) as srv:
            hrefs = servers.write_api_items(gen.catalog, api_dir, srv.url + "/api")
            listing = json.loads((api_dir / "items.json").read_text())
            for feature in listing["features"]:  # see the module's docstring
                for asset in feature["assets"].values():
                    asset.pop("file:checksum", None)
            (api_dir / "items.json").write_text(json.dumps(listing))
            with servers.start_rustac(hrefs, log_file=work / "rustac.log") as api:
                for latency in args.latency_ms:
                    row: dict[str, Any] = {"latency_ms": latency}
                    for label, io in (("io_cores", str(args.threads)), ("default", None)):
                        srv.reset()
                        srv.latency_s = latency / 1000
                        extra = {"PAYESH_IO_THREADS": io} if io else {}
                        res = flow(f"flow-{latency:g}ms-{label}", api, extra)
                        res["requests"] = len(srv.take_hits())
                        res["most_in_flight"] = srv.most_in_flight
                        row[label] = res
                    rows.append(row)
                    a, b = row["io_cores"], row["default"]
                    print(
                        f"flow, {latency:g} ms: io={args.threads} {a['seconds']:.2f} s, "
                        f"io={IO_THREADS} {b['seconds']:.2f} s ({b['requests']} requests, "
                        f"{b['most_in_flight']} at once; peak RSS {a['max_rss_mb']:.0f} / "
                        f"{b['max_rss_mb']:.0f} MB); ÷ local: {b['seconds'] / local['seconds']:.1f}×",
                        flush=True,
                    )
    finally:
        server.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=float, default=6.0, help="city size, km (default 6)")
    p.add_argument("--months", type=int, default=2, help="first N months of the year")
    p.add_argument("--latency-ms", type=float, nargs="+", default=[30.0, 100.0])
    p.add_argument("--threads", type=int, default=2, help="cores (CPU affinity), default 2")
    p.add_argument("--start", default="2025-01")
    p.add_argument("--end", default="2025-12")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blocksize", type=int, default=512)
    p.add_argument("--gen-workers", type=int, default=None)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "--work",
        type=Path,
        default=WORK,
        help="the flows' stores, logs and Prefect server home (default data/bench/runs)",
    )
    p.add_argument(
        "--flow",
        action="store_true",
        help="also the whole monitor flow, --start to --end, against a STAC API (rustac)",
    )
    args = p.parse_args(argv)

    gen, _ = city_for(args.size, args)
    root = gen.catalog.parent.resolve()
    months = [str(m.date()) for m in pd.date_range(args.start, periods=args.months, freq="MS")]
    job = {"catalog": str(gen.catalog), "manifest": str(gen.manifest), "months": months}
    job["threads"] = args.threads
    # each measurement in a process of its own (fresh pools and GDAL caches), pinned to
    # --threads cores; the server stays here, as a provider's would be elsewhere
    spawn_ctx = multiprocessing.get_context("spawn")

    def child(**kw: Any) -> dict[str, Any]:
        with ProcessPoolExecutor(1, mp_context=spawn_ctx) as pool:
            result: dict[str, Any] = pool.submit(_child, {**job, **kw}).result()
            return result

    local = child(base=None, io=None, peer=False)
    rows: list[dict[str, Any]] = []
    print(
        f"{args.size:g} km city, {args.months} month(s), {local['s2_scenes']} Sentinel-2 "
        f"scenes, {args.threads} cores; local files: payesh {local['seconds']:.2f} s",
        flush=True,
    )
    with servers.serve_directory(root) as srv:
        for latency in args.latency_ms:
            row: dict[str, Any] = {"latency_ms": latency}
            for label, io, peer in (
                ("payesh_io_cores", args.threads, False),
                ("payesh", None, False),
                ("peer_load_s2", None, True),
                ("peer_load_s2_io", IO_THREADS, True),
            ):
                srv.reset()
                srv.latency_s = latency / 1000
                row[label] = child(base=srv.url, io=io, peer=peer)
                row[label] |= {"requests": len(srv.take_hits())}
                row[label] |= {"most_in_flight": srv.most_in_flight}
                if not peer:
                    row[label]["same_as_local"] = row[label].pop("digest") == local["digest"]
            rows.append(row)
            a, b, c = row["payesh_io_cores"], row["payesh"], row["peer_load_s2"]
            d = row["peer_load_s2_io"]
            print(
                f"latency {latency:g} ms: payesh io={args.threads} {a['seconds']:.2f} s "
                f"(S2 {a['s2_seconds']:.2f}; {a['requests']} requests, {a['most_in_flight']} "
                f"at once) | payesh io={b['io_threads']} {b['seconds']:.2f} s (S2 "
                f"{b['s2_seconds']:.2f}; {b['requests']} requests, {b['most_in_flight']} at "
                f"once) | the peer's S2 load {c['seconds']:.2f} s ({c['requests']} requests, "
                f"{c['most_in_flight']} at once; {d['seconds']:.2f} s on {IO_THREADS} Dask "
                f"threads) | payesh ÷ io=cores "
                f"{a['seconds'] / b['seconds']:.1f}×, peer's S2 load ÷ payesh's S2 months "
                f"{c['seconds'] / b['s2_seconds']:.1f}× | equal to local: "
                f"{a['same_as_local'] and b['same_as_local']}",
                flush=True,
            )
    flows = _flows(args, gen, root) if args.flow else []
    entry = {
        "git": _git_head(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "size_km": args.size,
        "months": args.months,
        "s2_scenes": local["s2_scenes"],
        "threads": args.threads,
        "local_payesh": local,
        "rows": rows,
        "flows": flows,
    }
    path = record(entry, entry["machine"], folder=args.results, kind="remote")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
