"""Core scaling of what grows with a city: Sentinel-2 months and their classification.

Runs without Prefect or a store, so it also runs where only rasterio, odc-stac and numba
can be carried (the 16-core machine of `README.md`)::

    python benchmarks/s2_path.py 12 1,2,4,8,16 --odc 16 -o results/s2.json

For each thread count: the decode floor (every Sentinel-2 asset read whole with
rasterio on N threads), payesh's aligned month path (read → mask → median, all months)
and the classification of the monthly composites (features + compiled trees), with the
thread-seconds per stage; optionally the odc-stac month path for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rasterio

from payesh import forest
from payesh.city import load_city
from payesh.classifier import builtup_probability
from payesh.grid import city_geobox
from payesh.model_io import default_model_path, load_model
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.sources import aligned
from payesh.sources.load import S2_REFLECTANCE
from payesh.synthetic import DemoSpec, generate_city


def _read_whole(href: str) -> int:
    with rasterio.open(href) as src:
        return int(src.read(1).size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size_km", type=float)
    ap.add_argument("threads", help="comma-separated thread counts, e.g. 1,2,4")
    ap.add_argument("--odc", default="", help="thread counts at which to time odc-stac too")
    ap.add_argument("--city-dir", default=None, help="where the generated city is cached")
    ap.add_argument("-o", "--output", default=None, help="JSON file for the results")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    odc_threads = {int(t) for t in args.odc.split(",") if t}

    root = Path(args.city_dir or f"data/bench/s2-path-{args.size_km:g}km")
    started = time.perf_counter()
    if not (root / "done").exists():
        spec = DemoSpec(size_km=args.size_km, start="2025-01", end="2025-12", seed=0)
        city_files = generate_city(root, spec)
        (root / "done").write_text(f"{city_files.manifest}\n{city_files.catalog}")
    generated_s = time.perf_counter() - started
    manifest, catalog = (root / "done").read_text().split("\n")
    city = load_city(manifest)
    plan = plan_run(city, catalog, Period.parse("2025-01", "2025-12"))
    gbox = city_geobox(city)
    items = {m: plan.month_items("s2", m) for m in plan.months}
    keys = (*S2_REFLECTANCE, "scl")
    hrefs = [i.assets[k].get_absolute_href() or "" for m in items for i in items[m] for k in keys]
    model = load_model(default_model_path())

    res: dict[str, object] = {
        "size_km": args.size_km,
        "grid": list(gbox.shape),
        "s2_items": sum(len(v) for v in items.values()),
        "assets": len(hrefs),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "generate_s": round(generated_s, 1),
    }
    print(json.dumps(res), flush=True)
    runs = []
    for n in threads:
        os.environ["PAYESH_THREADS"] = str(n)
        forest._pools.clear()
        for stage in aligned.STAGE_SECONDS:
            aligned.STAGE_SECONDS[stage] = 0.0
        t = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            pixels = sum(pool.map(_read_whole, hrefs))
        floor = time.perf_counter() - t
        t = time.perf_counter()
        composites = [s2_month(items[m], gbox, m) for m in plan.months]
        s2_s = time.perf_counter() - t
        t = time.perf_counter()
        for comp in composites:
            bare = comp.copy()
            bare.attrs = {}
            builtup_probability(bare, model)
        classify_s = time.perf_counter() - t
        del composites
        row: dict[str, object] = {
            "threads": n,
            "floor_s": round(floor, 2),
            "aligned_s": round(s2_s, 2),
            "classify_s": round(classify_s, 2),
            "mpx": round(pixels / 1e6, 1),
            "stages_thread_s": {k: round(v, 2) for k, v in aligned.STAGE_SECONDS.items()},
        }
        if n in odc_threads:
            import dask

            t = time.perf_counter()
            with dask.config.set(scheduler="threads", num_workers=n):
                for m in plan.months:
                    s2_month(items[m], gbox, m, chunks={"time": 1, "y": 1024, "x": 1024}).compute()
            row["odc_s"] = round(time.perf_counter() - t, 2)
        row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        runs.append(row)
        print(json.dumps(row), flush=True)
    res["runs"] = runs
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
