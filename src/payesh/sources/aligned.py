"""Sentinel-2 months read straight into the city grid when the grids are aligned.

A city is processed in the UTM zone of its Sentinel-2 tiles, on a 10 m grid whose
pixel edges fall on the tiles' own 10 m lattice. In that case a 10 m band needs no
resampling at all and a 20 m band needs only each pixel repeated, so the general
reprojection machinery (``odc.stac.load``: a Dask graph per scene, GDAL warping per
chunk) is pure overhead over the decode itself. Here every asset of a month is read
with one windowed ``rasterio`` read per (item, asset, block of whole COG blocks) on a
pool of threads (GDAL releases the GIL while decoding), mapped onto the city grid with
integer indices, masked with SCL and reduced to the monthly median block by block.

The result is the same Dataset :func:`payesh.monthly.s2_month` builds through
odc-stac — the same nearest-neighbour mapping (pixel centres), the same fusing of
items that share a time stamp (first valid value wins, in item order), the same masks
and counts — and tests hold the two paths equal. Grids that are not aligned (another
CRS, a rotated or shifted lattice) return ``None`` from :func:`plan_aligned` and the
caller falls back to odc-stac.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import lru_cache, partial
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pystac
import rasterio
import xarray as xr
from numba import njit
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from rasterio.windows import Window

from payesh import nanops
from payesh.errors import BadItemWarning, NoReadableItemsError, SourceError
from payesh.masking import scl_masks as scl_bad_observed
from payesh.parallel import (
    default_threads,
    gather,
    gdal_cache_at_least,
    io_threads,
    shared_pool,
)
from payesh.sources.checksum import readable_href
from payesh.sources.cogtiles import TileSource, tile_source
from payesh.sources.profiles import S2_SATURATED_DN
from payesh.sources.rio_retry import retry_rio

#: Thread-seconds spent per stage since the process started (read = open + decode +
#: placing on the grid; mask = SCL masks; composite = medians). The benchmark reads it.
STAGE_SECONDS: dict[str, float] = {"read": 0.0, "mask": 0.0, "composite": 0.0}
_stage_lock = threading.Lock()
R = TypeVar("R")


def _add_time(stage: str, start: float) -> None:
    with _stage_lock:
        STAGE_SECONDS[stage] += time.perf_counter() - start


__all__ = [
    "AssetGrid",
    "close_plans",
    "open_ahead",
    "plan_aligned",
    "read_s2_month_aligned",
    "s2_month_aligned",
]


@dataclass(frozen=True)
class AssetGrid:
    """Where each city pixel's centre falls in one asset's pixel grid."""

    href: str
    rows: np.ndarray  # source row of each city row (may lie outside the raster)
    cols: np.ndarray  # source column of each city column
    height: int
    width: int
    block_rows: int
    block_cols: int
    nodata: float | None
    dataset: Any = field(default=None, compare=False, repr=False)  # open while the month reads
    #: the file's tiles decoded by payesh (:mod:`payesh.sources.cogtiles`); None: by GDAL
    tiles: TileSource | None = field(default=None, compare=False, repr=False)


@lru_cache(maxsize=256)
def _centre_indices(origin: float, step: float, n: int, src_origin: float, src_step: float) -> Any:
    """Source pixel index of each city pixel centre; ``None`` if a centre sits on an edge.

    A centre exactly on a source pixel edge would be settled by rounding, which odc-stac
    and GDAL may settle differently: such lattices take the general path. Cached (and
    read-only): every scene of one tile and band has the same lattice.
    """
    pos = (origin + (np.arange(n) + 0.5) * step - src_origin) / src_step
    frac = pos - np.floor(pos)
    if np.any(np.minimum(frac, 1 - frac) < 1e-6):
        return None
    index = np.floor(pos).astype(np.int64)
    index.setflags(write=False)
    return index


def _grid_of(
    src: Any,
    href: str,
    geobox: GeoBox,
    *,
    halo: bool = False,
    where: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AssetGrid | None:
    """The asset's grid mapping (``None`` if not aligned); the file's tiles are decoded
    by payesh where :func:`~payesh.sources.cogtiles.tile_source` can (a file over
    http(s): fetched on the ``tile-fetch`` pool, :func:`~payesh.parallel.io_threads` at
    a time, named ``where`` in errors; ``env``: the GDAL options it was opened with).
    ``halo``: the cloud mask's band, read with a halo into the next tiles, whose source
    keeps two rows of the city's tiles decoded (each tile is then decoded once)."""
    if src.crs is None:
        raise SourceError(f"{href}: the raster has no CRS")
    t = src.transform
    g = geobox.affine
    if src.crs != rasterio.crs.CRS.from_user_input(str(geobox.crs)):
        return None
    if not (t.b == 0 and t.d == 0 and g.b == 0 and g.d == 0 and t.a > 0 and t.e < 0):
        return None
    if t.a < g.a or -t.e < -g.e:
        return None  # a city grid finer than the asset's only: coarser means averaging
    ny, nx = geobox.shape
    rows = _centre_indices(g.f, g.e, ny, t.f, t.e)
    cols = _centre_indices(g.c, g.a, nx, t.c, t.a)
    if rows is None or cols is None:
        return None
    block_rows, block_cols = (int(v) for v in src.block_shapes[0])
    inside = cols[(cols >= 0) & (cols < src.width)]
    across = len(np.unique(inside // max(1, block_cols))) if len(inside) else 1
    return AssetGrid(
        href=href,
        rows=rows,
        cols=cols,
        height=src.height,
        width=src.width,
        block_rows=block_rows,
        block_cols=block_cols,
        nodata=src.nodata,
        dataset=src,
        tiles=tile_source(
            src,
            keep=2 * across + 2 if halo else 1,
            url=readable_href(href),
            where=where,
            env=env,
            pool=shared_pool("tile-fetch", io_threads()),
        ),
    )


@dataclass(frozen=True)
class ItemPlan:
    """One item's assets on the city grid, with its scale and offset per band."""

    item_id: str
    time: np.datetime64
    grids: Mapping[str, AssetGrid]
    scale_offset: Mapping[str, tuple[float, float]]
    nodata: Mapping[str, float]


def plan_aligned(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    asset_keys: Mapping[str, str],
    scale_offset: Mapping[str, Mapping[str, tuple[float, float]]],
    nodata: Mapping[str, Mapping[str, float]],
    *,
    threads: int = 4,
    env: Mapping[str, str] | None = None,
) -> list[ItemPlan] | None:
    """Per-item read plans, or ``None`` when any asset is not aligned with ``geobox``.

    ``scale_offset[item_id][band]`` and ``nodata[item_id][band]`` come from the items'
    ``raster:bands`` (see :mod:`payesh.sources.load`). Each (item, asset) is checked and
    opened as :func:`s2_month_aligned` does it, a job of its own on ``threads`` threads;
    a file that fails its checks is a :class:`~payesh.errors.SourceError` naming it. On
    an error or a grid that is not aligned, every file opened here is closed again.
    """
    pool = shared_pool("aligned-plan", max(1, threads))
    jobs = [(item, band, key) for item in items for band, key in asset_keys.items()]
    opens = [partial(_checked_grid, *job, geobox, dict(env or {})) for job in jobs]
    checked = _open_all(pool, opens, grid=lambda found: found[1])
    opened = [grid for _, grid in checked if grid is not None]
    problem = next((p for p, _ in checked if p is not None), None)
    if problem is not None or len(opened) < len(jobs):
        for grid in opened:
            grid.dataset.close()
        if problem is not None:
            raise SourceError(problem)
        return None
    grids: dict[str, dict[str, AssetGrid]] = {}
    for (item, band, _), grid in zip(jobs, opened, strict=True):
        grids.setdefault(item.id, {})[band] = grid
    return [
        ItemPlan(
            item_id=item.id,
            time=_item_time(item),
            grids=grids[item.id],
            scale_offset=scale_offset[item.id],
            nodata=nodata[item.id],
        )
        for item in items
    ]


def _open_all(pool: Any, opens: Sequence[Callable[[], R]], grid: Callable[[R], Any]) -> list[R]:
    """The results of ``opens`` (calls that open files), each a job on ``pool``; when one
    raises, the :class:`AssetGrid` (``grid(result)``, or ``None``) of each other one is
    closed, then it is raised: no file is left open."""
    futures = [pool.submit(fn) for fn in opens]
    wait(futures)
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        for f in futures:
            opened = grid(f.result()) if f.exception() is None else None
            if opened is not None:
                opened.dataset.close()
        raise failed
    return [f.result() for f in futures]


def _checked_grid(
    item: pystac.Item, band: str, key: str, geobox: GeoBox, env: Mapping[str, str]
) -> tuple[str | None, AssetGrid | None]:
    """One file checked as :func:`~payesh.sources.validate.file_problem` checks it (a
    remote one with its retries) and mapped on the city grid, from one opening:
    ``(problem, None)`` for a bad file, ``(None, None)`` when it is not aligned (closed,
    either way), else ``(None, grid)`` with the file open for the reads."""
    from payesh.sources.validate import open_verified

    href = item.assets[key].get_absolute_href() or item.assets[key].href
    problem, src = open_verified(item, key, env=env)
    if src is None:
        return problem, None
    where = f"item {item.id!r} asset {key!r} ({href.split('?', 1)[0]})"
    try:
        with rasterio.Env(**env):
            grid = _grid_of(src, href, geobox, halo=band == "scl", where=where, env=env)
    except BaseException:
        src.close()
        raise
    if grid is None:
        src.close()
    return None, grid


def _item_time(item: pystac.Item) -> np.datetime64:
    assert item.datetime is not None  # metadata checks passed: every item has one
    return np.datetime64(item.datetime.replace(tzinfo=None), "ns")


def close_plans(plans: Sequence[ItemPlan]) -> None:
    """Close the datasets the plans hold open."""
    for plan in plans:
        for grid in plan.grids.values():
            if grid.tiles is not None:
                grid.tiles.clear()
            if grid.dataset is not None:
                grid.dataset.close()


def _source_window(grid: AssetGrid, rows: np.ndarray, cols: np.ndarray) -> Any:
    """``((r0, c0, r1, c1), source rows, source columns, rows inside, columns inside)``:
    the asset's window (end exclusive) under city rows ``rows`` × columns ``cols``, or
    ``None`` if they miss the raster."""
    src_rows, src_cols = grid.rows[rows], grid.cols[cols]
    in_r = (src_rows >= 0) & (src_rows < grid.height)
    in_c = (src_cols >= 0) & (src_cols < grid.width)
    if not in_r.any() or not in_c.any():
        return None
    r0, c0 = int(src_rows[in_r].min()), int(src_cols[in_c].min())
    r1, c1 = int(src_rows[in_r].max()) + 1, int(src_cols[in_c].max()) + 1
    return (r0, c0, r1, c1), src_rows, src_cols, in_r, in_c


def _read_raw(
    grid: AssetGrid, rows: np.ndarray, cols: np.ndarray, env: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The asset's window under city rows ``rows`` × columns ``cols`` as stored (DN), with
    each city row's and column's index into it (-1 outside the raster); ``None`` if the
    block misses the raster."""
    found = _source_window(grid, rows, cols)
    if found is None:
        return None
    (r0, c0, r1, c1), src_rows, src_cols, in_r, in_c = found
    window = Window(c0, r0, c1 - c0, r1 - r0)
    own = None if grid.tiles is None else grid.tiles.read(c0, r0, c1 - c0, r1 - r0)
    if own is not None:  # decoded by payesh (local DEFLATE tiles)
        win = own
    elif env.get("GDAL_DISABLE_READDIR_ON_OPEN", "FALSE") == "FALSE":  # local: no options
        win = grid.dataset.read(1, window=window)
    else:  # remote: GDAL's retries and timeouts per request, payesh's around them
        win = _read_remote(grid, window, env)
    return win, np.where(in_r, src_rows - r0, -1), np.where(in_c, src_cols - c0, -1)


#: How a raw value becomes a grid value, for the placing kernels (one tuple: Numba passes
#: it as a typed tuple): nodata of the file and of the item, the saturated DN, scale,
#: offset (float32 each), and whether the band is physical (False: a class, SCL).
Conversion = tuple[np.float32, np.float32, np.float32, np.float32, np.float32, bool]


def _place_first(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:
    """:func:`_place_kernel` into an ``out`` whatever it holds: every pixel of ``out`` is
    written, NaN where the window gives nothing. A window of the 10 m grid (consecutive
    rows and columns) covering ``out`` goes through :func:`_place_window`, the same values
    by the same float32 operations and faster: it writes each pixel once (no NaN fill
    first) and need not check ``out`` for fusing items (that check keeps the compiler from
    vectorising the general loop: 0.62 ms for 512², numpy's vectorised steps 0.29–0.5 ms,
    :func:`_place_window` ~0.1 ms, measured); any other window (20 m) through
    :func:`_place_rows`.
    """
    ok_r, ok_c = np.flatnonzero(ri >= 0), np.flatnonzero(ci >= 0)
    if not len(ok_r) or not len(ok_c):
        out.fill(np.nan)
        return
    # the rows and columns inside the raster are one range of the block each, and their
    # source indices never decrease: consecutive when they span as many as they count
    i0, i1, j0, j1 = int(ok_r[0]), int(ok_r[-1]) + 1, int(ok_c[0]), int(ok_c[-1]) + 1
    if ri[i1 - 1] - ri[i0] != i1 - 1 - i0 or ci[j1 - 1] - ci[j0] != j1 - 1 - j0:
        # 20 m: each pixel repeated (numpy's gather would cost twice the compiled loop)
        _place_rows(win, ri, ci, out, conv)
        return
    if (i0, i1, j0, j1) != (0, out.shape[0], 0, out.shape[1]):
        out.fill(np.nan)  # the city's edge: pixels outside the raster
    src = win[ri[i0] : ri[i1 - 1] + 1, ci[j0] : ci[j1 - 1] + 1]
    _place_window(src, out[i0:i1, j0:j1], conv)


@njit(nogil=True, cache=True, inline="always")
def _value(
    dn: Any,
    conv: Conversion,
) -> np.float32:  # pragma: no cover - compiled
    """One raw value on the grid: NaN at either nodata and, with ``physical``, where
    saturated; else ``DN * scale + offset`` in float32 (two rounded steps, as numpy's
    in-place ``*=`` then ``+=``; no fused multiply-add), or the class (SCL) as it is."""
    nodata_file, nodata_item, saturated, scale, offset, physical = conv
    v = np.float32(dn)
    if (v == nodata_file) | (v == nodata_item):
        return np.float32(np.nan)
    if physical:
        if v >= saturated:
            return np.float32(np.nan)
        return v * scale + offset
    return v


@njit(nogil=True, cache=True)
def _place_rows(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """:func:`_place_kernel` into an ``out`` whatever it holds (every pixel written, NaN
    where the window gives nothing), for any ``ri``/``ci``: each source row is converted
    once, in a vectorised pass over the columns it spans, and gathered from there; an
    output row on the same source row as the one before (20 m on the 10 m grid) is a
    copy of it. The same float32 operations; a 512² window of a 20 m band 0.30 → 0.12 ms.
    """
    ny, nx = out.shape
    nan = np.float32(np.nan)
    c_lo, c_hi = win.shape[1], -1
    for j in range(nx):
        c = ci[j]
        if c >= 0:
            c_lo = min(c_lo, c)
            c_hi = max(c_hi, c)
    row = np.empty(max(0, c_hi - c_lo + 1), dtype=np.float32)
    last_r, last_i = -1, -1
    for i in range(ny):
        r = ri[i]
        o = out[i]
        if r < 0 or c_hi < 0:
            o[:] = nan
            continue
        if r == last_r:
            o[:] = out[last_i]
            continue
        src = win[r]
        for k in range(row.shape[0]):
            row[k] = _value(src[c_lo + k], conv)
        for j in range(nx):
            c = ci[j]
            o[j] = row[c - c_lo] if c >= 0 else nan
        last_r, last_i = r, i


@njit(nogil=True, cache=True)
def _place_window(
    src: np.ndarray,
    dst: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """``dst = src`` as :func:`_place_kernel` converts a value, for windows of the same
    shape: three passes over each row (convert, scale, mark missing), each vectorised."""
    nodata_file, nodata_item, saturated, scale, offset, physical = conv
    n, m = src.shape
    row = np.empty(m, dtype=np.float32)
    for i in range(n):
        s = src[i]
        d = dst[i]
        for j in range(m):
            row[j] = np.float32(s[j])
        if physical:
            for j in range(m):
                d[j] = row[j] * scale + offset  # float32: rounded after each step
            for j in range(m):
                v = row[j]
                if (v == nodata_file) | (v == nodata_item) | (v >= saturated):
                    d[j] = np.nan
        else:
            for j in range(m):
                v = row[j]
                d[j] = np.nan if (v == nodata_file) | (v == nodata_item) else v


@njit(nogil=True, cache=True)
def _place_kernel(
    win: np.ndarray,
    ri: np.ndarray,
    ci: np.ndarray,
    out: np.ndarray,
    conv: Conversion,
) -> None:  # pragma: no cover - compiled
    """Fill the still-missing (NaN) pixels of ``out`` with ``win[ri[i], ci[j]]``.

    Each value as :func:`_value` converts it (NaN at nodata and saturation). Filling only
    the missing pixels fuses the items of one time step: the first valid value wins, in
    item order.
    """
    for i in range(ri.shape[0]):
        r = ri[i]
        if r < 0:
            continue
        for j in range(ci.shape[0]):
            c = ci[j]
            if c < 0 or out[i, j] == out[i, j]:
                continue
            out[i, j] = _value(win[r, c], conv)


def _read_remote(grid: AssetGrid, window: Window, env: Mapping[str, str]) -> np.ndarray:
    """``grid.dataset.read(1, window=window)``; a failed read re-opens the file and tries again.

    The dataset is closed before it is opened again so that GDAL forgets the bytes it
    holds for it (``CPL_VSIL_CURL_NON_CACHED``): a damaged range is fetched anew.
    """

    def read() -> np.ndarray:
        with rasterio.Env(**env):
            if grid.dataset.closed:  # a retry: open it again (a failure here is retried too)
                fresh = rasterio.open(readable_href(grid.href))
                object.__setattr__(grid, "dataset", fresh)  # the one field reads replace
            return np.asarray(grid.dataset.read(1, window=window))

    return retry_rio(
        read, where=grid.href.split("?", 1)[0], before_retry=lambda: grid.dataset.close()
    )


def _cuts(index: np.ndarray, block: int, target: int) -> list[slice]:
    """Ranges of city pixels whose source pixels ``index`` fill whole source blocks of
    ``block`` pixels, about ``target`` source pixels long (shorter than a block: ranges of
    ``target``, for tests)."""
    unit = block * max(1, target // block) if target >= block else max(1, target)
    part = np.floor_divide(index, unit)
    edges = [0, *(int(c) for c in np.flatnonzero(np.diff(part)) + 1), len(index)]
    return [slice(a, b) for a, b in pairwise(edges) if b > a]


def _blocks(plans: Sequence[ItemPlan], target: int = 512) -> list[tuple[slice, slice]]:
    """City (rows, columns) blocks whose source windows cover whole COG blocks of the
    finest band, about ``target`` source pixels a side.

    Blocks, not full-width strips: the pixels in flight (every scene and band of the
    month over one block) stay the same whatever the width of the city. They come grouped
    by the COG block of the coarsest band (a 20 m block spans 2 × 2 blocks of 10 m), and
    inside a group by the COG block of the finest band (a 1024 px block is read by 2 × 2
    city blocks of 512), so that each COG block is decoded once and then found in GDAL's
    cache while the next city blocks need it: the cache then holds one block of each band
    a scene (:func:`_block_cache_bytes`).
    """
    grids = list(plans[0].grids.values())
    finest = max(grids, key=lambda g: len(np.unique(g.rows)))
    coarsest = min(grids, key=lambda g: len(np.unique(g.rows)))
    rows = _cuts(finest.rows, max(1, finest.block_rows), target)
    cols = _cuts(finest.cols, max(1, finest.block_cols), target)

    def coarse_block(r: slice, c: slice) -> tuple[int, int]:
        return (
            int(coarsest.rows[r.start]) // max(1, coarsest.block_rows),
            int(coarsest.cols[c.start]) // max(1, coarsest.block_cols),
        )

    def fine_block(r: slice, c: slice) -> tuple[int, int]:
        return (
            int(finest.rows[r.start]) // max(1, finest.block_rows),
            int(finest.cols[c.start]) // max(1, finest.block_cols),
        )

    blocks = [(r, c) for r in rows for c in cols]
    # stable: row-major inside a fine block
    return sorted(blocks, key=lambda b: (coarse_block(*b), fine_block(*b)))


CACHE_MARGIN = 1.25
"""Head room on :func:`_block_cache_bytes` (scenes read beside the month, GDAL's own
bookkeeping). Measured on a 12 km city with 1024 px blocks and 6 scenes a month: with
city blocks read row by row in a group (before git b5d7518), 96 MB of cache cost 25 %
more CPU than 128 MB and more; in the present order, the 105 MB this gives cost the same
CPU (0.83–0.85 CPU-s a month over four interleaved runs) as 165 MB did in the old one."""


def _block_cache_bytes(plans: Sequence[ItemPlan], blocks: Sequence[tuple[slice, slice]]) -> int:
    """GDAL block cache the month's reads need to decode each COG block once.

    City blocks come in the order of :func:`_blocks`: the city blocks of one COG block of
    every band are read one after another, so each scene needs one block of each band in
    the cache (the 20 m ones for their whole group, the 10 m ones while the next city
    blocks read them), and SCL one more (the neighbour its halo reaches).
    """
    if not plans or not blocks:
        return 0
    total = 0
    for p in plans:
        for band, grid in p.grids.items():
            kept = 1 + (band == "scl")
            itemsize = 2 if grid.dataset is None else np.dtype(grid.dataset.dtypes[0]).itemsize
            total += kept * grid.block_rows * grid.block_cols * itemsize
    return int(total * CACHE_MARGIN)


def _median_into(out: np.ndarray, stack: np.ndarray, clear: np.ndarray, rows: slice) -> None:
    """``out[rows]`` = median over time of the clear values of ``stack`` at ``rows``."""
    t0 = time.perf_counter()
    nanops.median_clear_rows(stack, clear, out, rows)
    _add_time("composite", t0)


#: Bytes of remote tiles fetched ahead of the city block being read (and not decoded
#: yet), at most; the next block's are always asked for. Memory for speed: the 24 km
#: bench year at 100 ms a request took 33.2 s with 48 MiB (1 054 MB peak) and 27.2 s
#: with 96 (1 169 MB; 24.2 s and 1 135 MB once the tiles were views of their request's
#: bytes). 96 MiB is twelve blocks of its month (42 files, ~190 kB a 512 px tile), four
#: of Earth Search's 1024 px tiles a file.
PREFETCH_BYTES = 96 * 2**20


class _Prefetch:
    """Fetches of the remote tiles the month's city blocks need, started in block order
    ahead of the reads (:meth:`~payesh.sources.cogtiles.TileSource.prefetch`), up to
    :data:`PREFETCH_BYTES` fetched and not yet decoded."""

    def __init__(
        self,
        plans: Sequence[ItemPlan],
        blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        pool: Any,
    ) -> None:
        self.plans, self.blocks, self.pool = plans, blocks, pool
        self.sources = [
            g.tiles for p in plans for g in p.grids.values() if g.tiles and g.tiles.file.remote
        ]
        self.next = 0  # the first block whose tiles are not asked for yet

    def _tiles(self, k: int) -> Iterator[tuple[TileSource, tuple[int, int]]]:
        own_r, own_c, halo_r, halo_c = self.blocks[k]
        for p in self.plans:
            for band, grid in p.grids.items():
                if grid.tiles is None or not grid.tiles.file.remote:
                    continue
                rows, cols = (halo_r, halo_c) if band == "scl" else (own_r, own_c)
                found = _source_window(grid, rows, cols)
                if found is not None:
                    r0, c0, r1, c1 = found[0]
                    for tile in grid.tiles.tiles_in(c0, r0, c1 - c0, r1 - r0):
                        yield grid.tiles, tile

    def reach(self, k: int) -> None:
        """Ask for the tiles of block ``k`` and the one after (if not asked yet); when
        less than half :data:`PREFETCH_BYTES` are on their way, for the blocks after
        those until :data:`PREFETCH_BYTES` are (several blocks at once: a file's tiles
        that follow each other are then fetched by one request)."""
        if not self.sources:
            return
        asked = 0
        wanted: dict[TileSource, list[tuple[int, int]]] = {}
        on_the_way = sum(s.pending_bytes for s in self.sources)
        refill = on_the_way < PREFETCH_BYTES / 2
        while self.next < len(self.blocks) and (
            self.next <= k + 1 or (refill and on_the_way + asked < PREFETCH_BYTES)
        ):
            for source, tile in self._tiles(self.next):
                if tile not in wanted.setdefault(source, []):
                    wanted[source].append(tile)
                    asked += source.tile_bytes(*tile)
            self.next += 1
        for source, tiles in wanted.items():
            source.prefetch(tiles, self.pool)


def read_s2_month_aligned(
    plans: Sequence[ItemPlan],
    geobox: GeoBox,
    month: pd.Timestamp,
    bands: Sequence[str],
    *,
    buffer_px: int = 1,
    mask_snow: bool = False,
    threads: int | None = None,
    io_threads: int | None = None,
    env: Mapping[str, str] | None = None,
    block_px: int = 512,
) -> xr.Dataset:
    """The monthly median composite of ``plans`` on ``geobox`` (see ``monthly.s2_month``).

    Blocks of the city (whole COG blocks of the finest band, about ``block_px`` source
    pixels a side) are processed one after another; within a block every (time step,
    band) is read on the thread pool, the SCL mask is built once for the block (with a
    halo of ``buffer_px`` pixels so that dilation crosses block edges), and the medians
    are taken on the pool in row ranges. Peak memory is the month's composite plus one
    block of the month's scenes, whatever the width of the city. ``io_threads``: the
    reads (and the masks) go on a pool of their own of that size, for remote files whose
    reads mostly wait on the network; the medians stay on ``threads``.

    Returns
    -------
    xarray.Dataset
        ``bands`` float32 (NaN where no clear observation), ``clear_count`` and
        ``obs_count`` int16; dims (time=1, y, x) on ``geobox``.
    """
    threads = threads or default_threads()
    env = dict(env or {})
    ny, nx = geobox.shape
    times = sorted({p.time for p in plans})
    groups = [[p for p in plans if p.time == t] for t in times]  # fused in item order
    comp = {b: np.empty((ny, nx), dtype="float32") for b in bands}  # every block fills its part
    clear_count = np.zeros((ny, nx), dtype="int16")
    obs_count = np.zeros((ny, nx), dtype="int16")
    saturated = np.float32(S2_SATURATED_DN)

    def fill(
        out: np.ndarray, group: list[ItemPlan], band: str, rows: np.ndarray, cols: np.ndarray
    ) -> None:
        """One time step's band at ``rows`` × ``cols`` into ``out``: physical units (SCL:
        class), NaN at nodata, outside the rasters and saturated."""
        t0 = time.perf_counter()
        first = True  # no item of the time step placed yet: out holds the last step's
        for p in group:
            grid = p.grids[band]
            raw = _read_raw(grid, rows, cols, env)
            if raw is None:
                continue
            scale, offset = p.scale_offset[band] if band != "scl" else (1.0, 0.0)
            nd_file, nd_item = grid.nodata, p.nodata.get(band)
            conv: Conversion = (
                np.float32(np.nan if nd_file is None else nd_file),
                np.float32(np.nan if nd_item is None else nd_item),
                saturated,
                np.float32(scale),
                np.float32(offset),
                band != "scl",
            )
            if first:  # writes all of out
                _place_first(*raw, out, conv)
                first = False
            else:  # fusing: only the pixels still missing
                _place_kernel(*raw, out, conv)
        if first:  # no item of the time step covers this block
            out.fill(np.nan)
        _add_time("read", t0)

    def fill_scl(
        out: np.ndarray, group: list[ItemPlan], rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The time step's SCL into ``out``, then its (bad, observed) masks, clouds dilated
        by ``buffer_px``."""
        fill(out, group, "scl", rows, cols)
        t0 = time.perf_counter()
        masks = scl_bad_observed(out, mask_snow=mask_snow, buffer_px=buffer_px)
        _add_time("mask", t0)
        return masks

    pool = shared_pool("aligned-read", threads)
    reader = shared_pool("aligned-io", io_threads) if io_threads else pool
    blocks = _blocks(plans, block_px)
    n_t = len(groups)
    # two sets of block buffers, used in turn: a block's medians run while the next block
    # is read, and fresh arrays for every block would cost a page fault per 4 kB each
    # time (about 1 GB a month at 24 km)
    own_px = max((r.stop - r.start) * (c.stop - c.start) for r, c in blocks)
    halo_px = max(
        (min(ny, r.stop + buffer_px) - max(0, r.start - buffer_px))
        * (min(nx, c.stop + buffer_px) - max(0, c.start - buffer_px))
        for r, c in blocks
    )
    buffers = [
        {b: np.empty(n_t * own_px, dtype="float32") for b in bands}
        | {"scl": np.empty(n_t * halo_px, dtype="float32")}
        for _ in range(min(2, len(blocks)))
    ]
    # SCL with a halo of buffer_px (the cloud buffer crosses block edges), the bands
    # without: only the SCL blocks next door are decoded twice (or cached)
    spans = [
        (
            np.arange(rs.start, rs.stop),
            np.arange(cs.start, cs.stop),
            np.arange(max(0, rs.start - buffer_px), min(ny, rs.stop + buffer_px)),
            np.arange(max(0, cs.start - buffer_px), min(nx, cs.stop + buffer_px)),
        )
        for rs, cs in blocks
    ]
    ahead = _Prefetch(plans, spans, shared_pool("tile-fetch", io_threads or threads))
    # every COG block decoded once: the cache holds what the next blocks read again
    with gdal_cache_at_least(_block_cache_bytes(plans, blocks)):
        pending: list[Any] = []  # the previous block's medians, still running
        for k, (rs, cs) in enumerate(blocks):
            ahead.reach(k)  # remote tiles: this block's and the next ones' on their way
            own, halo = spans[k][:2], spans[k][2:]
            r_lo, r_hi = int(halo[0][0]), int(halo[0][-1]) + 1
            c_lo, c_hi = int(halo[1][0]), int(halo[1][-1]) + 1
            h, w = rs.stop - rs.start, cs.stop - cs.start
            # the set the block before last used: its medians were gathered with the last block
            buf = buffers[k % len(buffers)]
            stacks = {b: buf[b][: n_t * h * w].reshape(n_t, h, w) for b in bands}
            shape = (n_t, r_hi - r_lo, c_hi - c_lo)
            scl = buf["scl"][: math.prod(shape)].reshape(shape)
            reads = [
                reader.submit(fill, stacks[b][t], g, b, *own)
                for t, g in enumerate(groups)
                for b in bands
            ]
            masked = [reader.submit(fill_scl, scl[t], g, *halo) for t, g in enumerate(groups)]
            masks = gather(masked)
            gather(reads)
            gather(pending)  # queued before this block's reads: done, or about to be
            t0 = time.perf_counter()
            inner = (slice(rs.start - r_lo, rs.stop - r_lo), slice(cs.start - c_lo, cs.stop - c_lo))
            clear = np.stack([~bad[inner] for bad, _ in masks])
            clear &= ~np.isnan(stacks[bands[0]])
            # counted in int16, the counts' dtype (summing bools in int64 took 4 times as long)
            clear_count[rs, cs] = clear.sum(axis=0, dtype=np.int16)
            obs_count[rs, cs] = np.stack([obs[inner] for _, obs in masks]).sum(
                axis=0, dtype=np.int16
            )
            _add_time("mask", t0)
            del masks, scl
            step = max(16, math.ceil(h * len(bands) / threads / 2))
            pending = [
                pool.submit(
                    _median_into,
                    comp[band][rs, cs],
                    stacks[band],
                    clear,
                    slice(r, min(h, r + step)),
                )
                for band in bands
                for r in range(0, h, step)
            ]
            del stacks, clear  # held by the pending medians until they are done
        gather(pending)

    out = xr.Dataset(
        {b: (("y", "x"), comp[b]) for b in bands}
        | {"clear_count": (("y", "x"), clear_count), "obs_count": (("y", "x"), obs_count)},
        coords=xr_coords(geobox),
    ).expand_dims(time=pd.DatetimeIndex([month]))
    return out


#: Files of months to come checked and opened ahead (:func:`open_ahead`), a group per
#: month (file key -> the future of its :func:`_checked_grid`); at most
#: :data:`AHEAD_MONTHS` groups are kept, the oldest one's files closed when a new one comes.
AHEAD_MONTHS = 2
_ahead: list[dict[tuple[Any, ...], Future[tuple[str | None, AssetGrid | None]]]] = []
_ahead_lock = threading.Lock()


def _file_key(
    item: pystac.Item, band: str, key: str, geobox: GeoBox, env: Mapping[str, str]
) -> tuple[Any, ...]:
    """What makes two openings of a file the same: the item, band and asset, its href (a
    signed URL included), the grid and the GDAL options."""
    g = geobox.affine
    return (
        item.id,
        band,
        key,
        item.assets[key].href,
        tuple(geobox.shape),
        (g.a, g.b, g.c, g.d, g.e, g.f),
        str(geobox.crs),
        tuple(sorted(env.items())),
    )


def _close_checked(future: Future[tuple[str | None, AssetGrid | None]]) -> None:
    """Close the file a :func:`_checked_grid` job opened, once it is done."""
    if future.cancelled() or future.exception() is not None:
        return
    grid = future.result()[1]
    if grid is not None:
        grid.dataset.close()


def _month_files(
    items: Sequence[pystac.Item], bands: Sequence[str], *, warn: bool = True
) -> tuple[list[pystac.Item], dict[str, str], dict[str, str], bool]:
    """``(items, asset keys, GDAL options, remote)`` of a month's Sentinel-2 read: the
    items whose metadata passed the checks (each other one warned about, with ``warn``),
    signed; the asset key of each band and SCL."""
    from payesh.sources import load
    from payesh.sources.aws import read_options
    from payesh.sources.profiles import S2
    from payesh.sources.signing import sign_items
    from payesh.sources.validate import metadata_problem, skip_bad_items

    wanted = (*bands, "scl")
    if warn:
        passed = skip_bad_items(items, S2, wanted, stacklevel=5)
    else:
        passed = [i for i in items if metadata_problem(i, S2, wanted) is None]
    ready = sign_items(passed)
    keys = load._asset_keys(ready, S2, wanted) if ready else {}
    hrefs = [ready[0].assets[k].href for k in keys.values()] if ready else []
    remote = any(h.startswith(("http://", "https://", "s3://", "/vsi")) for h in hrefs)
    env = load.gdal_remote_env() if remote else dict(load.GDAL_LOCAL)
    env |= read_options(ready, keys.values())  # requester-pays buckets
    return ready, keys, env, remote


def open_ahead(items: Sequence[pystac.Item], geobox: GeoBox, *, bands: Sequence[str]) -> int:
    """Start checking and opening the remote files of a month to come, in the background
    (:func:`s2_month_aligned` of those items then takes them instead of opening them:
    four round trips a file in turn, ~0.55 s of a 6 km month at 100 ms, no longer on its
    path). Local
    files are not opened ahead (it would only move CPU). Returns the files started.

    A file whose check raised (the network) is opened again by the month itself; a
    group of files no month took is closed when :data:`AHEAD_MONTHS` newer ones came.
    """
    try:
        ready, keys, env, remote = _month_files(items, bands, warn=False)
    except SourceError:  # a signer out of reach: the month itself will say so
        return 0
    if not remote or not ready:
        return 0
    pool = shared_pool("aligned-check", io_threads())
    group = {
        _file_key(item, band, key, geobox, env): pool.submit(
            _checked_grid, item, band, key, geobox, env
        )
        for item in ready
        for band, key in keys.items()
    }
    with _ahead_lock:
        _ahead.append(group)
        dropped = _ahead[:-AHEAD_MONTHS]
        del _ahead[:-AHEAD_MONTHS]
    for old in dropped:
        for future in old.values():
            future.add_done_callback(_close_checked)
    return len(group)


def _checked_files(
    pool: Any, files: Sequence[tuple[pystac.Item, str, str]], geobox: GeoBox, env: dict[str, str]
) -> list[tuple[str | None, AssetGrid | None]]:
    """:func:`_checked_grid` of every file, each a job on ``pool`` unless it was opened
    ahead (:func:`open_ahead`) without an error; on an error every file opened is closed."""
    with _ahead_lock:
        ahead = []
        for job in files:
            k = _file_key(*job, geobox, env)
            ahead.append(next((group.pop(k) for group in _ahead if k in group), None))
    found: list[tuple[str | None, AssetGrid | None] | None] = []
    for future in ahead:
        try:
            found.append(future.result() if future is not None else None)
        except Exception:  # the network, say: the month opens it again below
            found.append(None)
    todo = [i for i, got in enumerate(found) if got is None]
    try:
        fresh = _open_all(
            pool,
            [partial(_checked_grid, *files[i], geobox, env) for i in todo],
            grid=lambda checked: checked[1],
        )
    except BaseException:
        for got in found:
            if got is not None and got[1] is not None:
                got[1].dataset.close()
        raise
    for i, got in zip(todo, fresh, strict=True):
        found[i] = got
    return [got for got in found if got is not None]


def s2_month_aligned(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    bands: Sequence[str],
    buffer_px: int = 1,
    threads: int | None = None,
    ahead: Sequence[pystac.Item] | None = None,
) -> xr.Dataset | None:
    """The month's Sentinel-2 composite by aligned reads, or ``None`` if not aligned.

    Items are checked as :func:`payesh.sources.load.load_s2` checks them (a bad item is
    skipped with a :class:`~payesh.errors.BadItemWarning`; the file checks run on the
    thread pool), and scale/offset are taken per item exactly as it takes them. Remote
    files are checked, opened and read :func:`~payesh.parallel.io_threads` at a time.
    ``ahead``: the next month's items, whose remote files are checked and opened
    (:func:`open_ahead`) while this month is read.
    """
    from payesh.sources import load
    from payesh.sources.profiles import S2

    ready, keys, env, remote = _month_files(items, bands)  # metadata checks
    n = threads or default_threads()
    n_io = io_threads() if remote else n
    pool = shared_pool("aligned-check", n_io)
    # checksum, open, CRS, last block, the grid: a job per file (a remote one with its
    # retries), each file opened once and kept open for the reads
    files = [(item, band, key) for item in ready for band, key in keys.items()]
    checked = _checked_files(pool, files, geobox, env)
    if ahead is not None:
        open_ahead(ahead, geobox, bands=bands)
    problems: list[str | None] = []
    opened: dict[str, dict[str, AssetGrid] | None] = {}  # None: not aligned
    for k, item in enumerate(ready):
        part = list(zip(keys, checked[k * len(keys) : (k + 1) * len(keys)], strict=True))
        problem = next((p for _, (p, _) in part if p is not None), None)
        grids = {band: grid for band, (_, grid) in part if grid is not None}
        problems.append(problem)
        if problem is None and len(grids) == len(keys):
            opened[item.id] = grids
            continue
        for grid in grids.values():  # a bad item's good files, or an item not aligned
            grid.dataset.close()
        if problem is None:
            opened[item.id] = None

    def close_opened() -> None:
        for item_grids in opened.values():
            for grid in (item_grids or {}).values():
                grid.dataset.close()

    try:  # the files stay open for the reads: closed on any error before them
        if ready and all(problems):  # nothing would be read: one error listing every problem
            raise NoReadableItemsError(
                "no readable s2 item: " + "; ".join(str(p) for p in problems),
                problems=[str(p) for p in problems],
                remote=remote,
            )
        usable = []
        for item, found in zip(ready, problems, strict=True):
            if found is None:
                usable.append(item)
            else:  # warned here, in the caller's thread, not in a pool thread
                warnings.warn(f"{found}; item skipped", BadItemWarning, stacklevel=3)
        if not usable:  # every item failed its metadata checks (each already warned)
            raise NoReadableItemsError(
                "no usable Sentinel-2 items to load", problems=[], remote=False
            )
        scale_offset: dict[str, dict[str, tuple[float, float]]] = {}
        nodata: dict[str, dict[str, float]] = {}
        first_nodata = {
            b: load._raster_band(usable[0].assets[keys[b]]).get("nodata", 0) for b in bands
        }
        for item in usable:
            scale_offset[item.id], nodata[item.id] = {}, {}
            for band in bands:
                rb = load._raster_band(item.assets[keys[band]])
                scale = float(rb.get("scale", load._S2_SCALE))
                offset = float(rb.get("offset", load._S2_BOA_OFFSET))
                if item.collection_id in S2.collections:
                    offset = load._s2_offset(item, float(rb["offset"]) if "offset" in rb else None)
                scale_offset[item.id][band] = (scale, offset)
                if first_nodata[band] is not None:
                    nodata[item.id][band] = float(first_nodata[band])
    except BaseException:
        close_opened()
        raise
    if any(item_grids is None for item_grids in opened.values()):  # not aligned: odc-stac's
        close_opened()
        plans = None
    else:
        plans = [
            ItemPlan(
                item_id=item.id,
                time=_item_time(item),
                grids=opened[item.id] or {},
                scale_offset=scale_offset[item.id],
                nodata=nodata[item.id],
            )
            for item in usable
        ]
    if plans is None:
        return None
    try:
        out = read_s2_month_aligned(
            plans,
            geobox,
            month,
            bands,
            buffer_px=buffer_px,
            threads=n,
            io_threads=n_io if remote else None,
            env=env,
        )
    finally:
        close_plans(plans)
    for band in bands:
        out[band].attrs.update(units="1", long_name=f"{band} surface reflectance")
    out["clear_count"].attrs.update(units="1", long_name="clear observations in the month")
    out["obs_count"].attrs.update(units="1", long_name="observations in the month")
    out.attrs["source_items"] = [i.id for i in usable]
    return out
