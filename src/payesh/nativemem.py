"""The native memory a run may hold: glibc's malloc arenas, GDAL's block cache and data
folders, and Python's garbage collector kept off the objects of before a run.

Split from :mod:`payesh.parallel`, which re-exports these names.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "GDAL_CACHE_MB",
    "MALLOC_ARENAS",
    "bound_native_memory",
    "frozen_heap",
    "gdal_cache_at_least",
    "release_native_memory",
    "trimming",
]

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
TRIM_EVERY_S = 0.25
"""How often :func:`trimming` gives malloc's free memory back, seconds."""


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
      flat with it (payesh's own pools are now shared, :func:`~payesh.parallel.shared_pool`).

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

    Called between the phases of a run (after the months, between the indicators'
    steps) and, during its end, every :data:`TRIM_EVERY_S` by :func:`trimming`: freed
    arrays otherwise stay in malloc's arenas, counted in the process's resident memory,
    while the next phase allocates arrays of other sizes. Returns whether anything was
    given back (``False`` where not glibc).
    """
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


@contextmanager
def trimming(every_s: float = TRIM_EVERY_S) -> Iterator[list[float]]:
    """Give malloc's free memory back to the system every ``every_s`` seconds while the
    block runs (:func:`release_native_memory`, from a thread of its own); yields the list
    the thread appends each trim's duration (seconds) to.

    For a phase whose steps run at the same time and allocate arrays of many sizes —
    a run's end, where the pixels' months are written while the indicators read the
    staged year — there is no point between two steps at which every step has freed its
    arrays, so no single trim. Without it, arrays freed by one step leave their pages
    resident in malloc's free lists, and the next step's arrays land on other free pages:
    on a 24 km city the end of a run grew by ~310 MB while what it held grew by ~160 MB
    (``mallinfo2``: ~250 MB free in the heap, its pages touched again one after another)
    and its peak was the run's (benchmarks/README.md, "Memory"). A trim takes ~10 ms
    (at most ~60 measured) on that heap; the free pages it gives back are faulted in
    again only if reused. Nothing happens where malloc is not glibc's.
    """
    times: list[float] = []
    try:
        has_trim = hasattr(_libc(), "malloc_trim")
    except OSError:
        has_trim = False
    if not has_trim:  # not glibc (macOS, musl): nothing to give back this way
        yield times
        return
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(every_s):
            start = time.perf_counter()
            release_native_memory()
            times.append(time.perf_counter() - start)

    thread = threading.Thread(target=trim, name="payesh-trim", daemon=True)
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join()


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
