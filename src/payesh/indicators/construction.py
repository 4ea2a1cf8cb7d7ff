"""Construction indicators (SPEC §5): persistent new built-up, sites, permits, tile sums.

A pixel is *newly built* when it was not built-up at the start of the period and its
built-up probability stays above a threshold in ``n`` of the last ``m`` clear monthly
composites (persistence: a bright scene, a ploughed field or a cloudy month does not make
a building). Connected groups of such pixels above a minimum area are *sites*; a site is
*unauthorized* when no permit issued before it appeared overlaps it.

This module makes the tile sums (:func:`construction_tile_indicators`); the persistence
rule is in :mod:`payesh.indicators.builtup_persistence`, the sites and permits in
:mod:`payesh.indicators.sites`, and their public names are re-exported here.
"""

from __future__ import annotations

from typing import Any

import dask.array as dsa
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from numba import njit

from payesh.errors import PayeshError
from payesh.grid import TileGrid
from payesh.indicators._common import var_attrs
from payesh.indicators.builtup_persistence import (
    BUILTUP_THRESHOLD,
    NAT,
    persistence,
    persistent_builtup,
)
from payesh.indicators.sites import MIN_SITE_AREA_M2, extract_sites, match_permits
from payesh.indicators.tiles import (
    spatial_dims,
    tile_chunks,
    tile_coords_dataset,
    tile_counts,
    whole_tiles,
)

__all__ = [
    "BUILTUP_THRESHOLD",
    "MIN_SITE_AREA_M2",
    "construction_tile_indicators",
    "extract_sites",
    "match_permits",
    "persistence",
    "persistent_builtup",
]


