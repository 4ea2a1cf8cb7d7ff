"""The benchmark's own pieces: parallel city generation and the notebook peer.

* ``generate_city(..., workers=2)`` writes the same bytes as one process;
* the notebook peer (``benchmarks/peers/notebook_peer.py``) computes the same built-up
  probability and ``builtup_fraction`` as payesh on a small city, so that comparing
  their speed compares the same work;
* the stage sampler files CPU time under the stage of the code that used it;
* each measurement starts with the city's files cached (or evicted, ``--cold``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from payesh.city import load_city
from payesh.classifier import builtup_probability
from payesh.grid import city_geobox, tile_grid
from payesh.indicators import construction
from payesh.model_io import default_model_path, load_model
from payesh.monthly import s2_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.synthetic import DemoSpec, GeneratedCity, generate_city

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path[:0] = [str(BENCH), str(BENCH / "peers")]

import notebook_peer  # noqa: E402

import pagecache  # noqa: E402
import sampler  # noqa: E402

START, END = "2025-06", "2025-06"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_workers_write_the_same_bytes(tmp_path: Path) -> None:
    spec = DemoSpec(name="par", size_km=1, start="2025-06", end="2025-06", seed=7)
    one = generate_city(tmp_path / "one", spec)
    two = generate_city(tmp_path / "two", spec, workers=2)
    a, b = _digest(one.root), _digest(two.root)
    assert len(a) > 20
    assert a == b


_UNGUARDED = """
from payesh.synthetic import DemoSpec, generate_city
spec = DemoSpec(name="unguarded", size_km=1, start="2025-06", end="2025-06", seed=7)
generate_city({out!r}, spec, workers=2)  # no `if __name__ == "__main__":`
print("generated")
"""


def test_a_script_without_a_main_guard_fails_fast_instead_of_hanging(tmp_path: Path) -> None:
    """Spawned workers import the script again; without the guard each dies while it
    starts, and the process pool waited for them for ever. The probe worker says why."""
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED.format(out=str(tmp_path / "city")))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=150, env=env
    )
    assert proc.returncode != 0 and "generated" not in proc.stdout
    assert "exited with code 1 while starting" in proc.stderr
    assert 'inside `if __name__ == "__main__":`' in proc.stderr
    assert time.perf_counter() - t0 < 120


@pytest.fixture(scope="module")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCity:
    spec = DemoSpec(name="peer", size_km=2, start=START, end=END, seed=5)
    return generate_city(tmp_path_factory.mktemp("peer"), spec)


def _payesh_builtup(city_gen: GeneratedCity) -> tuple[xr.DataArray, xr.DataArray]:
    city = load_city(city_gen.manifest)
    plan = plan_run(city, str(city_gen.catalog), Period.parse(START, END))
    gbox = city_geobox(city)
    model = load_model(default_model_path())
    months = [s2_month(plan.month_items("s2", m), gbox, m).compute() for m in plan.months]
    prob = builtup_probability(xr.concat(months, dim="time"), model).compute()
    sites = gpd.GeoDataFrame({"status": []}, geometry=[], crs=city.crs)
    first_seen = construction.persistent_builtup(prob)
    tiles = construction.construction_tile_indicators(prob, first_seen, sites, tile_grid(city))
    return prob, tiles["builtup_fraction"]


def test_peer_computes_what_payesh_computes(small_city: GeneratedCity) -> None:
    prob, bfrac = _payesh_builtup(small_city)
    city = load_city(small_city.manifest)
    items = notebook_peer._items(str(small_city.catalog), START, END)["sentinel-2-l2a"]
    with dask.config.set(scheduler="threads", num_workers=2):
        lazy_prob, lazy_frac = notebook_peer.builtup(items, city_geobox(city), city.tile_pixels)
        peer_prob, peer_frac = dask.compute(lazy_prob, lazy_frac)
    assert peer_prob.shape == prob.shape
    np.testing.assert_array_equal(
        pd.DatetimeIndex(peer_prob.time.values), pd.DatetimeIndex(prob.time.values)
    )
    same_nan = np.isnan(peer_prob.values) == np.isnan(prob.values)
    assert same_nan.mean() > 0.999  # the same clear pixels
    both = ~np.isnan(peer_prob.values) & ~np.isnan(prob.values)
    assert both.mean() > 0.5
    diff = np.abs(peer_prob.values[both] - prob.values[both])
    assert float(np.quantile(diff, 0.999)) < 1e-3  # the same model on the same composite
    assert peer_frac.shape == bfrac.shape
    np.testing.assert_allclose(peer_frac.values, bfrac.values, atol=0.005)


def _spin(seconds: float) -> None:
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        sum(i * i for i in range(1000))


def test_sampler_files_cpu_under_the_right_stage() -> None:
    def masking_work() -> None:
        _spin(0.4)

    # a function whose code object claims to live in payesh/masking.py
    fake: Any = type(masking_work)(
        masking_work.__code__.replace(co_filename="/x/payesh/masking.py"),
        masking_work.__globals__,
    )
    with sampler.StageSampler(interval=0.01) as s:
        worker = threading.Thread(target=fake)
        worker.start()
        worker.join()
        time.sleep(0.2)  # waiting costs no CPU
    cpu = s.report()["cpu_seconds"]
    assert cpu.get("mask", 0.0) > 0.25
    assert cpu.get("mask", 0.0) > 3 * sum(v for k, v in cpu.items() if k != "mask")


def test_sampler_files_the_end_of_a_pool_job_under_its_stage() -> None:
    """A pool job that ends between two looks: the CPU of its end is the job's stage's,
    not the idle worker's the next look finds (pool threads run short jobs)."""

    def masking_job() -> None:
        _spin(0.035)

    fake: Any = type(masking_job)(
        masking_job.__code__.replace(co_filename="/x/payesh/masking.py"),
        masking_job.__globals__,
    )
    with ThreadPoolExecutor(1) as pool, sampler.StageSampler(interval=0.02) as s:
        for _ in range(12):
            pool.submit(fake).result()
            time.sleep(0.03)  # the worker idle between jobs
    cpu = s.report()["cpu_seconds"]
    assert cpu.get("mask", 0.0) > 0.3
    idle = cpu.get("other", 0.0) + cpu.get("wait", 0.0)
    assert idle < 0.1 * cpu["mask"], cpu


def _filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        mount, fs = line.split()[1], line.split()[2]
        if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fs
    return kind


def test_page_cache_made_warm_or_cold_before_a_measurement(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    (catalog / "item").mkdir(parents=True)
    blob = catalog / "item" / "B04.tif"
    for path, data in ((catalog / "catalog.json", b"{}"), (blob, os.urandom(4 << 20))):
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # clean pages: the only ones the kernel may drop
    files = pagecache.city_files(catalog / "catalog.json")
    assert files == [catalog / "catalog.json", blob]
    assert pagecache.warm(files) == (4 << 20) + 2
    assert pagecache.cached_fraction(files) == 1.0
    pagecache.evict(files)
    # tmpfs pages are the file itself: nothing to drop; anywhere else, all dropped
    expected = 1.0 if _filesystem_of(blob) == "tmpfs" else 0.0
    assert pagecache.cached_fraction(files) == expected
    pagecache.warm(files)
    assert pagecache.cached_fraction(files) == 1.0
