"""Construction indicators (SPEC §5): persistent new built-up, sites, permits, tile sums.

A pixel is *newly built* when it was not built-up at the start of the period and its
built-up probability stays above a threshold in ``n`` of the last ``m`` clear monthly
composites (persistence: a bright scene, a ploughed field or a cloudy month does not make
a building). Connected groups of such pixels above a minimum area are *sites*; a site is
*unauthorized* when no permit issued before it appeared overlaps it.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask.array as dsa
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from numba import njit
from rasterio import features as rio_features
from scipy import ndimage

from payesh.errors import PayeshError
from payesh.grid import TileGrid
from payesh.indicators.tiles import (
    spatial_dims,
    tile_chunks,
    tile_coords_dataset,
    tile_counts,
    whole_tiles,
)
from payesh.parallel import whole_along
from payesh.records import NoPermitsWarning

__all__ = [
    "BUILTUP_THRESHOLD",
    "MIN_SITE_AREA_M2",
    "construction_tile_indicators",
    "extract_sites",
    "match_permits",
    "persistence",
    "persistent_builtup",
]

BUILTUP_THRESHOLD = 0.5
"""Probability above which a pixel-month counts as built-up (the classifier's own
decision boundary; its held-out precision/recall are measured there)."""
MIN_SITE_AREA_M2 = 2000.0
"""Least area of a site, m²: 20 pixels of 10 m — a small house with its yard; smaller
groups are mostly edge noise of existing buildings and roads."""

_NAT = np.datetime64("NaT", "ns")


def _attrs(units: str, long_name: str, description: str) -> dict[str, str]:
    return {"units": units, "long_name": long_name, "description": description}


_BATCH_PX = 1 << 15
"""Pixels the persistence kernels take at once: their int64/bool temporaries (a dozen
arrays of pixels × months) stay a few MB whatever the size of the block Dask hands them."""


@njit(nogil=True, cache=True)
def _first_seen_index(
    p: np.ndarray, threshold: float, n: int, m: int, baseline: int, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[i]``: the index (along time) of pixel ``i``'s ``first_seen`` month in
    probabilities ``p`` (n_pix, time), -1 where it is not newly built.

    Per pixel, as :func:`persistent_builtup` defines it: its clear (finite) months in time
    order; ``above`` where over ``threshold``; existing if above in any of the first
    ``baseline``; a window (the last ``m`` clear months up to one) is satisfied from the
    ``baseline``-th on when ``n`` of it are above; new when not existing, with at least
    ``baseline + n`` clear months and the last window satisfied; first_seen is the first
    above month of the window that opens the final unbroken stretch of satisfied windows.
    """
    n_pix, n_t = p.shape
    months = np.empty(n_t, dtype=np.int64)  # the pixel's clear months, in time order
    above = np.empty(n_t, dtype=np.bool_)
    for i in range(n_pix):
        n_clear = 0
        for t in range(n_t):
            v = p[i, t]
            if np.isfinite(v):
                months[n_clear] = t
                above[n_clear] = v > threshold
                n_clear += 1
        out[i] = -1
        if n_clear == 0 or n_clear < baseline + n:
            continue
        existing = False
        for q in range(min(baseline, n_clear)):
            existing |= above[q]
        if existing:
            continue
        last_unsat = -1
        satisfied = False
        for q in range(n_clear):
            count = 0
            for r in range(max(q - m + 1, 0), q + 1):
                count += above[r]
            satisfied = q >= baseline and count >= n
            if not satisfied:
                last_unsat = q
        if not satisfied:  # the last window
            continue
        q0 = last_unsat + 1
        j = 0
        for q in range(max(q0 - m + 1, 0), q0 + 1):
            if above[q]:
                j = q
                break
        out[i] = months[j]


def _persistence_batch(
    p: np.ndarray, times: np.ndarray, threshold: float, n: int, m: int, baseline: int
) -> np.ndarray:
    """first_seen (n_pix,) datetime64[ns] of probabilities ``p`` (n_pix, time)."""
    index = np.empty(p.shape[0], dtype=np.int64)
    _first_seen_index(p, float(threshold), int(n), int(m), int(baseline), index)
    if not len(times):
        return np.full(p.shape[0], _NAT)
    return np.where(index >= 0, times[np.maximum(index, 0)], _NAT)


