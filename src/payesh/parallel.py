"""How many threads payesh's own thread pools use, and the native memory they may hold."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from payesh.errors import PayeshError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "bound_native_memory",
    "default_threads",
    "distributed_client_active",
    "each_run",
    "frozen_heap",
    "gather",
    "gdal_cache_at_least",
    "io_threads",
    "map_all",
    "months_in_flight",
    "release_native_memory",
    "shared_pool",
    "side_months_in_flight",
    "usable_cores",
    "whole_along",
]

T = TypeVar("T")
X = TypeVar("X", "xr.DataArray", "xr.Dataset")

GDAL_CACHE_MB = 16
"""GDAL's block cache for a run, MB, between a month's aligned reads. Each month's read
raises it to what that month needs to decode every COG block once
(:func:`gdal_cache_at_least`, :func:`payesh.sources.aligned._block_cache_bytes`): ~3.5 MB
a scene with 512 px blocks (26 MB for the benchmark's months of 6 scenes), ~14 MB a
scene with the 1024 px blocks of Earth Search's Sentinel-2. Between the months only
Landsat and night-light reads use it, whose blocks are few and small. GDAL's default (5 %
of the machine's memory) fills up with blocks never read again, and so grows with the
city."""
MALLOC_ARENAS = 2

MAX_THREADS = 16

IO_THREADS = 64
"""Requests in flight at once for remote imagery (:func:`io_threads`). A remote read is
mostly waiting on the network: the 6 km bench city's year-long flow against a STAC API
and COGs 100 ms away took 20 s with 32, 15-16 s with 64 and with 128 (a month's 42
Sentinel-2 files are checked in one wave), on 2 cores; 161 s with 2 (as many as the
cores), at git 4bc5695. With the tiles fetched by payesh (git e0b0f69): 13.1 s with 32,
9.1 s with 64. ``benchmarks/remote.py``, benchmarks/README.md "Remote imagery"."""


def default_threads() -> int:
    """``$PAYESH_THREADS`` if set, else the cores this process may run on (its CPU
    affinity, as ``taskset`` or a container's cpuset sets it; at most 16).

    The compiled classifier, the aligned Sentinel-2 reader and a local run's Dask
    scheduler size their pools with this; set it to share a machine, or to measure
    scaling with cores.
    """
    return _count_from_env("PAYESH_THREADS") or min(MAX_THREADS, usable_cores())


def io_threads() -> int:
    """``$PAYESH_IO_THREADS`` if set, else :data:`IO_THREADS`: how many requests for
    remote imagery (range requests, by payesh or through GDAL, and file checks) the
    process has in flight at once, all its reads together
    (:func:`payesh.sources.inflight.request_slot`); each I/O pool has that many threads.

    Decoding and compositing stay on :func:`default_threads`; a remote read spends most
    of its time waiting for the server, so its pool is sized by the latency to hide, not
    by the cores. Lower it for a provider that limits concurrent requests.
    """
    return _count_from_env("PAYESH_IO_THREADS") or IO_THREADS


def _count_from_env(name: str) -> int | None:
    """The environment variable ``name`` as a count of at least 1; ``None`` if unset."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number") from None
    if n < 1:
        raise ValueError(f"{name}={value!r} must be at least 1")
    return n


def distributed_client_active() -> bool:
    """Whether this thread computes on a ``dask.distributed`` cluster (a default client)."""
    if "distributed" not in sys.modules:  # never imported: no client (and no import now)
        return False
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):
        return False
    return True


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the system has one."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _libc() -> Any:
    """glibc, for mallopt / malloc_trim; raises OSError or AttributeError elsewhere."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def bound_native_memory() -> dict[str, str]:
    """Keep the memory C libraries hold from growing with the size of a run.

    * GDAL's block cache: ``GDAL_CACHEMAX`` = :data:`GDAL_CACHE_MB` unless set (read by
      GDAL at its first read in the process);
    * glibc's malloc arenas: at most :data:`MALLOC_ARENAS` unless ``MALLOC_ARENA_MAX`` is
      set. Every new thread (Prefect's, Dask's, a pool's) may otherwise get an arena of
      its own, which keeps the arrays it freed: measured on a 24 km city with a thread
      pool per month, memory grew by about 230 MB a month without the cap and stayed
      flat with it (payesh's own pools are now shared, :func:`shared_pool`).

    Also ``GDAL_DATA`` and ``PROJ_DATA``, unless set, to the folders rasterio finds
    itself (those of its wheel). Without them rasterio looks for the folders again, with
    ``os.path.exists`` calls, on every exit from a nested ``rasterio.Env`` (every file
    opened): on the 6 km bench city that was ~0.8 s of the run, most of it threads
    waiting to get the GIL back after each call.

    Returns what was set (empty where the environment already decided, or not glibc).
    """
    done: dict[str, str] = {}
    if "GDAL_CACHEMAX" not in os.environ:
        os.environ["GDAL_CACHEMAX"] = done["GDAL_CACHEMAX"] = str(GDAL_CACHE_MB)
    done.update(_pin_gdal_data())
    if "MALLOC_ARENA_MAX" not in os.environ:
        try:
            if _libc().mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1:
                done["malloc_arena_max"] = str(MALLOC_ARENAS)
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to cap
            pass
    return done


def _pin_gdal_data() -> dict[str, str]:
    from rasterio._env import GDALDataFinder, PROJDataFinder

    done: dict[str, str] = {}
    if "GDAL_DATA" not in os.environ:
        found = GDALDataFinder().search_wheel()
        if found:
            os.environ["GDAL_DATA"] = done["GDAL_DATA"] = found
    if "PROJ_DATA" not in os.environ and "PROJ_LIB" not in os.environ:
        found = PROJDataFinder().search_wheel()
        if found:
            os.environ["PROJ_DATA"] = done["PROJ_DATA"] = found
    return done


_gdal_cache_lock = threading.Lock()
_gdal_cache_needs: list[int] = []  # bytes asked for by the reads in progress
_gdal_cache_base: list[int] = []  # the size before the first of them (bytes)


@contextmanager
def gdal_cache_at_least(nbytes: int) -> Iterator[int]:
    """GDAL's block cache raised to ``nbytes`` while the ``with`` block runs; yields the
    size set (bytes).

    Reads in progress at the same time (months in flight) add up; once the last is done
    the cache is back to its size before them (GDAL then frees the blocks over it). The
    cache is GDAL's, one per process: ``GDAL_CACHEMAX`` is read once, so the size is set
    with ``GDALSetCacheMax64`` (``rasterio.env.set_gdal_config``).
    """
    from rasterio.env import get_gdal_config, set_gdal_config

    def resize() -> int:
        size = max([_gdal_cache_base[0], sum(_gdal_cache_needs)])
        set_gdal_config("GDAL_CACHEMAX", size)
        return size

    with _gdal_cache_lock:
        if not _gdal_cache_needs:
            _gdal_cache_base[:] = [int(get_gdal_config("GDAL_CACHEMAX"))]
        _gdal_cache_needs.append(int(nbytes))
        size = resize()
    try:
        yield size
    finally:
        with _gdal_cache_lock:
            _gdal_cache_needs.remove(int(nbytes))
            resize()


def release_native_memory() -> bool:
    """Give the memory malloc holds free back to the system (glibc's ``malloc_trim``).

    Called between the phases of a run (after each Sentinel-2 month, before the
    indicators): the months' freed arrays otherwise stay in malloc's arenas, counted in
    the process's resident memory, while the next phase allocates arrays of other
    sizes. Returns whether anything was given back (``False`` where not glibc).
    """
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


_frozen_depth = 0
_frozen_lock = threading.Lock()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects that exist now (imported modules, Prefect's and the run's
    set-up) out of Python's full garbage collections until the block ends.

    A full collection walks every tracked object: ~350 000 after the flow's imports,
    ~0.2 s each time, with the GIL held. A run makes a few (each time the objects grew
    by a quarter), and every thread waits on them. Frozen (``gc.freeze``), the objects of
    before are skipped; they are put back when the outermost block ends
    (``gc.unfreeze``), so garbage among them is collected afterwards, not kept.
    """
    global _frozen_depth
    with _frozen_lock:
        _frozen_depth += 1
        gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_depth -= 1
            if _frozen_depth == 0:
                gc.unfreeze()


MONTHS_ENV = "PAYESH_S2_MONTHS_AT_ONCE"
CORES_PER_MONTH = 4
MAX_MONTHS_IN_FLIGHT = 4


def months_in_flight(cores: int, override: str | None = None) -> int:
    """How many Sentinel-2 months a run makes at the same time on ``cores`` cores.

    One per :data:`CORES_PER_MONTH` cores, at most :data:`MAX_MONTHS_IN_FLIGHT` (each
    month in flight holds its composite: ~160 MB for a 24 km city), so one on 2 cores.
    A month's reads and medians already use every core, but between them it has steps
    that use one (its Prefect task, its staging write): with many cores, months one
    after another leave most of them idle (benchmarks/README.md, "Scaling with cores").

    Parameters
    ----------
    cores
        Cores the run's process may use.
    override
        The value of ``$PAYESH_S2_MONTHS_AT_ONCE`` if set (read by the flow): a whole
        number ≥ 1 that replaces the rule above.

    Raises
    ------
    PayeshError
        ``override`` is not a whole number ≥ 1 (the message names the variable).
    """
    if override is not None and override.strip():
        try:
            n = int(override)
        except ValueError:
            n = 0
        if n < 1:
            raise PayeshError(f"${MONTHS_ENV}={override!r}: expected a whole number ≥ 1")
        return n
    return max(1, min(MAX_MONTHS_IN_FLIGHT, cores // CORES_PER_MONTH))


#: Landsat and VIIRS months a run from remote files makes at once (from local files: one,
#: beside each Sentinel-2 month). Each is a few round trips in turn (GDAL's opening, then
#: its reads) and little CPU. The 6 km bench year at 100 ms a request, on 2 cores:
#: 12.1-13.2 s with 2, 10.1 s with 4, 10.2-11.2 s with 8 (benchmarks/README.md).
REMOTE_SIDE_MONTHS = 4


def side_months_in_flight(remote: bool) -> int:
    """How many Landsat and VIIRS months a run makes at the same time: one from local
    files, :data:`REMOTE_SIDE_MONTHS` when its items are read over a network."""
    return REMOTE_SIDE_MONTHS if remote else 1


_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools_after_fork() -> None:
    """A forked child has none of its parent's threads: its pools start afresh."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def shared_pool(name: str, threads: int | None = None) -> ThreadPoolExecutor:
    """The process's pool ``name`` of ``threads`` threads (default :func:`default_threads`).

    One pool per name and size for the process, never shut down: concurrent callers (Dask
    threads) share it, so threads stay bounded by its size, and months reuse the same
    threads rather than starting new ones (each new thread would get a malloc arena of its
    own, keeping its freed arrays). Jobs of a pool must not wait on jobs of the same pool.
    """
    n = max(1, threads or default_threads())
    with _pools_lock:
        if (name, n) not in _pools:
            _pools[(name, n)] = ThreadPoolExecutor(
                max_workers=n, thread_name_prefix=f"payesh-{name}"
            )
        return _pools[(name, n)]


def each_run(n: int, size: int, job: Callable[[int], None], pool: str) -> None:
    """``job(lo)`` for every run of ``size`` items of ``n`` (``lo`` = 0, size, 2·size, …):
    on this thread when there is one run, else on the process's pool ``pool``
    (:func:`shared_pool`), waiting for all (:func:`map_all`)."""
    starts = range(0, n, max(1, size))
    if len(starts) <= 1:
        for lo in starts:
            job(lo)
    else:
        map_all(shared_pool(pool), job, starts)


@contextmanager
def threaded_dask() -> Iterator[None]:
    """Dask's threaded scheduler on this process's shared pool (:func:`shared_pool`,
    ``PAYESH_THREADS`` threads), with rechunks planned as tasks.

    The scheduler is named by its function and rechunks are planned as tasks (what they
    are on this scheduler): named ``"threads"``, or left to choose its rechunk method, Dask
    imports ``distributed`` at the first compute and rechunk, only to look for a client
    (measured here: ~0.1 s and ~10 MB a run).
    """
    import dask
    import dask.threaded

    settings = {
        "scheduler": dask.threaded.get,
        "pool": shared_pool("dask"),
        "array.rechunk.method": "tasks",
    }
    with dask.config.set(settings):
        yield


def whole_along(obj: X, *dims: str) -> X:
    """``obj`` with each of ``dims`` in one Dask chunk, its other chunks (and its
    coordinates) as they were; ``obj`` itself when it is not on Dask.

    For ``xr.apply_ufunc`` over core dimensions (``time`` for a pixel's year). Handed
    blocks split along a core dimension, Dask's ``allow_rechunk`` merges them and, to keep
    a block's bytes, splits the other dimensions: a 24 km city's staged year (500 px
    blocks, a month each) became 361 blocks of 125 px and ~8 700 rechunk tasks, and
    ``persistence`` over it took 1.8–2.1 s (2.0–2.3 CPU-s) against 0.34–0.42 s joined.
    """
    import xarray as xr

    def joined(var: xr.DataArray) -> xr.DataArray:
        axes = {var.dims.index(d): -1 for d in dims if d in var.dims}
        if var.chunks is None or not axes:
            return var
        # the data only: ``.chunk`` would put the coordinates on Dask too, and merging
        # results would then compute them to compare them
        return var.copy(deep=False, data=var.data.rechunk(axes))

    if isinstance(obj, xr.Dataset):
        return obj.assign({name: joined(var) for name, var in obj.data_vars.items()})
    return joined(obj)


def gather(futures: Sequence[Future[T]]) -> list[T]:
    """The results of ``futures`` in order, once every one has finished.

    Unlike ``[f.result() for f in futures]``, a failure is raised only after the other jobs
    are done: on a shared pool they would otherwise go on reading files the caller is
    about to close.
    """
    wait(futures)
    return [f.result() for f in futures]


def map_all(pool: ThreadPoolExecutor, fn: Callable[..., T], *iterables: Iterable[Any]) -> list[T]:
    """``list(pool.map(fn, *iterables))``, with :func:`gather`'s wait for every job."""
    return gather([pool.submit(fn, *args) for args in zip(*iterables, strict=True)])
