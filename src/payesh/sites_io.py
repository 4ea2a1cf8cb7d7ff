"""The ``sites`` group of the store <-> a GeoDataFrame of construction sites.

A site's polygon is stored as hex WKB strings (``geometry_wkb``) along the ``site``
dimension, the CRS in the group's ``crs``/``crs_wkt`` attributes; the other columns of
:data:`SITE_COLUMNS` are plain variables.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from pyproj import CRS

from payesh.errors import StoreError

__all__ = ["SITE_COLUMNS", "prepare_sites", "sites_from_dataset", "sites_to_dataset"]

SITE_COLUMNS = (
    "site_id",
    "first_seen",
    "area_m2",
    "tile",
    "status",
    "permit_id",
    "confidence",
    "geometry",
)


def sites_to_dataset(gdf: gpd.GeoDataFrame) -> xr.Dataset:
    """The ``sites`` group of the store from a GeoDataFrame of sites.

    Parameters
    ----------
    gdf
        One row per site with the columns :data:`SITE_COLUMNS` (``area_m2`` in m²,
        ``first_seen`` a date, ``confidence`` in [0, 1]) and a CRS.

    Returns
    -------
    xarray.Dataset
        Dimension ``site``; the geometry as hex WKB strings in ``geometry_wkb``, the CRS
        in the attributes ``crs`` and ``crs_wkt``.
    """
    missing = [c for c in SITE_COLUMNS if c != "geometry" and c not in gdf.columns]
    if missing:
        raise StoreError(f"sites lack the column(s) {missing}; expected {list(SITE_COLUMNS)}")
    if gdf.crs is None:
        raise StoreError("sites have no CRS; set one with GeoDataFrame.set_crs(...)")
    crs = CRS.from_user_input(gdf.crs)

    def strings(col: str) -> np.ndarray:
        return np.array(["" if pd.isna(v) else str(v) for v in gdf[col]], dtype=object)

    data = {
        "site_id": strings("site_id"),
        "first_seen": pd.to_datetime(gdf["first_seen"]).to_numpy(dtype="datetime64[ns]"),
        "area_m2": gdf["area_m2"].to_numpy(dtype="float64"),
        "tile": strings("tile"),
        "status": strings("status"),
        "permit_id": strings("permit_id"),
        "confidence": gdf["confidence"].to_numpy(dtype="float32"),
        "geometry_wkb": np.array(
            shapely.to_wkb(gdf.geometry.values, hex=True), dtype=object
        ).reshape(-1),
    }
    attrs = {
        "area_m2": {"units": "m2", "long_name": "area of the site"},
        "confidence": {"units": "1", "long_name": "confidence that the site is new construction"},
        "status": {"long_name": "unauthorized | permitted"},
        "permit_id": {"long_name": "overlapping permit ('' when none)"},
        "geometry_wkb": {"long_name": "site polygon", "encoding": "WKB, hex"},
        "first_seen": {"long_name": "date the site became persistently built-up"},
    }
    ds = xr.Dataset({k: ("site", v, attrs.get(k, {})) for k, v in data.items()})
    ds.attrs.update({"crs": crs.to_string(), "crs_wkt": crs.to_wkt()})
    return ds


def sites_from_dataset(ds: xr.Dataset) -> gpd.GeoDataFrame:
    """Inverse of :func:`sites_to_dataset` (loads the values)."""
    ds = ds.load()
    n = ds.sizes.get("site", 0)

    def strings(col: str) -> list[str]:
        return [str(v) for v in np.asarray(ds[col].values).reshape(n)]

    geoms = shapely.from_wkb(np.array(strings("geometry_wkb"), dtype=object)) if n else []
    df = pd.DataFrame(
        {
            "site_id": pd.Series(strings("site_id"), dtype=object),
            "first_seen": pd.to_datetime(ds["first_seen"].values.reshape(n)),
            "area_m2": ds["area_m2"].values.astype("float64").reshape(n),
            "tile": pd.Series(strings("tile"), dtype=object),
            "status": pd.Series(strings("status"), dtype=object),
            "permit_id": pd.Series([s or None for s in strings("permit_id")], dtype=object),
            "confidence": ds["confidence"].values.astype("float32").reshape(n),
        }
    )
    crs = ds.attrs.get("crs_wkt") or ds.attrs.get("crs")
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)


def prepare_sites(obj: xr.Dataset | gpd.GeoDataFrame) -> xr.Dataset:
    if isinstance(obj, gpd.GeoDataFrame):
        return sites_to_dataset(obj)
    need = [c for c in SITE_COLUMNS if c != "geometry"] + ["geometry_wkb"]
    missing = [c for c in need if c not in obj.variables]
    if missing:
        raise StoreError(f"group 'sites' lacks the variable(s) {missing}; expected {need}")
    if "crs" not in obj.attrs and "crs_wkt" not in obj.attrs:
        raise StoreError("group 'sites' has no `crs` attribute")
    return obj.drop_encoding()
