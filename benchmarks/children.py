"""What ``benchmarks/run.py`` runs in child processes, one measurement each.

    python benchmarks/children.py floor --catalog C --manifest M --threads N
    python benchmarks/children.py flow  --catalog C --manifest M --threads N --store S

Each prints one line ``RESULT {json}``. The parent pins the process to N cores and
reads its peak memory when it exits.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # sampler; the repository's flows/

#: Asset keys a run reads, per collection.
NEEDED = {
    "sentinel-2-l2a": ("blue", "green", "red", "nir", "swir16", "swir22", "scl"),
    "landsat-c2-l2": ("lwir11", "qa_pixel"),
    "viirs-ntl-monthly": ("radiance", "cf_cvg"),
}


def decode_floor(catalog: str, manifest: str, start: str, end: str, threads: int) -> dict[str, Any]:
    """Read, with rasterio alone, every block of every asset the run needs.

    Each asset is read in the window of the city (its projected bounds, in the asset's
    CRS, rounded out to whole pixels); GDAL decodes every internal block the window
    touches, as any reader of these files must. ``threads`` readers run at once.
    """
    import pandas as pd
    import pystac
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    from payesh.city import load_city
    from payesh.grid import city_geobox

    gbox = city_geobox(load_city(manifest))
    bounds = tuple(gbox.boundingbox)
    crs = str(gbox.crs)
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end) + pd.offsets.MonthBegin(1)
    hrefs: dict[str, list[str]] = {c: [] for c in NEEDED}
    for item in pystac.Catalog.from_file(catalog).get_items(recursive=True):
        assert item.datetime is not None
        if not t0 <= pd.Timestamp(item.datetime.replace(tzinfo=None)) < t1:
            continue
        for key in NEEDED.get(item.collection_id or "", ()):
            hrefs[item.collection_id or ""].append(item.assets[key].get_absolute_href() or "")

    def read(href: str) -> tuple[int, int]:
        with rasterio.open(href) as src:
            b = transform_bounds(crs, src.crs, *bounds, densify_pts=21)
            f = from_bounds(*b, transform=src.transform)
            c0, r0 = math.floor(f.col_off), math.floor(f.row_off)
            c1, r1 = math.ceil(f.col_off + f.width), math.ceil(f.row_off + f.height)
            w = Window(c0, r0, c1 - c0, r1 - r0)
            full = Window(0, 0, src.width, src.height)
            a = src.read(1, window=w.intersection(full))
        return a.size, a.nbytes

    out: dict[str, Any] = {"per_collection": {}}
    total = time.perf_counter()
    pixels = nbytes = assets = 0
    with ThreadPoolExecutor(threads) as pool:
        for coll, paths in hrefs.items():
            t = time.perf_counter()
            res = list(pool.map(read, paths))
            sec = time.perf_counter() - t
            px = sum(r[0] for r in res)
            out["per_collection"][coll] = {
                "seconds": round(sec, 3),
                "assets": len(paths),
                "pixels": px,
            }
            pixels += px
            nbytes += sum(r[1] for r in res)
            assets += len(paths)
    out.update(seconds=time.perf_counter() - total, assets=assets, pixels=pixels, bytes=nbytes)
    return out


def payesh_flow(
    catalog: str, manifest: str, start: str, end: str, store: str, threads: int
) -> dict[str, Any]:
    """The monitor flow (Prefect + Dask) to a committed store, on ``threads`` threads.

    Where the time goes is sampled from the threads' stacks while it runs
    (:mod:`sampler`).
    """
    from flows.monitor import monitor_city

    from sampler import StageSampler

    kwargs: dict[str, Any] = {
        "city": manifest,
        "catalog": catalog,
        "start": start,
        "end": end,
        "store": store,
    }
    if "force" in inspect.signature(monitor_city.fn).parameters:
        kwargs["force"] = True  # a fresh store anyway; never skip work as "nothing new"
    from payesh.parallel import bound_native_memory

    # as `payesh run` does: no Dask address, so the flow computes on Dask's threaded
    # scheduler; its pool and payesh's own pools take their size from PAYESH_THREADS
    os.environ["PAYESH_THREADS"] = str(threads)
    os.environ["PAYESH_MONTH_CACHE"] = "off"  # a cold run: every month computed
    bound_native_memory()  # as `payesh run` does first: before any thread starts
    # A deployment's runs find their Prefect server up; here the first flow run would
    # start a temporary one (~10 s). It is started before the clock and timed apart.
    t0 = time.perf_counter()
    _prefect_api_up()
    api_seconds = time.perf_counter() - t0
    with StageSampler() as sampler:
        t0 = time.perf_counter()
        result = monitor_city(**kwargs)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "prefect_api_start_seconds": round(api_seconds, 2),
        "stages": sampler.report(),
        "summary": str(result.get("summary", "")) if isinstance(result, dict) else "",
    }


def _prefect_api_up() -> None:
    """Run an empty flow: starts Prefect's temporary API server for this process (or
    checks the one ``PREFECT_API_URL`` names)."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["floor", "flow"])
    p.add_argument("--catalog", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--start", default="2025-01")
    p.add_argument("--end", default="2025-12")
    p.add_argument("--store")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.what == "floor":
        out = decode_floor(a.catalog, a.manifest, a.start, a.end, a.threads)
    else:
        out = payesh_flow(a.catalog, a.manifest, a.start, a.end, a.store, a.threads)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
