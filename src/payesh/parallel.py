"""How many threads payesh's own thread pools use (the native memory a run may hold is in
:mod:`payesh.nativemem`, whose names are re-exported here)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from payesh.errors import PayeshError
from payesh.nativemem import (
    GDAL_CACHE_MB,
    MALLOC_ARENAS,
    bound_native_memory,
    frozen_heap,
    gdal_cache_at_least,
    release_native_memory,
    trimming,
)

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "GDAL_CACHE_MB",
    "MALLOC_ARENAS",
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
    "trimming",
    "usable_cores",
    "whole_along",
]

T = TypeVar("T")
X = TypeVar("X", "xr.DataArray", "xr.Dataset")

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
