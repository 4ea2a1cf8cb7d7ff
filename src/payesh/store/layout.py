"""What a store holds and how: its groups, CF-conventional rasters, chunks and codecs.

A city's store holds the groups ``tiles`` (time, tile_y, tile_x), ``pixels`` (time, y, x
on the city grid), ``ntl`` (time, y, x on the night-light grid) and ``sites`` (site).
Every raster group carries a CF grid-mapping variable ``spatial_ref`` (``crs_wkt`` +
``GeoTransform``) that rioxarray and GDAL read; every array is written with a Zstandard
compressor followed by a ``crc32c`` checksum codec. Root attributes hold the provenance
of the latest run. Here a group is checked and prepared before it is written, a run's
months are merged with the stored ones, and the chunks and codecs are chosen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS
from xarray.coding.times import infer_calendar_name, infer_datetime_units
from zarr.codecs import Crc32cCodec, ZstdCodec

from payesh.errors import StoreError
from payesh.sites_io import prepare_sites

STORE_FORMAT_VERSION = 1
#: Attribute :func:`open_indicators` sets to the id of the snapshot it read.
SNAPSHOT_ATTR = "snapshot_id"

#: Spatial dimensions (y, x) of each raster group.
RASTER_GROUPS: dict[str, tuple[str, str]] = {
    "tiles": ("tile_y", "tile_x"),
    "pixels": ("y", "x"),
    "ntl": ("y", "x"),
}
GROUPS = (*RASTER_GROUPS, "sites")
_SPATIAL_CHUNK = 1024
_ZSTD_LEVEL = 3
_ZSTD_LEVEL_INT = 1
"""Integer arrays (``true_colour``, counts) compress as well at Zstandard level 1
as at 3 (true colour: 1.31 against 1.32 on the 24 km bench city) at 3.5 times the speed;
floats (``builtup_prob``) gain a third in size from level 3, so they keep it."""


# --------------------------------------------------------------------------- CRS


def _find_crs(ds: xr.Dataset) -> CRS | None:
    if "spatial_ref" in ds.variables:
        attrs = ds["spatial_ref"].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if key in attrs:
                return CRS.from_user_input(attrs[key])
    if "crs" in ds.attrs:
        return CRS.from_user_input(ds.attrs["crs"])
    try:
        import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

        crs = ds.odc.crs
    except Exception:  # any failure means "no CRS found"
        return None
    return None if crs is None else CRS.from_user_input(crs.to_wkt())


def _geotransform(y: np.ndarray, x: np.ndarray) -> str | None:
    if len(x) < 2 or len(y) < 2:
        return None
    dx = float(x[1] - x[0])
    dy = float(y[1] - y[0])
    return f"{float(x[0]) - dx / 2!r} {dx!r} 0.0 {float(y[0]) - dy / 2!r} 0.0 {dy!r}"


def _grid_mapping(crs: CRS, y: np.ndarray, x: np.ndarray, old: Mapping[str, Any]) -> xr.DataArray:
    attrs: dict[str, Any] = dict(crs.to_cf())
    attrs["crs_wkt"] = crs.to_wkt()
    attrs["spatial_ref"] = attrs["crs_wkt"]  # GDAL's and rioxarray's legacy key
    gt = _geotransform(y, x) or old.get("GeoTransform")
    if gt is not None:
        attrs["GeoTransform"] = gt
    return xr.DataArray(np.int64(0), attrs=attrs)


def _axis_attrs(crs: CRS, axis: str) -> dict[str, str]:
    if crs.is_geographic:
        if axis == "x":
            return {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}
        return {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    units = "m" if unit in ("metre", "meter") else unit
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "units": units,
        "axis": axis.upper(),
    }


# --------------------------------------------------------------------------- preparing


def _is_datetime(var: xr.DataArray) -> bool:
    return np.issubdtype(var.dtype, np.datetime64)


def _check_times(name: str, ds: xr.Dataset) -> None:
    if "time" not in ds.dims:
        return
    times = pd.DatetimeIndex(ds["time"].values)
    if not times.is_unique:
        raise StoreError(
            f"group {name!r}: duplicate months in time: {list(times[times.duplicated()])}"
        )
    bad = times[(times != times.normalize()) | (times.day != 1)]
    if len(bad):
        raise StoreError(
            f"group {name!r}: time must hold month starts (YYYY-MM-01), got {[str(t) for t in bad]}"
        )


def _prepare_raster(name: str, ds: xr.Dataset) -> xr.Dataset:
    ydim, xdim = RASTER_GROUPS[name]
    missing = [d for d in (ydim, xdim) if d not in ds.dims]
    if missing:
        raise StoreError(f"group {name!r} lacks dimension(s) {missing}; it needs {(ydim, xdim)}")
    for d in (ydim, xdim):
        if d not in ds.coords:
            raise StoreError(f"group {name!r} lacks the coordinate {d!r} (pixel or tile centres)")
    crs = _find_crs(ds)
    if crs is None:
        raise StoreError(
            f"group {name!r} has no CRS: add a `spatial_ref` variable with `crs_wkt` "
            "(e.g. ds.odc.assign_crs(...)) or a `crs` attribute"
        )
    _check_times(name, ds)
    for v, var in ds.data_vars.items():
        if not _is_datetime(var) and "units" not in var.attrs and v != "spatial_ref":
            raise StoreError(f"group {name!r}: variable {v!r} has no `units` attribute")
    old_gm = dict(ds["spatial_ref"].attrs) if "spatial_ref" in ds.variables else {}
    ds = ds.drop_encoding()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != SNAPSHOT_ATTR}  # read back, not data
    if "spatial_ref" in ds.variables:
        ds = ds.drop_vars("spatial_ref")
    ds = ds.assign_coords(spatial_ref=_grid_mapping(crs, ds[ydim].values, ds[xdim].values, old_gm))
    ds[xdim].attrs.update(_axis_attrs(crs, "x"))
    ds[ydim].attrs.update(_axis_attrs(crs, "y"))
    if "lon" in ds.coords:
        ds["lon"].attrs.update(
            {"standard_name": "longitude", "units": "degrees_east", "long_name": "tile centre"}
        )
    if "lat" in ds.coords:
        ds["lat"].attrs.update(
            {"standard_name": "latitude", "units": "degrees_north", "long_name": "tile centre"}
        )
    for var in ds.data_vars.values():
        if ydim in var.dims and xdim in var.dims:
            var.attrs["grid_mapping"] = "spatial_ref"
    if "time" in ds.coords:
        ds["time"].attrs.setdefault("standard_name", "time")
        ds["time"].attrs.setdefault("long_name", "month (start)")
    return ds


def prepare(name: str, obj: xr.Dataset | gpd.GeoDataFrame) -> xr.Dataset:
    if name not in GROUPS:
        raise StoreError(f"unknown group(s) {[name]}; valid groups are {list(GROUPS)}")
    if name == "sites":
        return prepare_sites(obj)
    if isinstance(obj, xr.Dataset):
        return _prepare_raster(name, obj)
    raise StoreError(f"group {name!r} must be an xarray.Dataset, got {type(obj).__name__}")


# --------------------------------------------------------------------------- merging


def merge_months(name: str, old: xr.Dataset, new: xr.Dataset) -> xr.Dataset:
    """``new`` plus the months of ``old`` that ``new`` does not hold."""
    ydim, xdim = RASTER_GROUPS[name]
    for d in (ydim, xdim):
        if old.sizes[d] != new.sizes[d] or not np.allclose(old[d].values, new[d].values):
            raise StoreError(
                f"group {name!r}: the grid ({d}) differs from the stored one; the city grid "
                "changed — write to a new store or delete the old one"
            )
    if "time" not in old.dims or "time" not in new.dims:
        return new
    old = old.drop_encoding()
    keep = old.isel(time=~old["time"].isin(new["time"].values).values)
    old_timeless = [v for v in old.data_vars if "time" not in old[v].dims and v not in new]
    if keep.sizes["time"] == 0:
        return new.assign({v: old[v] for v in old_timeless})
    new_t = [v for v in new.data_vars if "time" in new[v].dims]
    old_t = [v for v in keep.data_vars if "time" in keep[v].dims]
    spatial = {c: new[c] for c in new.coords if "time" not in new[c].dims}
    parts = []
    for part, names in ((keep, old_t), (new, new_t)):
        part = part[names].drop_vars([c for c in part.coords if "time" not in part[c].dims])
        for v in names:
            if part[v].dtype.kind in "OTU":
                # text (e.g. load_suspect_reason) is small: concatenated as Python strings,
                # since Dask cannot concatenate a stored StringDType with a numpy '<U' array
                part[v] = part[v].copy(data=np.asarray(part[v].values).astype(object))
        parts.append(part.assign_coords(spatial))
    merged = xr.concat(
        parts, dim="time", data_vars="all", coords="minimal", compat="override", join="override"
    )
    merged = merged.sortby("time")
    for v in new_t:
        merged[v].attrs = dict(new[v].attrs)
        if new[v].dtype.kind in "iub" and merged[v].dtype != new[v].dtype:
            merged[v].attrs.setdefault("comment", "missing months stored as NaN")
    timeless = {v: new[v] for v in new.data_vars if "time" not in new[v].dims}
    timeless.update({v: old[v] for v in old_timeless})
    merged = merged.assign(timeless)
    merged.attrs = dict(new.attrs)
    return merged


# --------------------------------------------------------------------------- chunks and codecs


class _Uncopied:
    """A numpy array that Dask's ``from_array`` reads chunk by chunk as it is, without the
    whole copy it first makes of anything with a ``copy`` method (the ``first_seen`` of a
    24 km city: 46 MB more at the commit, when the run's memory is at its highest)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.ndim = values.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._values[key]


def _chunks_of(values: np.ndarray, chunks: tuple[int, ...]) -> Any:
    """``values`` as a Dask array of ``chunks`` that are views of it, not of a copy. The
    caller does not change ``values`` while the array is read."""
    import dask.array as da

    return da.from_array(_Uncopied(values), chunks=chunks, name=False, meta=values[:0])


def chunked(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Regular chunks (one month per chunk) and the checksummed codec pipeline."""
    sizes = {d: int(n) for d, n in ds.sizes.items()}
    chunk = {d: (1 if d == "time" else max(1, min(n, _SPATIAL_CHUNK))) for d, n in sizes.items()}
    encoding: dict[str, dict[str, Any]] = {}
    for v, var in ds.variables.items():
        level = _ZSTD_LEVEL_INT if var.dtype.kind in "biu" else _ZSTD_LEVEL
        enc: dict[str, Any] = {"compressors": [ZstdCodec(level=level), Crc32cCodec()]}
        if var.ndim:
            enc["chunks"] = tuple(chunk[d] for d in var.dims)
        encoding[str(v)] = enc
    ds = ds.copy()
    for v, var in list(ds.variables.items()):
        if var.dtype.kind == "U":
            # fixed-width unicode has no Zarr v3 spec yet; variable-length UTF-8 does
            values = (var.dims, np.asarray(var.values).astype(object), var.attrs)
            if v in ds.coords:
                ds = ds.assign_coords({v: values})
            else:
                ds[v] = values
    for v in list(ds.data_vars):
        raster = ds[v]
        if raster.chunks is None and _is_datetime(raster) and raster.ndim >= 2:
            # a raster of dates (first_seen) encoded chunk by chunk: xarray's encoding of
            # a whole numpy array of dates holds ~3 times its size in temporaries (140 MB
            # for a 24 km city). The units are those it would infer from all the values
            # (it drops NaT first, so the valid ones give the same), so the stored
            # numbers and attributes are the same.
            dates = np.asarray(raster.values)
            valid = dates[~np.isnat(dates)]
            encoding[str(v)].update(
                units=infer_datetime_units(valid),
                calendar=infer_calendar_name(valid),
                dtype=np.dtype("int64"),
            )
            ds[v] = raster.copy(data=_chunks_of(dates, tuple(chunk[d] for d in raster.dims)))
    for v, var in ds.variables.items():
        if var.chunks is None:
            continue  # numpy: written eagerly, chunked by the encoding
        if var.dtype.kind in "OTU":
            ds[v] = var.load()  # strings are small; their dtype must be known to encode them
        else:
            ds[v] = var.chunk({d: chunk[d] for d in var.dims if sizes[d] > 0})
    return ds, encoding


# --------------------------------------------------------------------------- attributes


def attr_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.dumps(value, default=str, sort_keys=True)


def root_attrs(city_name: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.10",
        "title": f"payesh indicators for {city_name}",
        "city": city_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "payesh_store_format": STORE_FORMAT_VERSION,
    }
    attrs.update({str(k): attr_value(v) for k, v in provenance.items()})
    attrs["city"] = city_name
    return attrs
