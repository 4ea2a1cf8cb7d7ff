"""Cloud-Optimized GeoTIFFs and what a STAC item says about them.

:func:`write_cog` writes every raster of the demo city (the sensors' scenes and the
truth's maps). The items that point at those files share their media type
(:data:`COG_TYPE`), a grid's footprint (GeoJSON polygon and bbox in EPSG:4326) and
``proj:transform``, the acquisition's UTC time stamp and its ISO form, and the sun's
angles on the day.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer

from .grid import DemoSpec, PixelGrid

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def write_cog(
    path: Path,
    data: np.ndarray,
    grid: PixelGrid,
    *,
    nodata: float | None,
    spec: DemoSpec,
) -> None:
    """Write a single-band Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    path
        Output file.
    data
        ``(height, width)`` array in the grid's shape; its dtype is the file's.
    grid
        CRS and transform of the array.
    nodata
        The nodata value recorded in the file, or ``None``.
    spec
        Supplies ``compress`` and ``blocksize``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": spec.compress,
        "blocksize": spec.blocksize,
        "overviews": "NONE",  # half the write time; the pipeline reads full resolution
        "num_threads": "ALL_CPUS",
    }
    if np.issubdtype(data.dtype, np.integer) and spec.compress.upper() in (
        "DEFLATE",
        "LZW",
        "ZSTD",
    ):
        options["predictor"] = "STANDARD"
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data, 1)


def footprint(grid: PixelGrid) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon (EPSG:4326) of a grid's outline and its bbox (degrees)."""
    left, bottom, right, top = grid.bounds
    xs = [left, right, right, left, left]
    ys = [bottom, bottom, top, top, bottom]
    if grid.crs != "EPSG:4326":
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        xs, ys = (list(v) for v in to_ll.transform(xs, ys))
    ring = [[round(float(x), 9), round(float(y), 9)] for x, y in zip(xs, ys, strict=True)]
    bbox = [
        min(r[0] for r in ring),
        min(r[1] for r in ring),
        max(r[0] for r in ring),
        max(r[1] for r in ring),
    ]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def transform6(grid: PixelGrid) -> list[float]:
    t = grid.transform
    return [t.a, t.b, t.c, t.d, t.e, t.f]


def utc_stamp(day: dt.date, hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC) + dt.timedelta(
        seconds=second
    )


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sun_angles(day: dt.date, lat: float) -> tuple[float, float]:
    """Approximate late-morning sun ``(azimuth, elevation)`` in degrees."""
    doy = day.timetuple().tm_yday
    decl = 23.44 * math.sin(2 * math.pi * (doy - 81) / 365.0)
    elev = 90.0 - lat + decl - 6.0
    return 155.0 - 10.0 * math.sin(2 * math.pi * (doy - 81) / 365.0), elev
