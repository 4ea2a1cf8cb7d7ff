"""Rasters out of the store: one variable as a Cloud-Optimized GeoTIFF, a group as NetCDF.

* :func:`export_cog` — one variable, one band per month (tile variables as rasters whose
  pixels are the tiles; ``true_colour`` as an RGB GeoTIFF);
* :func:`export_netcdf` — a dataset as NetCDF with its CF attributes.

Month selection, labels and CRS come from :mod:`payesh.export_tables`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import xarray as xr
from affine import Affine

from payesh.errors import ExportError
from payesh.export_tables import TILE_DIMS, PathLike, crs, month_labels, select_time

__all__ = ["export_cog", "export_netcdf"]


def _spatial_dims(var: xr.DataArray) -> tuple[str, str]:
    for dims in (TILE_DIMS, ("y", "x"), ("lat", "lon"), ("latitude", "longitude")):
        if dims[0] in var.dims and dims[1] in var.dims:
            return dims
    raise ExportError(f"variable {var.name!r} has no spatial dimensions (dims: {var.dims})")


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
    ds = select_time(ds, time)
    var = ds[variable]
    ydim, xdim = _spatial_dims(var)
    extra = [d for d in var.dims if d not in ("time", ydim, xdim)]
    rgb = extra == ["band"]
    if extra and not rgb:
        raise ExportError(f"variable {variable!r} has extra dimensions {extra}")
    transform = _geotransform(ds, ydim, xdim)
    labels = month_labels(ds) if "time" in var.dims else [""]
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
        "crs": rasterio.CRS.from_wkt(crs(ds).to_wkt()),
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
