"""Municipal records a manifest points to: building permits and reported consumption."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from payesh.errors import ManifestError, PayeshWarning

__all__ = [
    "PERMIT_COLUMNS",
    "PERMIT_OPTIONAL_COLUMNS",
    "NoPermitsWarning",
    "PermitsRepairedWarning",
    "read_consumption",
    "read_permits",
]


PERMIT_COLUMNS: tuple[str, ...] = ("permit_id", "issued")
"""Columns a permits file must have (besides its geometry)."""
PERMIT_OPTIONAL_COLUMNS: tuple[str, ...] = (
    "expires",
    "address",
    "parcel_id",
    "description",
    "kind",
    "fid",
)
"""Columns a permits file may also have; they are read but not used. Any other column
is refused, so a misspelt ``issued`` (``issue_date``) cannot pass unnoticed."""


MAX_MWH_PER_MONTH = 1e9
"""Reported consumption above this (MWh in one month, about half the world's) is refused."""


class PermitsRepairedWarning(PayeshWarning):
    """Some permit geometries were invalid and were repaired with ``shapely.make_valid``."""


class NoPermitsWarning(PayeshWarning):
    """A city has no permits file: every construction site is reported unauthorized."""


def _feature(gdf: gpd.GeoDataFrame, i: int) -> str:
    pid = gdf["permit_id"].iloc[i] if "permit_id" in gdf.columns else None
    return f"feature {i}" + (f" (permit_id {pid!r})" if pid is not None and pid == pid else "")


def read_permits(path: str | Path) -> gpd.GeoDataFrame:
    """Building permits as polygons with ``permit_id`` and ``issued`` (datetime).

    GeoJSON, GeoPackage (first layer) or GeoParquet, in any CRS (a file without one is
    refused). Invalid geometries (self-intersections, bow-ties) are repaired with
    ``shapely.make_valid`` and reported with a :class:`PermitsRepairedWarning` naming
    the features; a feature with no geometry, an empty one, or one with no area (point,
    line) is an error, as is a column other than :data:`PERMIT_COLUMNS` and
    :data:`PERMIT_OPTIONAL_COLUMNS`, or an ``issued`` that is not a date.

    Raises
    ------
    ManifestError
        Naming the file, and the feature (index and ``permit_id``) or column at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: permits file not found")
    if path.stat().st_size == 0:
        raise ManifestError(f"{path}: the permits file is empty")
    try:
        with warnings.catch_warnings():
            # GDAL reports malformed features (e.g. a coordinate with one number) as a
            # RuntimeWarning and reads on without them: refuse the file, naming it
            warnings.simplefilter("error", RuntimeWarning)
            if path.suffix.lower() in (".parquet", ".geoparquet"):
                gdf = gpd.read_parquet(path)
            else:
                gdf = gpd.read_file(path)
    except UnicodeDecodeError as err:
        raise ManifestError(
            f"{path}: permits are not UTF-8 text ({err.reason} at byte {err.start})"
        ) from err
    except Exception as err:  # pyogrio/arrow raise many types for unreadable files
        raise ManifestError(f"{path}: cannot read permits: {err}") from err
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise ManifestError(f"{path}: permits have no geometry column; give polygons")
    if len(gdf) == 0:
        raise ManifestError(
            f"{path}: the permits file has no features; remove the manifest's 'permits' key "
            f"if the city has issued none"
        )
    geom_col = gdf.geometry.name if isinstance(gdf, gpd.GeoDataFrame) else "geometry"
    for col in PERMIT_COLUMNS:
        if col not in gdf.columns:
            raise ManifestError(
                f"{path}: permits need a '{col}' column (found: {list(gdf.columns)})"
            )
    unknown = [
        c
        for c in gdf.columns
        if c != geom_col and c not in PERMIT_COLUMNS and c not in PERMIT_OPTIONAL_COLUMNS
    ]
    if unknown:
        raise ManifestError(
            f"{path}: unknown permit column(s) {unknown}; expected {list(PERMIT_COLUMNS)} "
            f"and optionally {list(PERMIT_OPTIONAL_COLUMNS)}"
        )
    if gdf.crs is None:
        raise ManifestError(
            f"{path}: permits have no CRS; write one (e.g. EPSG:4326) into the file"
        )
    missing_id = gdf["permit_id"].isna().to_numpy()
    if missing_id.any():
        raise ManifestError(f"{path}: {_feature(gdf, int(np.argmax(missing_id)))} has no permit_id")
    issued = pd.to_datetime(gdf["issued"], errors="coerce", utc=True)
    bad = issued.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ManifestError(
            f"{path}: {_feature(gdf, i)}: 'issued' is not a date: {gdf['issued'].iloc[i]!r}"
        )
    issued = issued.dt.tz_convert(None)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    for i, g in enumerate(geoms):
        if g is None or shapely.is_empty(g):
            raise ManifestError(f"{path}: {_feature(gdf, i)} has no geometry")
    invalid = ~shapely.is_valid(geoms)
    repaired = shapely.make_valid(geoms)
    polys = np.empty(len(geoms), dtype=object)
    for i, g in enumerate(repaired):
        parts = [
            p for p in shapely.get_parts(g) if isinstance(p, shapely.Polygon | shapely.MultiPolygon)
        ]
        poly = shapely.union_all(parts) if parts else None
        if poly is None or shapely.area(poly) <= 0:
            raise ManifestError(
                f"{path}: {_feature(gdf, i)} is not a polygon with area "
                f"({geoms[i].geom_type}); permits are parcels"
            )
        bounds = shapely.bounds(poly)
        lon_lat = gdf.crs.is_geographic and not (
            -180 <= bounds[0] <= bounds[2] <= 180 and -90 <= bounds[1] <= bounds[3] <= 90
        )
        if not np.isfinite(bounds).all() or lon_lat:
            raise ManifestError(
                f"{path}: {_feature(gdf, i)} has coordinates out of range "
                f"(bounds {[float(b) for b in bounds]} in {gdf.crs.to_string()})"
            )
        polys[i] = poly
    if invalid.any():
        which = ", ".join(_feature(gdf, int(i)) for i in np.flatnonzero(invalid)[:5])
        more = f" and {int(invalid.sum()) - 5} more" if invalid.sum() > 5 else ""
        warnings.warn(
            f"{path}: repaired {int(invalid.sum())} invalid permit geometr"
            f"{'y' if invalid.sum() == 1 else 'ies'} with shapely.make_valid: {which}{more}",
            PermitsRepairedWarning,
            stacklevel=2,
        )
    return gpd.GeoDataFrame(
        {
            "permit_id": gdf["permit_id"].astype(str).to_numpy(),
            "issued": issued.to_numpy().astype("datetime64[ns]"),
        },
        geometry=gpd.GeoSeries(polys, crs=gdf.crs),
        crs=gdf.crs,
    )


def read_consumption(path: str | Path) -> pd.Series:
    """Reported electricity of the city, MWh per month (index: month starts).

    The CSV has columns ``month`` (``YYYY-MM``) and ``mwh``.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"month": str, "mwh": str}, keep_default_na=False)
    except UnicodeDecodeError as err:
        raise ManifestError(
            f"{path}: consumption is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from err
    except (OSError, ValueError) as err:
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
    twice = months[months.duplicated()]
    if len(twice):
        raise ManifestError(f"{path}: month {twice.iloc[0]:%Y-%m} is given twice")
    mwh = pd.to_numeric(df["mwh"], errors="coerce")
    if mwh.isna().any():
        i = int(np.argmax(mwh.isna().to_numpy()))
        raise ManifestError(
            f"{path}: month {months.iloc[i]:%Y-%m}: 'mwh' is missing or not a number "
            f"({df['mwh'].iloc[i]!r})"
        )
    out_of_range = ~mwh.between(0, MAX_MWH_PER_MONTH)
    if out_of_range.any():
        i = int(np.argmax(out_of_range.to_numpy()))
        raise ManifestError(
            f"{path}: month {months.iloc[i]:%Y-%m}: 'mwh' {float(mwh.iloc[i])!r} is outside "
            f"0..{MAX_MWH_PER_MONTH:g} MWh (a city's electricity in one month)"
        )
    return pd.Series(mwh.to_numpy(dtype=float), index=pd.DatetimeIndex(months), name="mwh")
