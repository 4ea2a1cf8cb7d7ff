"""First benchmark: decode floor vs. the end-to-end monitor flow on a generated city.

One command, one run, same machine and thread count:

    .venv/bin/python benchmarks/run.py [--size-km 4] [--months 12]

1. **decode floor** — read every pixel of every asset the run needs (Sentinel-2 bands
   and SCL, Landsat ST_B10 and QA_PIXEL, VIIRS radiance and cf_cvg) with rasterio and
   nothing else, on as many threads as the flow's Dask cluster uses;
2. **payesh** — the full monitor flow (Prefect + Dask) to a committed store.

Each runs in its own process so that peak memory (max RSS) is its own. Results are
printed and appended to ``benchmarks/results/<date>-spine.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {
    "sentinel-2-l2a": ("blue", "green", "red", "nir", "swir16", "swir22", "scl"),
    "landsat-c2-l2": ("lwir11", "qa_pixel"),
    "viirs-ntl-monthly": ("radiance", "cf_cvg"),
}


def decode_floor(catalog: str, threads: int) -> dict[str, float]:
    """Read every needed asset's pixels with rasterio; returns seconds, pixels and bytes."""
    import pystac
    import rasterio

    hrefs = []
    for item in pystac.Catalog.from_file(catalog).get_items(recursive=True):
        for key in NEEDED.get(item.collection_id or "", ()):
            hrefs.append(item.assets[key].get_absolute_href())

    def read(href: str) -> tuple[int, int]:
        with rasterio.open(href) as src:
            a = src.read(1)
        return a.size, a.nbytes

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(read, hrefs))
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "assets": len(hrefs),
        "pixels": float(sum(r[0] for r in results)),
        "bytes": float(sum(r[1] for r in results)),
    }


def _child(args: argparse.Namespace) -> None:
    if args.child == "floor":
        out = decode_floor(args.catalog, args.threads)
    else:
        from flows.monitor import monitor_city

        t0 = time.perf_counter()
        monitor_city(
            city=args.manifest,
            start=args.start,
            end=args.end,
            catalog=args.catalog,
            store=args.store,
        )
        out = {"seconds": time.perf_counter() - t0}
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def _spawn(kind: str, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *extra],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise SystemExit(f"{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=4.0)
    p.add_argument("--start", default="2025-01")
    p.add_argument("--end", default="2025-12")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "data" / "bench"))
    p.add_argument("--child", choices=["floor", "flow"], help=argparse.SUPPRESS)
    p.add_argument("--catalog", help=argparse.SUPPRESS)
    p.add_argument("--manifest", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument(
        "--threads", type=int, default=min(4, os.cpu_count() or 1), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.child:
        _child(args)
        return

    from payesh.synthetic import DemoSpec, generate_city

    out = Path(args.out) / f"{args.size_km:g}km"
    spec = DemoSpec(size_km=args.size_km, start=args.start, end=args.end, seed=args.seed)
    t0 = time.perf_counter()
    gen = generate_city(out, spec)
    gen_s = time.perf_counter() - t0
    store = out / "store"
    if store.exists():
        import shutil

        shutil.rmtree(store)
    common = ["--catalog", str(gen.catalog), "--threads", str(args.threads)]
    floor = _spawn("floor", common)
    flow = _spawn(
        "flow",
        [
            *common,
            "--manifest",
            str(gen.manifest),
            "--store",
            str(store),
            "--start",
            args.start,
            "--end",
            args.end,
        ],
    )
    ratio = flow["seconds"] / floor["seconds"]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_km": args.size_km,
        "period": f"{args.start}..{args.end}",
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "generate_seconds": round(gen_s, 2),
        "decode_floor": floor,
        "payesh_flow": flow,
        "ratio_flow_to_floor": round(ratio, 2),
    }
    print(f"city {args.size_km:g} km, {args.start}..{args.end}, {args.threads} threads")
    print(
        f"  decode floor : {floor['seconds']:7.2f} s  ({floor['assets']:.0f} assets, "
        f"{floor['pixels'] / 1e6:.0f} Mpx)  peak RSS {floor['max_rss_mb']:.0f} MB"
    )
    print(f"  payesh flow  : {flow['seconds']:7.2f} s  peak RSS {flow['max_rss_mb']:.0f} MB")
    print(f"  ratio payesh / decode floor: {ratio:.1f}x")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{datetime.now(UTC):%Y-%m-%d}-spine.json"
    history = json.loads(path.read_text()) if path.exists() else []
    history.append(result)
    path.write_text(json.dumps(history, indent=1) + "\n")
    print(f"  recorded in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
