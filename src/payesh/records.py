"""Municipal records a manifest points to: building permits and reported consumption."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from payesh.errors import ManifestError

__all__ = ["read_consumption", "read_permits"]


def read_permits(path: str | Path) -> gpd.GeoDataFrame:
    """Building permits as polygons with ``permit_id`` and ``issued`` (datetime).

    GeoJSON, GeoPackage or GeoParquet, in any CRS (a file without one is refused).
    Invalid geometries are repaired with ``shapely.make_valid``; empty ones are dropped.

    Raises
    ------
    ManifestError
        Naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
    except Exception as err:  # pyogrio/arrow raise many types for unreadable files
        raise ManifestError(f"{path}: cannot read permits: {err}") from err
    for col in ("permit_id", "issued"):
        if col not in gdf.columns:
            raise ManifestError(
                f"{path}: permits need a '{col}' column (found: {list(gdf.columns)})"
            )
    if gdf.crs is None:
        raise ManifestError(
            f"{path}: permits have no CRS; write one (e.g. EPSG:4326) into the file"
        )
    try:
        issued = pd.to_datetime(gdf["issued"], utc=False)
    except (ValueError, TypeError) as err:
        raise ManifestError(
            f"{path}: column 'issued' has a value that is not a date: {err}"
        ) from err
    if getattr(issued.dt, "tz", None) is not None:
        issued = issued.dt.tz_convert(None)
    gdf = gdf.assign(issued=issued, permit_id=gdf["permit_id"].astype(str))
    geoms = shapely.make_valid(gdf.geometry.values)
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, crs=gdf.crs, index=gdf.index))
    keep = ~gdf.geometry.is_empty & gdf.geometry.notna()
    return gdf.loc[keep, ["permit_id", "issued", "geometry"]].reset_index(drop=True)


def read_consumption(path: str | Path) -> pd.Series:
    """Reported electricity of the city, MWh per month (index: month starts).

    The CSV has columns ``month`` (``YYYY-MM``) and ``mwh``.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"month": str})
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read consumption CSV: {err}") from err
    for col in ("month", "mwh"):
        if col not in df.columns:
            raise ManifestError(
                f"{path}: consumption needs a '{col}' column (found: {list(df.columns)})"
            )
    try:
        months = pd.to_datetime(df["month"], format="%Y-%m")
    except ValueError as err:
        raise ManifestError(f"{path}: column 'month' must be YYYY-MM: {err}") from err
    mwh = pd.to_numeric(df["mwh"], errors="coerce")
    if mwh.isna().any():
        bad = df.loc[mwh.isna(), "mwh"].iloc[0]
        raise ManifestError(f"{path}: column 'mwh' has a value that is not a number: {bad!r}")
    if (mwh < 0).any():
        raise ManifestError(f"{path}: column 'mwh' has a negative value: {float(mwh.min())}")
    return pd.Series(mwh.to_numpy(dtype=float), index=pd.DatetimeIndex(months), name="mwh")
