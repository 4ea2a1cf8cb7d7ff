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

This module makes the month from its blocks; the files are checked and opened by
:mod:`payesh.sources.opening`, mapped on the grid and read by
:mod:`payesh.sources.citygrid`, placed in physical units by :mod:`payesh.sources.placing`
(or kept in uint16 DN, converted at the medians, for a month whose items share each
band's scale and offset: :func:`~payesh.sources.placing.dn_conversions`), and remote
tiles fetched ahead by :mod:`payesh.sources.prefetch`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from payesh import nanops
from payesh.masking import scl_masks as scl_bad_observed
from payesh.parallel import (
    default_threads,
    gather,
    gdal_cache_at_least,
    io_threads,
    shared_pool,
)
from payesh.sources.citygrid import AssetGrid, ItemPlan, close_plans, read_raw
from payesh.sources.opening import open_ahead, open_month, plan_aligned
from payesh.sources.placing import (
    DN_MISSING,
    Conversion,
    dn_conversions,
    place_first,
    place_first_dn,
    place_missing,
    place_missing_dn,
)
from payesh.sources.prefetch import Prefetch
from payesh.sources.profiles import S2_SATURATED_DN

#: Thread-seconds spent per stage since the process started (read = open + decode +
#: placing on the grid; mask = SCL masks; composite = medians). The benchmark reads it.
STAGE_SECONDS: dict[str, float] = {"read": 0.0, "mask": 0.0, "composite": 0.0}
_stage_lock = threading.Lock()


def _add_time(stage: str, start: float) -> None:
    with _stage_lock:
        STAGE_SECONDS[stage] += time.perf_counter() - start


__all__ = [
    "AssetGrid",
    "ItemPlan",
    "close_plans",
    "open_ahead",
    "plan_aligned",
    "read_s2_month_aligned",
    "s2_month_aligned",
]


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


def _median_into(
    out: np.ndarray,
    stack: np.ndarray,
    clear: np.ndarray,
    rows: slice,
    dn: tuple[np.float32, np.float32] | None = None,
) -> None:
    """``out[rows]`` = median over time of the clear values of ``stack`` at ``rows``;
    ``dn``: ``stack`` holds DN, converted with this (scale, offset)."""
    t0 = time.perf_counter()
    if dn is None:
        nanops.median_clear_rows(stack, clear, out, rows)
    else:
        nanops.median_clear_dn_rows(stack, clear, out, rows, *dn)
    _add_time("composite", t0)


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
    # one scale and offset a band: stacks of DN (half the bytes), converted at the medians
    dn = dn_conversions(plans, bands)
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
            raw = read_raw(grid, rows, cols, env)
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
            in_dn = out.dtype == np.uint16
            if first:  # writes all of out
                (place_first_dn if in_dn else place_first)(*raw, out, conv)
                first = False
            else:  # fusing: only the pixels still missing
                (place_missing_dn if in_dn else place_missing)(*raw, out, conv)
        if first:  # no item of the time step covers this block
            out.fill(DN_MISSING if out.dtype == np.uint16 else np.nan)
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
        {b: np.empty(n_t * own_px, dtype="uint16" if dn else "float32") for b in bands}
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
    ahead = Prefetch(plans, spans, shared_pool("tile-fetch", io_threads or threads))
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
            first_band = stacks[bands[0]]
            clear &= (first_band != DN_MISSING) if dn else ~np.isnan(first_band)
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
                    dn[band] if dn else None,
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
    n = threads or default_threads()
    opened = open_month(items, geobox, bands=bands, threads=n, ahead=ahead)
    plans, env, remote = opened.plans, opened.env, opened.remote
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
            io_threads=io_threads() if remote else None,
            env=env,
        )
    finally:
        close_plans(plans)
    for band in bands:
        out[band].attrs.update(units="1", long_name=f"{band} surface reflectance")
    out["clear_count"].attrs.update(units="1", long_name="clear observations in the month")
    out["obs_count"].attrs.update(units="1", long_name="observations in the month")
    out.attrs["source_items"] = [i.id for i in opened.items]
    return out