@njit(nogil=True, cache=True)
def _new_pixels_kernel(first: np.ndarray, months: np.ndarray, k: int, nat: int) -> np.ndarray:
    """(months, y/k, x/k) int64: pixels of each tile with ``first`` ≤ the month (``first``
    and ``months`` as int64 datetimes, ``months`` ascending; ``nat`` never counts)."""
    ny, nx = first.shape
    nt = months.size
    hist = np.zeros((nt + 1, ny // k, nx // k), dtype=np.int64)
    for y in range(ny):
        for x in range(nx):
            v = first[y, x]
            if v != nat:
                hist[np.searchsorted(months, v), y // k, x // k] += 1  # first month ≥ v
    for t in range(1, nt):
        hist[t] += hist[t - 1]
    return hist[:nt]


def _new_pixels_block(first: np.ndarray, months: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(months, kind="stable")
    counts = _new_pixels_kernel(
        np.ascontiguousarray(first).view("int64"),
        np.ascontiguousarray(months[order]).view("int64"),
        k,
        int(NAT.view("int64")),
    )
    out = np.empty_like(counts)
    out[order] = counts
    return out


def _new_pixels(first_seen: xr.DataArray, times: np.ndarray, k: int) -> Any:
    """Per month and tile, pixels with ``first_seen`` (y, x) ≤ the month (NaT: never):
    ``(first_seen <= times)`` summed per tile, from one pass over ``first_seen`` instead
    of a (time, y, x) comparison. Lazy if ``first_seen`` is Dask-backed."""
    months = np.asarray(times, dtype="datetime64[ns]")
    data = first_seen.data
    if not isinstance(data, dsa.Array):
        return _new_pixels_block(np.asarray(data, dtype="datetime64[ns]"), months, k)
    data = whole_tiles(data.astype("datetime64[ns]"), k)
    return dsa.map_blocks(
        _new_pixels_block,
        data,
        months,
        k,
        new_axis=0,
        dtype=np.int64,
        chunks=((months.size,), *tile_chunks(data, k)),
    )


def construction_tile_indicators(
    prob: xr.DataArray,
    first_seen: xr.DataArray,
    sites: gpd.GeoDataFrame,
    tg: TileGrid,
    *,
    threshold: float = BUILTUP_THRESHOLD,
) -> xr.Dataset:
    """Construction indicators per tile and month.

    Parameters
    ----------
    prob
        ``builtup_prob`` (time, y, x) on ``tg.geobox``, NaN where not clear.
    first_seen
        (y, x) datetime64[ns] from :func:`persistent_builtup`.
    sites
        From :func:`match_permits` (needs ``status``, ``first_seen``, ``tile``).
    tg
        The tile grid.
    threshold
        Built-up probability threshold.

    Returns
    -------
    xr.Dataset
        (time, tile_y, tile_x): ``builtup_fraction`` (share of the tile's clear pixels
        with prob > threshold; NaN when none is clear), ``builtup_valid_fraction`` (share
        of the tile's pixels clear that month), ``new_builtup_m2`` (area with
        ``first_seen`` ≤ month, m²), ``unauthorized_m2`` (area of the parts of
        unauthorized sites in the tile with ``first_seen`` ≤ month, m²),
        ``unauthorized_sites`` (count of unauthorized sites whose centroid tile is the tile
        and ``first_seen`` ≤ month). Lazy on Dask except the site terms (small, from
        ``sites``).
    """
    if "status" not in sites:
        raise PayeshError("sites have no 'status'; run match_permits(sites, permits) first")
    k = tg.tile_pixels
    # pixels clear, and built-up, per tile-month: exact counts, as float32 sums of 0/1 are
    n_valid, n_built = (
        n.astype("float32") for n in tile_counts(prob, tg, above=threshold, pixels_per_tile=k)
    )
    bfrac = (n_built / n_valid.where(n_valid > 0)).astype("float32")
    vfrac = (n_valid / float(k * k)).astype("float32")
    pixel_area = abs(tg.geobox.resolution.x * tg.geobox.resolution.y)
    times = prob["time"]
    new_px = _new_pixels(first_seen.transpose(*spatial_dims(first_seen)), times.values, k)
    new_m2 = xr.DataArray(
        (new_px.astype("float32") * pixel_area).astype("float32"),
        dims=("time", "tile_y", "tile_x"),
        coords={"time": times.values, **tile_coords_dataset(tg).coords},
    )
    # site terms, numpy (sites are few)
    rows, cols = tg.shape
    tvals = times.values.astype("datetime64[ns]")
    unauth_m2 = np.zeros((tvals.size, rows, cols), dtype="float64")
    unauth_n = np.zeros((tvals.size, rows, cols), dtype="int32")
    bad = sites[sites["status"] == "unauthorized"]
    if len(bad):
        index = {name: divmod(i, cols) for i, name in enumerate(tg.names.ravel())}
        tiles = [(index[name], poly.geom) for name, poly in tg.tile_polygons()]
        tree = shapely.STRtree(np.asarray([g for _, g in tiles]))
        for fs, tile, geom in zip(bad["first_seen"], bad["tile"], bad.geometry, strict=True):
            since = tvals >= pd.Timestamp(fs).as_unit("ns").to_datetime64()
            r, c = index[str(tile)]
            unauth_n[since, r, c] += 1
            for ti in tree.query(geom, predicate="intersects"):
                (tr, tc), tgeom = tiles[int(ti)]
                unauth_m2[since, tr, tc] += float(shapely.area(shapely.intersection(geom, tgeom)))
    coords = tile_coords_dataset(tg).coords
    dims = ("time", "tile_y", "tile_x")
    site_vars = xr.Dataset(
        {
            "unauthorized_m2": (dims, unauth_m2.astype("float32")),
            "unauthorized_sites": (dims, unauth_n),
        },
        coords={"time": times.values, **coords},
    )
    ds = xr.Dataset(
        {
            "builtup_fraction": bfrac.assign_attrs(
                var_attrs(
                    "1", "built-up fraction", f"share of clear pixels with prob > {threshold}"
                )
            ),
            "builtup_valid_fraction": vfrac.assign_attrs(
                var_attrs("1", "built-up valid fraction", "share of the tile's pixels clear")
            ),
            "new_builtup_m2": new_m2.assign_attrs(
                var_attrs("m2", "new built-up area", "area newly built (first_seen <= month)")
            ),
        }
    )
    ds["unauthorized_m2"] = site_vars["unauthorized_m2"].assign_attrs(
        var_attrs(
            "m2", "unauthorized built-up area", "area of unauthorized sites seen by the month"
        )
    )
    ds["unauthorized_sites"] = site_vars["unauthorized_sites"].assign_attrs(
        var_attrs(
            "1", "unauthorized sites", "count of unauthorized sites (centroid tile) by the month"
        )
    )
    return ds.transpose("time", "tile_y", "tile_x")
