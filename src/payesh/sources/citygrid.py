"""An asset's file on the city grid: where each city pixel falls in it, and its raw DN.

The aligned reader (:mod:`payesh.sources.aligned`) maps a city's 10 m grid onto each
Sentinel-2 file's own lattice with integer indices (:func:`grid_of`: ``None`` when the
lattices are not aligned), then reads the window under a block of the city as stored
(:func:`read_raw`): tiles decoded by payesh where :mod:`payesh.sources.cogtiles` can,
else by GDAL (a remote file with payesh's retries around GDAL's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from payesh.errors import SourceError
from payesh.parallel import io_threads, shared_pool
from payesh.sources.checksum import readable_href
from payesh.sources.cogtiles import TileSource, tile_source
from payesh.sources.inflight import request_slot
from payesh.sources.rio_retry import retry_rio

__all__ = [
    "AssetGrid",
    "ItemPlan",
    "close_plans",
    "grid_of",
    "item_time",
    "read_raw",
    "source_window",
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
def centre_indices(origin: float, step: float, n: int, src_origin: float, src_step: float) -> Any:
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


def grid_of(
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
    rows = centre_indices(g.f, g.e, ny, t.f, t.e)
    cols = centre_indices(g.c, g.a, nx, t.c, t.a)
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


def item_time(item: pystac.Item) -> np.datetime64:
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


def source_window(grid: AssetGrid, rows: np.ndarray, cols: np.ndarray) -> Any:
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


def read_raw(
    grid: AssetGrid, rows: np.ndarray, cols: np.ndarray, env: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The asset's window under city rows ``rows`` × columns ``cols`` as stored (DN), with
    each city row's and column's index into it (-1 outside the raster); ``None`` if the
    block misses the raster."""
    found = source_window(grid, rows, cols)
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


def _read_remote(grid: AssetGrid, window: Window, env: Mapping[str, str]) -> np.ndarray:
    """``grid.dataset.read(1, window=window)``; a failed read re-opens the file and tries again.

    The dataset is closed before it is opened again so that GDAL forgets the bytes it
    holds for it (``CPL_VSIL_CURL_NON_CACHED``): a damaged range is fetched anew.
    """

    def read() -> np.ndarray:
        with request_slot(), rasterio.Env(**env):
            if grid.dataset.closed:  # a retry: open it again (a failure here is retried too)
                fresh = rasterio.open(readable_href(grid.href))
                object.__setattr__(grid, "dataset", fresh)  # the one field reads replace
            return np.asarray(grid.dataset.read(1, window=window))

    return retry_rio(
        read, where=grid.href.split("?", 1)[0], before_retry=lambda: grid.dataset.close()
    )
