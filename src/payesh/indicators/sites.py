"""Construction sites and permits (SPEC §5).

Connected groups of newly built pixels (``first_seen`` of
:mod:`payesh.indicators.builtup_persistence`) above a minimum area are *sites*
(:func:`extract_sites`); a site is *unauthorized* when no permit issued before it
appeared overlaps it (:func:`match_permits`).
"""

from __future__ import annotations

import warnings
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rasterio import features as rio_features
from scipy import ndimage

from payesh.errors import PayeshError
from payesh.grid import TileGrid
from payesh.indicators.builtup_persistence import mean_prob_since
from payesh.records import NoPermitsWarning

__all__ = ["MIN_SITE_AREA_M2", "extract_sites", "match_permits"]

MIN_SITE_AREA_M2 = 2000.0
"""Least area of a site, m²: 20 pixels of 10 m — a small house with its yard; smaller
groups are mostly edge noise of existing buildings and roads."""

_SITE_COLUMNS = ["site_id", "first_seen", "area_m2", "tile", "confidence"]


def _tile_of(tg: TileGrid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    left, _, _, top = tg.geobox.boundingbox
    rows, cols = tg.shape
    r = np.clip(np.floor((top - y) / tg.tile_size).astype(int), 0, rows - 1)
    c = np.clip(np.floor((x - left) / tg.tile_size).astype(int), 0, cols - 1)
    return np.asarray(tg.names[r, c], dtype=object)


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
        mean_prob = mean_prob_since(prob, fs)
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
