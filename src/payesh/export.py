"""Map layers out of the store: CSV, GeoJSON, GeoParquet, NetCDF and Cloud-Optimized GeoTIFF.

The inputs are what :mod:`payesh.store` returns: a group as an ``xarray.Dataset``
(``tiles`` with dims (time, tile_y, tile_x); ``pixels`` / ``ntl`` with (time, y, x))
carrying a ``spatial_ref`` grid-mapping variable, and the sites as a GeoDataFrame.

The writers live in :mod:`payesh.export_tables` (tiles CSV / GeoJSON / GeoParquet, sites)
and :mod:`payesh.export_rasters` (COG, NetCDF); this module holds :data:`FORMATS` and
:func:`export_layer`, which picks the writer for a layer and format, and re-exports the
writers' names.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import xarray as xr

from payesh.errors import ExportError
from payesh.export_rasters import export_cog, export_netcdf
from payesh.export_tables import (
    TILE_DIMS,
    PathLike,
    choice_error,
    export_sites,
    export_sites_with_evidence,
    export_tiles_csv,
    is_tile_var,
    select_time,
    tile_vars,
    tiles_to_geodataframe,
)

__all__ = [
    "FORMATS",
    "ExportError",
    "export_cog",
    "export_layer",
    "export_netcdf",
    "export_sites",
    "export_sites_with_evidence",
    "export_tiles_csv",
    "tiles_to_geodataframe",
]

FORMATS = ("cog", "netcdf", "csv", "geojson", "parquet")


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
        raise choice_error("format", format, FORMATS)
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
        raise choice_error("layer", layer, layers)

    if layer == "tiles":
        valid = ["csv", "geojson", "parquet", "netcdf"]
        variables = tile_vars(ds)
    else:
        is_tile = is_tile_var(ds[layer])
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
        export_netcdf(select_time(ds[keep], time), path)
    elif format == "csv":
        export_tiles_csv(ds[[*variables]], path, time=time)
    elif format == "geojson":
        gdf = tiles_to_geodataframe(ds[[*variables]], time=time)
        Path(path).write_text(gdf.to_json(drop_id=True, na="null"), encoding="utf-8")
    else:
        tiles_to_geodataframe(ds[[*variables]], time=time).to_parquet(path, index=False)