def _mean_since_batch(p: np.ndarray, first_seen: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Mean (float64 sums, float32 result) of the clear ``p`` (n_pix, time) in months at or
    after each pixel's ``first_seen``; NaN where none (NaT: never).

    Only the newly built pixels (few) are summed: each row's sum is the same whichever
    rows are taken with it."""
    out = np.full(p.shape[0], np.nan, dtype="float32")
    new = np.flatnonzero(~np.isnat(first_seen))
    if not new.size:
        return out
    p, first_seen = p[new], first_seen[new]
    take = (times[None, :] >= first_seen[:, None]) & np.isfinite(p)
    total = np.where(take, p, 0).sum(axis=-1, dtype="float64")
    count = take.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[new] = np.where(count > 0, total / count, np.nan)
    return out


def _persistence_kernel(
    prob: np.ndarray,
    *,
    times: np.ndarray,
    threshold: float,
    n: int,
    m: int,
    baseline: int,
    with_mean: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """first_seen (…,) datetime64[ns] from probabilities (…, time), in batches of
    :data:`_BATCH_PX` pixels; ``with_mean``: also the mean probability since first_seen."""
    lead = prob.shape[:-1]
    p = prob.reshape(-1, prob.shape[-1])
    first_seen = np.empty(p.shape[0], dtype="datetime64[ns]")
    mean = np.empty(p.shape[0], dtype="float32") if with_mean else None
    for lo in range(0, p.shape[0], _BATCH_PX):
        part = p[lo : lo + _BATCH_PX]
        fs = _persistence_batch(part, times, threshold, n, m, baseline)
        first_seen[lo : lo + _BATCH_PX] = fs
        if mean is not None:
            mean[lo : lo + _BATCH_PX] = _mean_since_batch(part, fs, times)
    if mean is None:
        return first_seen.reshape(lead)
    return first_seen.reshape(lead), mean.reshape(lead)


def _mean_since_kernel(
    prob: np.ndarray, first_seen: np.ndarray, *, times: np.ndarray
) -> np.ndarray:
    p = prob.reshape(-1, prob.shape[-1])
    fs = first_seen.reshape(-1)
    out = np.empty(p.shape[0], dtype="float32")
    for lo in range(0, p.shape[0], _BATCH_PX):
        out[lo : lo + _BATCH_PX] = _mean_since_batch(
            p[lo : lo + _BATCH_PX], fs[lo : lo + _BATCH_PX], times
        )
    return out.reshape(prob.shape[:-1])


def persistent_builtup(
    prob: xr.DataArray,
    *,
    threshold: float = BUILTUP_THRESHOLD,
    n: int = 3,
    m: int = 4,
    baseline: int = 1,
) -> xr.DataArray:
    """Date each pixel became persistently built-up during the period.

    Only clear composites count (NaN months are skipped, neither built nor not). A pixel
    above ``threshold`` in any of its first ``baseline`` clear composites was built before
    the period (existing, not new). A pixel is newly built when, at its last clear
    composite, at least ``n`` of its last ``m`` clear composites are above threshold;
    ``first_seen`` is the first above-threshold month of the window that opens the final
    unbroken stretch of such windows (the start of the run that is still standing).

    Defaults: 3 of 4 clear months tolerates one dark or misclassified month while a
    single bright scene (1 of 4) or a two-month cleared field cannot qualify; requiring
    the run to last to the end drops temporary bright surfaces. A baseline of one clear
    composite is conservative: anything bright at the start is not reported as new.

    Parameters
    ----------
    prob
        ``builtup_prob`` (time, y, x), unitless in [0, 1], NaN where not clear.
    threshold
        Probability above which a pixel-month is built-up.
    n, m
        Persistence: above threshold in ≥ ``n`` of the last ``m`` clear composites.
    baseline
        Number of first clear composites defining what already existed.

    Returns
    -------
    xr.DataArray
        ``first_seen`` (y, x) datetime64[ns], NaT where not newly built; lazy on Dask.
    """
    first_seen, _ = _persistence(prob, threshold, n, m, baseline, with_mean=False)
    return first_seen


def persistence(
    prob: xr.DataArray,
    *,
    threshold: float = BUILTUP_THRESHOLD,
    n: int = 3,
    m: int = 4,
    baseline: int = 1,
) -> xr.Dataset:
    """:func:`persistent_builtup` and, from the same read of ``prob``, the confidence term
    of :func:`extract_sites`.

    Returns
    -------
    xr.Dataset
        (y, x): ``first_seen`` (as :func:`persistent_builtup`) and ``mean_prob_since``
        (float32, unitless: mean ``prob`` of the pixel's clear months at or after
        ``first_seen``, summed in float64; NaN where not newly built). Lazy on Dask.
    """
    first_seen, mean = _persistence(prob, threshold, n, m, baseline, with_mean=True)
    assert mean is not None
    return xr.Dataset({"first_seen": first_seen, "mean_prob_since": mean})


def _persistence(
    prob: xr.DataArray, threshold: float, n: int, m: int, baseline: int, *, with_mean: bool
) -> tuple[xr.DataArray, xr.DataArray | None]:
    if not 1 <= n <= m:
        raise PayeshError(f"persistence needs 1 <= n <= m, got n={n}, m={m}")
    times = prob["time"].values.astype("datetime64[ns]")
    dtypes = [np.dtype("datetime64[ns]")] + ([np.dtype("float32")] if with_mean else [])
    out = xr.apply_ufunc(
        _persistence_kernel,
        whole_along(prob, "time"),
        input_core_dims=[["time"]],
        output_core_dims=[[] for _ in dtypes],
        dask="parallelized",
        output_dtypes=dtypes,
        kwargs={
            "times": times,
            "threshold": float(threshold),
            "n": int(n),
            "m": int(m),
            "baseline": int(baseline),
            "with_mean": with_mean,
        },
    )
    first_seen, mean = out if with_mean else (out, None)
    first_seen = first_seen.drop_vars("time", errors="ignore").rename("first_seen")
    first_seen.attrs = {}  # not prob's: a datetime has no `units` attribute (xarray encodes it)
    first_seen = first_seen.assign_attrs(
        long_name="first seen built-up",
        description=(
            f"first month of the persistent built-up run (prob > {threshold} in >= {n} of "
            f"the last {m} clear composites, not built in the first {baseline} clear "
            "composite(s)); NaT = not newly built"
        ),
    )
    if mean is not None:
        mean = mean.drop_vars("time", errors="ignore").rename("mean_prob_since")
        mean.attrs = {
            "units": "1",
            "long_name": "mean built-up probability since first seen",
            "description": "mean prob of the clear months at or after first_seen; NaN if none",
        }
    return first_seen, mean


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
        int(_NAT.view("int64")),
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


# ------------------------------------------------------------------------------ sites

_SITE_COLUMNS = ["site_id", "first_seen", "area_m2", "tile", "confidence"]


def _tile_of(tg: TileGrid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    left, _, _, top = tg.geobox.boundingbox
    rows, cols = tg.shape
    r = np.clip(np.floor((top - y) / tg.tile_size).astype(int), 0, rows - 1)
    c = np.clip(np.floor((x - left) / tg.tile_size).astype(int), 0, cols - 1)
    return np.asarray(tg.names[r, c], dtype=object)


def _mean_prob_since(prob: xr.DataArray, first_seen: np.ndarray) -> np.ndarray:
    """Mean probability of each pixel over its clear months since ``first_seen``."""
    fs = xr.DataArray(first_seen, dims=prob.dims[1:])
    if prob.chunks is not None:  # block by block, as prob is read
        spatial = dict(zip(prob.dims, prob.chunks, strict=True))
        fs = fs.chunk({d: spatial[d] for d in fs.dims})
    mean = xr.apply_ufunc(
        _mean_since_kernel,
        whole_along(prob, "time"),
        fs,
        input_core_dims=[["time"], []],
        dask="parallelized",
        output_dtypes=[np.dtype("float32")],
        kwargs={"times": prob["time"].values.astype("datetime64[ns]")},
    )
    return np.asarray(mean.values)


def extract_sites(
    first_seen: xr.DataArray,
    tg: TileGrid,
    *,
    min_area_m2: float = MIN_SITE_AREA_M2,
    prob: xr.DataArray | None = None,
    mean_prob: xr.DataArray | np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """Connected groups of newly built pixels: the construction sites.

    Parameters
    ----------
    first_seen
        (y, x) datetime64[ns] on ``tg.geobox`` (:func:`persistent_builtup`); computed.
    tg
        The tile grid (its geobox is the pixel grid of ``first_seen``).
    min_area_m2
        Least site area, m² (see :data:`MIN_SITE_AREA_M2`).
    prob
        ``builtup_prob`` (time, y, x), for the confidence; optional.
    mean_prob
        Instead of ``prob``: its ``mean_prob_since`` (y, x), from :func:`persistence`
        (computed with ``first_seen``, so ``prob`` is not read again).

    Returns
    -------
    geopandas.GeoDataFrame
        In the city CRS, one row per site (8-connected pixels), ordered by position:
        ``site_id`` (``<tile>-<n>``, n from 1 within each tile), ``first_seen`` (the
        median month of the site's pixels, taken as the lower median so it is a month
        one of its pixels was actually seen — robust to a few early noisy pixels),
        ``area_m2``, ``tile`` (tile of the centroid), ``confidence`` (0–1: mean
        probability of the site's pixels over their clear months since ``first_seen`` ×
        a size factor rising linearly from 0.5 at ``min_area_m2`` to 1 at 4×; without
        ``prob`` or ``mean_prob`` the size factor alone), ``geometry`` (pixel-edged
        polygons).
    """
    fs = np.asarray(first_seen.values).astype("datetime64[ns]", copy=False)
    new = ~np.isnat(fs)
    gbox = tg.geobox
    crs = gbox.crs
    empty = gpd.GeoDataFrame(
        {
            c: pd.Series(dtype="datetime64[ns]" if c == "first_seen" else object)
            for c in _SITE_COLUMNS
        },
        geometry=gpd.GeoSeries([], crs=crs),
        crs=crs,
    )
    if fs.shape != gbox.shape:
        raise PayeshError(f"first_seen of shape {fs.shape} is not on the tile grid {gbox.shape}")
    pixel_area = abs(gbox.resolution.x * gbox.resolution.y)
    labels, n_labels = ndimage.label(new, structure=np.ones((3, 3), dtype=bool))
    if n_labels == 0:
        return empty
    sizes = np.bincount(labels.ravel(), minlength=n_labels + 1)
    keep = np.nonzero(sizes * pixel_area >= min_area_m2)[0]
    keep = keep[keep > 0]
    if keep.size == 0:
        return empty
    kept = np.where(np.isin(labels, keep), labels, 0).astype("int32", copy=False)
    del labels
    shapes: dict[int, list[Any]] = {}
    for geom, value in rio_features.shapes(
        kept, mask=kept > 0, transform=gbox.transform, connectivity=8
    ):
        shapes.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    if mean_prob is not None:
        mean_prob = np.asarray(getattr(mean_prob, "values", mean_prob))
        if mean_prob.shape != gbox.shape:
            raise PayeshError(
                f"mean_prob of shape {mean_prob.shape} is not on the tile grid {gbox.shape}"
            )
    elif prob is not None:
        mean_prob = _mean_prob_since(prob, fs)
    boxes = ndimage.find_objects(kept)  # each site's bounding box: no full-image masks
    rows: list[dict[str, Any]] = []
    geoms = []
    for lab in keep:
        box = boxes[lab - 1]
        assert box is not None
        mask = kept[box] == lab
        months = np.sort(fs[box][mask])
        area = float(mask.sum() * pixel_area)
        poly = shapely.make_valid(shapely.unary_union(shapes[int(lab)]))
        size_factor = min(1.0, 0.5 + 0.5 * (area - min_area_m2) / (3 * min_area_m2))
        if mean_prob is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mp = float(np.nanmean(mean_prob[box][mask].astype("float64")))
            conf = (mp if np.isfinite(mp) else 0.0) * size_factor
        else:
            conf = size_factor
        rows.append(
            {
                "first_seen": months[(months.size - 1) // 2],
                "area_m2": area,
                "confidence": float(np.clip(conf, 0.0, 1.0)),
            }
        )
        geoms.append(poly)
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)
    cent = gdf.geometry.centroid
    gdf["tile"] = _tile_of(tg, cent.x.to_numpy(), cent.y.to_numpy())
    n_in_tile = gdf.groupby("tile").cumcount() + 1
    gdf["site_id"] = [f"{t}-{k:02d}" for t, k in zip(gdf["tile"], n_in_tile, strict=True)]
    gdf["first_seen"] = pd.to_datetime(gdf["first_seen"]).astype("datetime64[ns]")
    return gdf[[*_SITE_COLUMNS, "geometry"]]


def _naive_month(values: Any) -> pd.Series:
    t = pd.to_datetime(pd.Series(values))
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.dt.to_period("M")


def match_permits(sites: gpd.GeoDataFrame, permits: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    """Mark each site permitted or unauthorized.

    A site is ``"permitted"`` when a permit polygon overlapping it (intersection of
    positive area) was issued in or before the month of its ``first_seen`` (compared by
    month, since ``first_seen`` is a monthly composite); else ``"unauthorized"``.

    Parameters
    ----------
    sites
        From :func:`extract_sites`.
    permits
        Polygons with ``permit_id`` and ``issued`` (datetime), any CRS; invalid
        geometries are repaired with ``shapely.make_valid``. None (the city has no
        permits file) → all unauthorized, with a
        :class:`~payesh.records.NoPermitsWarning` when there are sites.

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``sites`` with ``status`` and ``permit_id`` (the permit overlapping the
        site most, or None).
    """
    out = sites.copy()
    out["status"] = "unauthorized"
    out["permit_id"] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if permits is None and len(out):
        warnings.warn(
            f"no permits file for this city: all {len(out)} construction site(s) are reported "
            "unauthorized; add `permits:` to the city manifest",
            NoPermitsWarning,
            stacklevel=2,
        )
    if permits is None or len(permits) == 0 or len(out) == 0:
        return out
    for col in ("permit_id", "issued"):
        if col not in permits:
            raise PayeshError(f"permits lack the column {col!r} (need permit_id, issued, geometry)")
    if permits.crs is None:
        raise PayeshError("permits have no CRS; save them with one (GeoJSON is EPSG:4326)")
    p = permits.to_crs(out.crs)
    geoms = shapely.make_valid(np.asarray(p.geometry.values))
    issued = _naive_month(p["issued"]).to_numpy()
    ids = p["permit_id"].to_numpy()
    site_month = _naive_month(out["first_seen"]).to_numpy()
    tree = shapely.STRtree(geoms)
    site_geoms = np.asarray(out.geometry.values)
    s_idx, p_idx = tree.query(site_geoms, predicate="intersects")
    best: dict[int, tuple[float, Any]] = {}
    for si, pi in zip(s_idx, p_idx, strict=True):
        if pd.isna(issued[pi]) or issued[pi] > site_month[si]:
            continue
        overlap = float(shapely.area(shapely.intersection(site_geoms[si], geoms[pi])))
        if overlap > 0 and overlap > best.get(int(si), (0.0, None))[0]:
            best[int(si)] = (overlap, ids[pi])
    for si, (_, pid) in best.items():
        out.iloc[si, out.columns.get_loc("status")] = "permitted"
        out.iloc[si, out.columns.get_loc("permit_id")] = pid
    return out


# ------------------------------------------------------------------------ tile outputs


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
                _attrs("1", "built-up fraction", f"share of clear pixels with prob > {threshold}")
            ),
            "builtup_valid_fraction": vfrac.assign_attrs(
                _attrs("1", "built-up valid fraction", "share of the tile's pixels clear")
            ),
            "new_builtup_m2": new_m2.assign_attrs(
                _attrs("m2", "new built-up area", "area newly built (first_seen <= month)")
            ),
        }
    )
    ds["unauthorized_m2"] = site_vars["unauthorized_m2"].assign_attrs(
        _attrs("m2", "unauthorized built-up area", "area of unauthorized sites seen by the month")
    )
    ds["unauthorized_sites"] = site_vars["unauthorized_sites"].assign_attrs(
        _attrs(
            "1", "unauthorized sites", "count of unauthorized sites (centroid tile) by the month"
        )
    )
    return ds.transpose("time", "tile_y", "tile_x")
