"""Thread counts, shared pools and the native memory a run may hold (payesh.parallel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from payesh import parallel
from payesh.errors import PayeshError

_PROBE = (
    "import json, os; from payesh.parallel import bound_native_memory; "
    "print(json.dumps([bound_native_memory(), os.environ.get('GDAL_CACHEMAX')]))"
)


def _probe(env: dict[str, str]) -> list[object]:
    unset = ("GDAL_CACHEMAX", "MALLOC_ARENA_MAX", "GDAL_DATA", "PROJ_DATA", "PROJ_LIB")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=base | env, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_bound_native_memory_caps_gdal_cache_and_malloc_arenas() -> None:
    from rasterio._env import GDALDataFinder, PROJDataFinder

    done, cache = _probe({})
    assert done == {
        "GDAL_CACHEMAX": str(parallel.GDAL_CACHE_MB),
        "malloc_arena_max": "2",
        "GDAL_DATA": GDALDataFinder().search_wheel(),  # where rasterio looks first
        "PROJ_DATA": PROJDataFinder().search_wheel(),
    }
    assert cache == str(parallel.GDAL_CACHE_MB)
    # what the environment already decided is left alone
    decided = {"GDAL_CACHEMAX": "512", "MALLOC_ARENA_MAX": "4", "GDAL_DATA": "/x", "PROJ_LIB": "/y"}
    done, cache = _probe(decided)
    assert done == {} and cache == "512"


_ENV_PROBE = (
    "import genericpath, os, rasterio; from payesh.parallel import bound_native_memory; "
    "bound_native_memory(); calls = []; real = genericpath.exists; "
    "os.path.exists = genericpath.exists = lambda p: calls.append(p) or real(p); "
    "outer = rasterio.Env(); outer.__enter__(); "
    "[rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN='FALSE').__enter__().__exit__() for _ in range(5)]; "
    "print(len(calls))"
)


def test_nested_gdal_envs_no_longer_search_for_the_data_folders() -> None:
    """Each exit from a nested ``rasterio.Env`` (each file opened in one) searched for
    GDAL's and PROJ's data folders with ``os.path.exists``; once they are pinned, none."""
    unset = ("GDAL_DATA", "PROJ_DATA", "PROJ_LIB")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, "-c", _ENV_PROBE], env=base, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0"


def test_default_threads_reads_payesh_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYESH_THREADS", "3")
    assert parallel.default_threads() == 3
    monkeypatch.setenv("PAYESH_THREADS", "zero")
    with pytest.raises(ValueError, match="PAYESH_THREADS='zero'"):
        parallel.default_threads()


def test_io_threads_read_payesh_io_threads_apart_from_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PAYESH_IO_THREADS", raising=False)
    monkeypatch.setenv("PAYESH_THREADS", "1")
    assert parallel.io_threads() == parallel.IO_THREADS  # not the cores: the latency
    monkeypatch.setenv("PAYESH_IO_THREADS", "5")
    assert parallel.io_threads() == 5
    monkeypatch.setenv("PAYESH_IO_THREADS", "0")
    with pytest.raises(ValueError, match="PAYESH_IO_THREADS='0' must be at least 1"):
        parallel.io_threads()


def test_map_all_waits_for_every_job_before_raising() -> None:
    """A failing job is raised only once the others are done (they may read files the
    caller closes on the error)."""
    import time

    finished: list[int] = []

    def job(i: int) -> int:
        if i == 0:
            raise RuntimeError("first job fails at once")
        time.sleep(0.2)
        finished.append(i)
        return i

    with pytest.raises(RuntimeError, match="fails at once"):
        parallel.map_all(parallel.shared_pool("test-map-all", 4), job, range(4))
    assert sorted(finished) == [1, 2, 3]


def test_release_native_memory_gives_freed_arrays_back() -> None:
    """Arrays freed in the middle of malloc's heap stay resident until released."""
    code = """
import os, numpy as np
from payesh.parallel import release_native_memory
page = os.sysconf("SC_PAGE_SIZE")
def rss(): return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
arrays = [np.ones(4000, dtype="uint8") for _ in range(100_000)]  # ~400 MB, malloc'd
keep = arrays[::50]  # every 50th stays: the heap cannot shrink from its top
del arrays
before = rss()
released = release_native_memory()
print(released, round(before), round(rss()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    released, before, after = out.stdout.split()
    assert released == "True"
    assert int(before) - int(after) > 200, out.stdout  # MB given back


def test_trimming_gives_freed_arrays_back_while_the_block_runs_and_then_stops() -> None:
    """Freed memory goes back to the system within the block, by the trimming thread
    alone (no trim is called here), and the thread is gone when the block ends."""
    code = """
