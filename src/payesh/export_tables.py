"""Tables out of the store: tile indicators as CSV or polygons, and the sites file.

* :func:`export_tiles_csv` — the ``tiles`` group as CSV, one row per tile and month;
* :func:`tiles_to_geodataframe` — the same as polygons in EPSG:4326 (GeoJSON, GeoParquet);
* :func:`export_sites` / :func:`export_sites_with_evidence` — the sites as GeoJSON or
  GeoParquet, with their evidence PNGs beside them.

Also the helpers the raster writers (:mod:`payesh.export_rasters`) and
:func:`payesh.export.export_layer` share: one month of a group (:func:`select_time`),
its month labels and CRS, which variables are tile variables, and the error for an
unknown choice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from pyproj import CRS, Transformer

from payesh.errors import ExportError
from payesh.evidence import EVIDENCE_COLUMNS
from payesh.sites_io import SITE_COLUMNS

__all__ = [
    "TILE_DIMS",
    "PathLike",
    "choice_error",
    "crs",
    "export_sites",
    "export_sites_with_evidence",
    "export_tiles_csv",
    "is_tile_var",
    "month_labels",
    "select_time",
    "tile_vars",
    "tiles_to_geodataframe",
]

TILE_DIMS = ("tile_y", "tile_x")
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def choice_error(what: str, value: object, choices: Sequence[str]) -> ExportError:
    return ExportError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def select_time(ds: xr.Dataset, time: str | None) -> xr.Dataset:
    """``ds`` restricted to the month ``time`` (``YYYY-MM``), keeping the time dimension."""
    if time is None or "time" not in ds.dims:
        return ds
    try:
        month = pd.Period(time, freq="M")
    except (ValueError, TypeError) as err:
        raise ExportError(f"invalid month {time!r}; use YYYY-MM") from err
    months = pd.DatetimeIndex(ds["time"].values).to_period("M")
    hit = np.asarray(months == month)
    if not hit.any():
        have = ", ".join(str(m) for m in months) or "none"
        raise ExportError(f"month {time} is not in the store (months: {have})")
    return ds.isel(time=np.flatnonzero(hit))


def month_labels(ds: xr.Dataset) -> list[str]:
    return [f"{t:%Y-%m}" for t in pd.DatetimeIndex(ds["time"].values)]


def crs(ds: xr.Dataset) -> CRS:
    if "spatial_ref" in ds.variables:
        attrs = ds["spatial_ref"].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if key in attrs:
                return CRS.from_wkt(attrs[key])
    if "crs" in ds.attrs:
        return CRS.from_user_input(ds.attrs["crs"])
    raise ExportError("the dataset has no CRS (no `spatial_ref` variable with `crs_wkt`)")


def is_tile_var(var: xr.DataArray) -> bool:
    return set(TILE_DIMS) <= set(var.dims) <= {"time", *TILE_DIMS}


def tile_vars(ds: xr.Dataset) -> list[str]:
    return [
        str(v) for v, var in ds.data_vars.items() if is_tile_var(var) and var.dtype.kind in "biuf"
    ]


def _tile_names_lonlat(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ny, nx = ds.sizes["tile_y"], ds.sizes["tile_x"]
    if "tile" in ds.coords or "tile" in ds.data_vars:
        raw = np.asarray(ds["tile"].transpose(*TILE_DIMS).values)
        names = np.array([str(v) for v in raw.ravel()], dtype=object)
    else:
        names = np.array([[f"r{r:03d}c{c:03d}" for c in range(nx)] for r in range(ny)])
    if "lon" in ds.variables and "lat" in ds.variables:
        lon = np.asarray(ds["lon"].transpose(*TILE_DIMS).values, dtype="float64")
        lat = np.asarray(ds["lat"].transpose(*TILE_DIMS).values, dtype="float64")
    else:
        xx, yy = np.meshgrid(ds["tile_x"].values, ds["tile_y"].values)
        tr = Transformer.from_crs(crs(ds), "EPSG:4326", always_xy=True)
        lon, lat = (np.asarray(a) for a in tr.transform(xx, yy))
    return names.reshape(ny, nx), lon.reshape(ny, nx), lat.reshape(ny, nx)


def _tiles_frame(ds: xr.Dataset, variables: Sequence[str]) -> pd.DataFrame:
    """One row per tile and month: ``tile, time, lon, lat`` then ``variables``."""
    names, lon, lat = _tile_names_lonlat(ds)
    n = names.size
    labels: list[str | None] = [None]
    if "time" in ds.dims:
        labels = [*month_labels(ds)]
    frames = []
    for i, label in enumerate(labels):
        cols: dict[str, Any] = {
            "tile": names.ravel(),
            "time": [label] * n,
            "lon": lon.ravel(),
            "lat": lat.ravel(),
        }
        for v in variables:
            var = ds[v]
            if "time" in var.dims:
                var = var.isel(time=i)
            cols[v] = np.asarray(var.transpose(*TILE_DIMS).values).ravel()
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- tiles


def export_tiles_csv(ds_tiles: xr.Dataset, path: PathLike, *, time: str | None = None) -> None:
    """Write the tile indicators as CSV, one row per tile and month.

    Parameters
    ----------
    ds_tiles
        The ``tiles`` group (dims ``time, tile_y, tile_x``).
    path
        Output file.
    time
        One month (``YYYY-MM``); default every month in ``ds_tiles``.

    Notes
    -----
    Columns: ``tile, time, lon, lat`` (tile centre in WGS84 degrees, time as ``YYYY-MM``),
    then one column per numeric (time, tile_y, tile_x) or (tile_y, tile_x) variable.
    Missing values are written as empty fields.
    """
    if not set(TILE_DIMS) <= set(ds_tiles.dims):
        raise ExportError(f"not a tile dataset: dims {tuple(ds_tiles.dims)} lack {TILE_DIMS}")
    ds = select_time(ds_tiles, time)
    _tiles_frame(ds, tile_vars(ds)).to_csv(path, index=False, na_rep="")


def tiles_to_geodataframe(ds_tiles: xr.Dataset, *, time: str | None = None) -> gpd.GeoDataFrame:
    """Tile indicators as polygons (one feature per tile and month), in EPSG:4326."""
    ds = select_time(ds_tiles, time)
    df = _tiles_frame(ds, tile_vars(ds))
    xs = np.asarray(ds["tile_x"].values, dtype="float64")
    ys = np.asarray(ds["tile_y"].values, dtype="float64")
    dx = abs(xs[1] - xs[0]) if xs.size > 1 else abs(ys[1] - ys[0]) if ys.size > 1 else None
    if dx is None:
        gt = ds["spatial_ref"].attrs.get("GeoTransform") if "spatial_ref" in ds.variables else None
        if gt is None:
            raise ExportError("cannot tell the tile size of a single-tile dataset")
        dx = abs(float(gt.split()[1]))
    xx, yy = np.meshgrid(xs, ys)
    half = dx / 2
    boxes = shapely.box(xx - half, yy - half, xx + half, yy + half).ravel()
    n_months = len(df) // boxes.size
    geoms = gpd.GeoSeries(np.tile(boxes, n_months), crs=crs(ds)).to_crs("EPSG:4326")
    return gpd.GeoDataFrame(df, geometry=geoms.values, crs="EPSG:4326")


# --------------------------------------------------------------------------- sites


def export_sites(gdf: gpd.GeoDataFrame, path: PathLike, *, format: str = "geojson") -> None:
    """Write the construction sites as GeoJSON (RFC 7946) or GeoParquet, in EPSG:4326.

    Parameters
    ----------
    gdf
        The sites (:func:`payesh.store.open_sites`), any CRS.
    path
        Output file.
    format
        ``geojson`` or ``parquet``.

    Notes
    -----
    Columns are ``site_id, first_seen, area_m2, tile, status, permit_id, confidence``,
    then ``evidence_chip, evidence_curve`` when ``gdf`` has them
    (:func:`payesh.evidence.write_evidence`: PNG paths relative to the file's folder),
    then ``geometry``; in GeoJSON ``first_seen`` is an ISO date (``YYYY-MM-DD``).
    """
    if format not in ("geojson", "parquet"):
        raise choice_error("format for sites", format, ["geojson", "parquet"])
    missing = [c for c in SITE_COLUMNS if c != "geometry" and c not in gdf.columns]
    if missing:
        raise ExportError(f"sites lack the column(s) {missing}; expected {list(SITE_COLUMNS)}")
    if gdf.crs is None:
        raise ExportError("sites have no CRS; cannot write them in EPSG:4326")
    out = gdf.to_crs("EPSG:4326")
    columns = [c for c in SITE_COLUMNS if c != "geometry"]
    columns += [c for c in EVIDENCE_COLUMNS if c in gdf.columns]
    out = gpd.GeoDataFrame(
        {c: out[c] for c in columns},
        geometry=out.geometry.values,
        crs="EPSG:4326",
    )
    out["first_seen"] = pd.to_datetime(out["first_seen"])
    if format == "parquet":
        out.to_parquet(path, index=False)
        return
    out["first_seen"] = [None if pd.isna(t) else f"{t:%Y-%m-%d}" for t in out["first_seen"]]
    out["permit_id"] = [None if pd.isna(p) else str(p) for p in out["permit_id"]]
    # to_json writes plain lon/lat coordinates and no "crs" member, as RFC 7946 wants.
    Path(path).write_text(out.to_json(drop_id=True, na="null"), encoding="utf-8")


def export_sites_with_evidence(
    sites: gpd.GeoDataFrame,
    pixels: xr.Dataset | None,
    path: PathLike,
    *,
    format: str = "geojson",
) -> gpd.GeoDataFrame:
    """Write the sites and, beside them, each site's evidence PNGs.

    Parameters
    ----------
    sites
        The sites, any CRS.
    pixels
        The ``pixels`` group of the same run or snapshot (``builtup_prob``, and
        ``true_colour`` for true-colour chips), lazy; ``None`` or without
        ``builtup_prob``: the sites are written without evidence.
    path
        The sites file; the PNGs go to ``<its folder>/evidence/<site_id>-chip.png`` and
        ``-curve.png``, named by the ``evidence_chip`` / ``evidence_curve`` columns
        (paths relative to the file's folder, so the folder can be moved or zipped).
    format
        ``geojson`` or ``parquet``.

    Returns
    -------
    geopandas.GeoDataFrame
        The sites as written (in their own CRS), with the evidence columns when drawn.
    """
    from payesh.evidence import write_store_evidence

    if format not in ("geojson", "parquet"):
        raise choice_error("format for sites", format, ["geojson", "parquet"])
    out = sites
    if pixels is not None and "builtup_prob" in pixels and len(sites):
        out = write_store_evidence(sites, pixels, Path(path).parent)
    export_sites(out, path, format=format)
    return out
