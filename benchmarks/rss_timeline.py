"""Resident memory over one monitor-flow run, filed under the payesh code running.

Where a run's peak memory comes from (benchmarks/README.md, "Memory: what bounds a
run")::

    PYTHONPATH=. .venv/bin/python benchmarks/rss_timeline.py \\
        data/bench/24km-2025-01-2025-12-seed0-deflate512 2025-01 2025-12

Runs ``monitor_city`` on a benchmark city (``run.py`` generates them) with a 2-thread
local Dask cluster, sampling every 50 ms the process's RSS and the innermost payesh or
flow frame of every other thread. Prints the run's seconds and peak RSS, the 25 labels
with the highest RSS seen under them, and a timeline (a line each time the label
changes). The store goes to a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _label() -> str:
    found = set()
    for tid, frame in sys._current_frames().items():
        if tid == threading.get_ident():
            continue
        f = frame
        while f is not None:
            name = f.f_code.co_filename
            if "/payesh/" in name or "/flows/" in name:
                found.add(f"{name.split('/')[-1]}:{f.f_code.co_name}")
                break
            f = f.f_back
    return ",".join(sorted(found))[:160] or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("city", help="a benchmark city folder (data/bench/...)")
    ap.add_argument("start")
    ap.add_argument("end")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PAYESH_MONTH_CACHE"] = "off"  # a cold run: every month computed

    from flows.monitor import monitor_city

    from children import _prefect_api_up
    from payesh.parallel import bound_native_memory

    bound_native_memory()
    peaks: dict[str, float] = collections.defaultdict(float)
    timeline: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            rss, label = _rss_mb(), _label()
            timeline.append((time.perf_counter(), rss, label))
            peaks[label] = max(peaks[label], rss)

    with tempfile.TemporaryDirectory() as store:  # Dask's threaded scheduler, as `payesh run`
        _prefect_api_up()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        monitor_city(
            city=f"{args.city}/cities/demo.yaml",
            catalog=f"{args.city}/catalog/catalog.json",
            start=args.start,
            end=args.end,
            store=store,
            force=True,
        )
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"seconds {seconds:.1f}  peak RSS {peak} MB")
    for label, mb in sorted(peaks.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{mb:8.0f} MB  {label}")
    last = None
    for t, mb, label in timeline:
        if label.split(",")[0] != last:
            print(f"{t - t0:7.1f} s {mb:6.0f} MB  {label[:110]}")
            last = label.split(",")[0]


if __name__ == "__main__":
    main()