import os, threading, time, numpy as np
from payesh.parallel import trimming
page = os.sysconf("SC_PAGE_SIZE")
def rss(): return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
with trimming(0.05) as trims:
    arrays = [np.ones(4000, dtype="uint8") for _ in range(100_000)]  # ~400 MB, malloc'd
    keep = arrays[::50]  # every 50th stays: the heap cannot shrink from its top
    before = rss()
    del arrays
    time.sleep(0.5)
    after = rss()
alive = [t.name for t in threading.enumerate() if t.name == "payesh-trim"]
print(len(trims), round(before), round(after), len(alive))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n_trims, before, after, alive = map(int, out.stdout.split())
    assert n_trims >= 3, out.stdout
    assert before - after > 200, out.stdout  # MB given back
    assert alive == 0, out.stdout


def test_months_in_flight_one_per_four_cores_or_as_told() -> None:
    assert [parallel.months_in_flight(c) for c in (1, 2, 4, 7, 8, 12, 16, 64)] == [
        1,
        1,
        1,
        1,
        2,
        3,
        4,
        4,
    ]
    assert parallel.months_in_flight(2, "3") == 3
    assert parallel.months_in_flight(16, " ") == 4  # set but empty: the rule
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(PayeshError, match=r"PAYESH_S2_MONTHS_AT_ONCE=.*whole number"):
            parallel.months_in_flight(2, bad)


def test_side_months_one_from_local_files_several_from_remote_ones() -> None:
    """Local: one Landsat/VIIRS month at a time, paced beside the Sentinel-2 months;
    remote: several, as they wait on round trips (the flow sizes its runner with it)."""
    assert parallel.side_months_in_flight(False) == 1
    assert parallel.side_months_in_flight(True) == parallel.REMOTE_SIDE_MONTHS > 1


def test_gdal_cache_is_raised_for_reads_in_progress_and_put_back() -> None:
    from rasterio.env import get_gdal_config, set_gdal_config

    mb = 2**20
    before = int(get_gdal_config("GDAL_CACHEMAX"))
    set_gdal_config("GDAL_CACHEMAX", 40 * mb)
    try:
        with parallel.gdal_cache_at_least(10 * mb) as size:  # less than the cache: kept
            assert size == int(get_gdal_config("GDAL_CACHEMAX")) == 40 * mb
        with parallel.gdal_cache_at_least(30 * mb) as first:
            assert first == 40 * mb
            with parallel.gdal_cache_at_least(25 * mb) as both:  # two months in flight
                assert both == int(get_gdal_config("GDAL_CACHEMAX")) == 55 * mb
            assert int(get_gdal_config("GDAL_CACHEMAX")) == 40 * mb
        with pytest.raises(RuntimeError):
            with parallel.gdal_cache_at_least(100 * mb):
                assert int(get_gdal_config("GDAL_CACHEMAX")) == 100 * mb
                raise RuntimeError("a failed read")
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 40 * mb  # back, failure or not
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_frozen_heap_leaves_earlier_objects_out_until_the_outermost_block_ends() -> None:
    """Objects made before the block are frozen (skipped by full collections) inside it,
    also inside a nested block; the outermost block's end puts them back, so a cycle of
    garbage made before the block is collected afterwards, not kept for ever."""
    import gc
    import weakref

    from payesh.parallel import frozen_heap

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    del a, b
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert gone() is not None  # frozen: not collected inside the block
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # the inner block does not thaw the outer's
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_each_run_calls_the_job_once_per_run_on_the_pool_or_here() -> None:
    import threading

    from payesh.parallel import each_run

    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def job(lo: int) -> None:
        with lock:
            seen.append((lo, threading.current_thread().name))

    each_run(10, 4, job, "test-runs")
    assert sorted(lo for lo, _ in seen) == [0, 4, 8]
    assert all(name.startswith("payesh-test-runs") for _, name in seen)
    seen.clear()
    each_run(3, 4, job, "test-runs")  # one run: on the calling thread
    assert seen == [(0, threading.current_thread().name)]
    seen.clear()
    each_run(0, 4, job, "test-runs")
    assert seen == []


def test_whole_along_joins_the_named_dims_and_leaves_the_rest() -> None:
    import numpy as np
    import xarray as xr

    da = xr.DataArray(
        np.arange(4 * 6 * 8.0).reshape(4, 6, 8),
        dims=("time", "y", "x"),
        coords={"lat": (("y", "x"), np.ones((6, 8)))},
    )
    assert parallel.whole_along(da, "time") is da  # numpy: nothing to chunk
    chunked = da.chunk({"time": 1, "y": 3, "x": 4})
    joined = parallel.whole_along(chunked, "time")
    assert joined.chunks == ((4,), (3, 3), (4, 4))
    assert joined["lat"].data is chunked["lat"].data  # the coordinates as they were
    assert parallel.whole_along(chunked, "y", "x").chunks == ((1,) * 4, (6,), (8,))
    ds = parallel.whole_along(chunked.to_dataset(name="v"), "time")
    assert ds["v"].chunks == joined.chunks
    xr.testing.assert_identical(joined.compute(), da)
