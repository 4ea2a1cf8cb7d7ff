"""Map layers out of the store: CSV, GeoJSON, GeoParquet, NetCDF and Cloud-Optimized GeoTIFF.

The inputs are what :mod:`payesh.store` returns: a group as an ``xarray.Dataset``
(``tiles`` with dims (time, tile_y, tile_x); ``pixels`` / ``ntl`` with (time, y, x))
carrying a ``spatial_ref`` grid-mapping variable, and the sites as a GeoDataFrame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
import xarray as xr
from affine import Affine
from pyproj import CRS, Transformer

from payesh.errors import ExportError
from payesh.evidence import EVIDENCE_COLUMNS
from payesh.sites_io import SITE_COLUMNS

__all__ = [
    "FORMATS",
    "ExportError",
    "export_layer",
    "export_sites",
    "export_sites_with_evidence",
    "export_tiles_csv",
    "tiles_to_geodataframe",
]

FORMATS = ("cog", "netcdf", "csv", "geojson", "parquet")
TILE_DIMS = ("tile_y", "tile_x")
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def _choice_error(what: str, value: object, choices: Sequence[str]) -> ExportError:
    return ExportError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def _select_time(ds: xr.Dataset, time: str | None) -> xr.Dataset:
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


def _month_labels(ds: xr.Dataset) -> list[str]:
    return [f"{t:%Y-%m}" for t in pd.DatetimeIndex(ds["time"].values)]


def _crs(ds: xr.Dataset) -> CRS:
    if "spatial_ref" in ds.variables:
        attrs = ds["spatial_ref"].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if key in attrs:
                return CRS.from_wkt(attrs[key])
    if "crs" in ds.attrs:
        return CRS.from_user_input(ds.attrs["crs"])
    raise ExportError("the dataset has no CRS (no `spatial_ref` variable with `crs_wkt`)")


def _spatial_dims(var: xr.DataArray) -> tuple[str, str]:
    for dims in (TILE_DIMS, ("y", "x"), ("lat", "lon"), ("latitude", "longitude")):
        if dims[0] in var.dims and dims[1] in var.dims:
            return dims
    raise ExportError(f"variable {var.name!r} has no spatial dimensions (dims: {var.dims})")


def _is_tile_var(var: xr.DataArray) -> bool:
    return set(TILE_DIMS) <= set(var.dims) <= {"time", *TILE_DIMS}


def _tile_vars(ds: xr.Dataset) -> list[str]:
    return [
        str(v) for v, var in ds.data_vars.items() if _is_tile_var(var) and var.dtype.kind in "biuf"
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
        tr = Transformer.from_crs(_crs(ds), "EPSG:4326", always_xy=True)
        lon, lat = (np.asarray(a) for a in tr.transform(xx, yy))
    return names.reshape(ny, nx), lon.reshape(ny, nx), lat.reshape(ny, nx)


def _tiles_frame(ds: xr.Dataset, variables: Sequence[str]) -> pd.DataFrame:
    """One row per tile and month: ``tile, time, lon, lat`` then ``variables``."""
    names, lon, lat = _tile_names_lonlat(ds)
    n = names.size
    labels: list[str | None] = [None]
    if "time" in ds.dims:
        labels = [*_month_labels(ds)]
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
    ds = _select_time(ds_tiles, time)
    _tiles_frame(ds, _tile_vars(ds)).to_csv(path, index=False, na_rep="")


def tiles_to_geodataframe(ds_tiles: xr.Dataset, *, time: str | None = None) -> gpd.GeoDataFrame:
    """Tile indicators as polygons (one feature per tile and month), in EPSG:4326."""
    ds = _select_time(ds_tiles, time)
    df = _tiles_frame(ds, _tile_vars(ds))
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
    geoms = gpd.GeoSeries(np.tile(boxes, n_months), crs=_crs(ds)).to_crs("EPSG:4326")
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
        raise _choice_error("format for sites", format, ["geojson", "parquet"])
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
        raise _choice_error("format for sites", format, ["geojson", "parquet"])
    out = sites
    if pixels is not None and "builtup_prob" in pixels and len(sites):
        out = write_store_evidence(sites, pixels, Path(path).parent)
    export_sites(out, path, format=format)
    return out


# --------------------------------------------------------------------------- rasters


def _geotransform(ds: xr.Dataset, ydim: str, xdim: str) -> Affine:
    xs = np.asarray(ds[xdim].values, dtype="float64")
    ys = np.asarray(ds[ydim].values, dtype="float64")
    if xs.size > 1 and ys.size > 1:
        dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        return Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)
    gt = ds["spatial_ref"].attrs.get("GeoTransform") if "spatial_ref" in ds.variables else None
    if gt is None:
        raise ExportError("cannot derive the pixel size: one row/column and no GeoTransform")
    return Affine.from_gdal(*(float(v) for v in str(gt).split()))


def _raster_values(var: xr.DataArray) -> tuple[np.ndarray, float | None, str]:
    """Values as a (band, y, x) array that GeoTIFF can hold, its nodata and a units note."""
    data = np.asarray(var.values)
    units = str(var.attrs.get("units", ""))
    if np.issubdtype(data.dtype, np.datetime64):
        # dates as decimal years (2025.5 = early July 2025), NaN where never
        dt = pd.DatetimeIndex(data.ravel())
        years = dt.year + (dt.day_of_year - 1) / np.where(dt.is_leap_year, 366.0, 365.0)
        return np.asarray(years, dtype="float32").reshape(data.shape), float("nan"), "year"
    if data.dtype.kind == "b":
        return data.astype("uint8"), None, units
    if data.dtype.kind == "f":
        return data, float("nan"), units
    if data.dtype.kind in "iu":
        return data, None, units
    raise ExportError(f"variable {var.name!r} of dtype {data.dtype} cannot be written as a raster")


def export_cog(ds: xr.Dataset, variable: str, path: PathLike, *, time: str | None = None) -> None:
    """Write one variable as a Cloud-Optimized GeoTIFF, one band per month.

    A tile-level variable becomes a raster whose pixels are the tiles. Band descriptions
    are the months (``YYYY-MM``); dates (``first_seen``) are written as decimal years.
    A variable with a ``band`` dimension (``true_colour``: red, green, blue) is written
    for one month as an RGB GeoTIFF, one band per ``band``.
    """
    ds = _select_time(ds, time)
    var = ds[variable]
    ydim, xdim = _spatial_dims(var)
    extra = [d for d in var.dims if d not in ("time", ydim, xdim)]
    rgb = extra == ["band"]
    if extra and not rgb:
        raise ExportError(f"variable {variable!r} has extra dimensions {extra}")
    transform = _geotransform(ds, ydim, xdim)
    labels = _month_labels(ds) if "time" in var.dims else [""]
    if rgb:
        if len(labels) != 1:
            raise ExportError(
                f"{variable!r} is exported one month at a time (an RGB GeoTIFF): "
                f"give --time, one of {', '.join(labels)}"
            )
        var = var.squeeze("time", drop=True) if "time" in var.dims else var
        labels = [str(b) for b in var["band"].values] if "band" in var.coords else ["", "", ""]
        var = var.transpose("band", ydim, xdim)
    else:
        var = var.transpose(*(["time"] if "time" in var.dims else []), ydim, xdim)
    data, nodata, units = _raster_values(var)
    data = data.reshape(len(labels), var.sizes[ydim], var.sizes[xdim])
    if transform.e > 0:  # south-up coordinates: flip to north-up
        data = data[:, ::-1, :]
        transform = Affine(
            transform.a,
            0.0,
            transform.c,
            0.0,
            -transform.e,
            transform.f + transform.e * var.sizes[ydim],
        )
    profile: dict[str, Any] = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": rasterio.CRS.from_wkt(_crs(ds).to_wkt()),
        "transform": transform,
        "BLOCKSIZE": 256,
        "COMPRESS": "DEFLATE",
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if rgb and data.shape[0] == 3:  # QGIS shows it as RGB without styling
            from rasterio.enums import ColorInterp

            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.update_tags(layer=variable, units=units, long_name=str(var.attrs.get("long_name", "")))
        for band, label in enumerate(labels, start=1):
            if label:
                dst.set_band_description(band, label)


def _nc_attr(value: Any) -> Any:
    if isinstance(value, str | int | float | np.number):
        return value
    if isinstance(value, bool):
        return int(value)
    return json.dumps(value, default=str, sort_keys=True)


def export_netcdf(ds: xr.Dataset, path: PathLike) -> None:
    """Write ``ds`` as NetCDF (classic format, scipy engine) with its CF attributes."""
    out = ds.load().drop_encoding()
    for var in out.variables.values():
        if var.dtype.kind in "TO":  # numpy StringDType from the store, or Python objects
            var.data = np.array([str(v) for v in var.values.ravel()], dtype=object).reshape(
                var.shape
            )
        var.attrs = {k: _nc_attr(v) for k, v in var.attrs.items()}
    out.attrs = {k: _nc_attr(v) for k, v in out.attrs.items()}
    try:
        out.to_netcdf(path, engine="scipy", format="NETCDF3_64BIT")
    except ImportError as err:
        raise ExportError(f"NetCDF export needs scipy: {err}") from err


# --------------------------------------------------------------------------- dispatch


def export_layer(
    ds: xr.Dataset | gpd.GeoDataFrame,
    layer: str,
    path: PathLike,
    *,
    format: str,
    time: str | None = None,
) -> None:
    """Export one layer of a city.

    Parameters
    ----------
    ds
        A store group (``xarray.Dataset``) or, for ``layer="sites"``, the sites
        GeoDataFrame.
    layer
        ``tiles`` (every tile indicator), ``sites``, or the name of one variable of ``ds``
        (``ntl_sum``, ``builtup_prob``, ``first_seen``, ``radiance``, …).
    path
        Output file.
    format
        ``cog``, ``netcdf``, ``csv``, ``geojson`` or ``parquet``; which apply depends on
        the layer (tile layers: all five; pixel layers: ``cog`` and ``netcdf``;
        sites: ``geojson`` and ``parquet``).
    time
        One month (``YYYY-MM``); default every month (one band per month in a COG).
    """
    if format not in FORMATS:
        raise _choice_error("format", format, FORMATS)
    if layer == "sites":
        if not isinstance(ds, gpd.GeoDataFrame):
            raise ExportError("layer 'sites' needs the sites GeoDataFrame (store.open_sites)")
        export_sites(ds, path, format=format)
        return
    if not isinstance(ds, xr.Dataset):
        raise ExportError(f"layer {layer!r} needs an xarray.Dataset, got {type(ds).__name__}")
    layers = ["sites", *(["tiles"] if set(TILE_DIMS) <= set(ds.dims) else [])]
    layers += [str(v) for v in ds.data_vars]
    if layer not in layers:
        raise _choice_error("layer", layer, layers)

    if layer == "tiles":
        valid = ["csv", "geojson", "parquet", "netcdf"]
        variables = _tile_vars(ds)
    else:
        is_tile = _is_tile_var(ds[layer])
        valid = ["cog", "netcdf", *(["csv", "geojson", "parquet"] if is_tile else [])]
        variables = [layer]
    if format not in valid:
        hint = " (export one variable of the tiles as cog)" if layer == "tiles" else ""
        raise ExportError(
            f"format {format!r} does not apply to layer {layer!r}; valid: {', '.join(valid)}{hint}"
        )

    if format == "cog":
        export_cog(ds, layer, path, time=time)
    elif format == "netcdf":
        keep = [*variables, *(["spatial_ref"] if "spatial_ref" in ds.variables else [])]
        export_netcdf(_select_time(ds[keep], time), path)
    elif format == "csv":
        export_tiles_csv(ds[[*variables]], path, time=time)
    elif format == "geojson":
        gdf = tiles_to_geodataframe(ds[[*variables]], time=time)
        Path(path).write_text(gdf.to_json(drop_id=True, na="null"), encoding="utf-8")
    else:
        tiles_to_geodataframe(ds[[*variables]], time=time).to_parquet(path, index=False)
