"""NASA Black Marble night lights: VNP46A3 (monthly) and VNP46A4 (yearly) HDF5 tiles.

Black Marble tiles are 10° × 10° on a global lon/lat grid (``h`` 0–35 from 180° W,
``v`` 0–17 from 90° N), 2400 × 2400 pixels of 15 arc-seconds each, corners on whole
multiples of the pixel size: the lattice :func:`payesh.grid.ntl_geobox` builds with its
default origin, so no pixel is resampled. Each HDF5-EOS file holds, under
``HDFEOS/GRIDS/VIIRS_Grid_DNB_2d/Data Fields``:

* ``NearNadir_Composite_Snow_Free`` — uint16 radiance, ``_FillValue`` 65535, and
  ``scale_factor`` / ``add_offset`` attributes (0.1 / 0 in the files: nW·cm⁻²·sr⁻¹);
* ``NearNadir_Composite_Snow_Free_Quality`` — uint8: 0 good (> 3 observations),
  1 poor (≤ 3), 2 gap-filled from earlier data, 255 fill;
* ``NearNadir_Composite_Snow_Free_Num`` — uint16 number of observations behind the value;
* ``lat`` / ``lon`` — pixel-centre coordinates (degrees).

:func:`blackmarble_month` mosaics the tiles over a night-light grid into the same
Dataset :func:`payesh.monthly.viirs_month` returns — ``radiance`` (NaN where missing)
and ``cf_cvg`` (observations) — so indicators do not care which provider it came from.
Fill (65535, or quality 255) is missing, not dark. Gap-filled pixels keep their value and
are counted in ``attrs["gap_filled_pixels"]``; their ``cf_cvg`` is the number of
observations the file reports for them (usually 0).

Finding, downloading and checking the files on NASA's LAADS DAAC archive (with an
Earthdata token) is :mod:`payesh.sources.laads`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from payesh.errors import SourceError

__all__ = [
    "BLACK_MARBLE_PRODUCTS",
    "DATA_FIELDS",
    "LAYER",
    "RESOLUTION_DEG",
    "blackmarble_month",
    "mosaic",
    "read_tile",
    "tile_geobox",
    "tiles_over",
]

DATA_FIELDS = "HDFEOS/GRIDS/VIIRS_Grid_DNB_2d/Data Fields"
LAYER = "NearNadir_Composite_Snow_Free"
TILE_DEG = 10.0
TILE_PX = 2400
RESOLUTION_DEG = TILE_DEG / TILE_PX  # 15 arc-seconds
QUALITY_GAP_FILLED = 2
QUALITY_FILL = 255
#: product -> how often (VNP46A3 monthly composites, VNP46A4 yearly).
BLACK_MARBLE_PRODUCTS: Mapping[str, str] = {"VNP46A3": "monthly", "VNP46A4": "yearly"}
_TILE_ID = re.compile(r"^h(\d{2})v(\d{2})$")


def _parse_tile(tile: str) -> tuple[int, int]:
    m = _TILE_ID.match(tile)
    if not m or int(m.group(1)) > 35 or int(m.group(2)) > 17:
        raise SourceError(f"{tile!r} is not a Black Marble tile id (h00v00 … h35v17)")
    return int(m.group(1)), int(m.group(2))


def tile_geobox(tile: str) -> GeoBox:
    """The 2400 × 2400 EPSG:4326 grid of Black Marble tile ``tile`` (``h21v05``)."""
    h, v = _parse_tile(tile)
    transform = Affine(
        RESOLUTION_DEG, 0.0, -180.0 + TILE_DEG * h, 0.0, -RESOLUTION_DEG, 90.0 - TILE_DEG * v
    )
    return GeoBox((TILE_PX, TILE_PX), transform, "EPSG:4326")


@lru_cache(maxsize=4)
def _tile_polygons(path: str) -> tuple[tuple[str, tuple[float, float, float, float]], ...]:
    try:
        features = json.loads(Path(path).read_text())["features"]
        out = []
        for f in features:
            xs = [p[0] for p in f["geometry"]["coordinates"][0]]
            ys = [p[1] for p in f["geometry"]["coordinates"][0]]
            out.append((str(f["properties"]["TileID"]), (min(xs), min(ys), max(xs), max(ys))))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise SourceError(f"{path}: not a Black Marble tile grid (GeoJSON, TileID): {err}") from err
    return tuple(out)


def tiles_over(bbox: Sequence[float], *, grid: Path | str | None = None) -> list[str]:
    """Ids of the Black Marble tiles a lon/lat ``bbox`` (west, south, east, north) overlaps.

    With ``grid``, the tiles are read from the published tile grid
    (``blackmarbletiles.geojson``, property ``TileID``); without, they follow from the
    grid's definition (10° tiles from 180° W, 90° N) — the same answer. Tiles that only
    touch the bbox along an edge are left out.
    """
    west, south, east, north = bbox
    if grid is not None:
        found = [
            tile
            for tile, (x0, y0, x1, y1) in _tile_polygons(str(grid))
            if x0 < east and west < x1 and y0 < north and south < y1
        ]
        return sorted(found)
    h0 = max(0, math.floor((west + 180.0) / TILE_DEG))
    h1 = min(35, math.ceil((east + 180.0) / TILE_DEG) - 1)
    v0 = max(0, math.floor((90.0 - north) / TILE_DEG))
    v1 = min(17, math.ceil((90.0 - south) / TILE_DEG) - 1)
    return sorted(f"h{h:02d}v{v:02d}" for h in range(h0, h1 + 1) for v in range(v0, v1 + 1))


def _attr(ds: object, name: str, default: float | None) -> float | None:
    value = getattr(ds, "attrs", {}).get(name)
    if value is None:
        return default
    return float(np.asarray(value).ravel()[0])


def read_tile(path: Path | str, *, layer: str = LAYER) -> xr.Dataset:
    """One Black Marble HDF5 tile on its own grid, in physical units.

    Returns
    -------
    xarray.Dataset
        ``radiance`` float32 nW·cm⁻²·sr⁻¹ (NaN at fill or quality 255), ``cf_cvg``
        uint16 observations (0 where missing), ``gap_filled`` bool; dims (y, x), EPSG:4326.

    Raises
    ------
    SourceError
        The file is not HDF5, or lacks the layer or its quality layer.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            fields = f[DATA_FIELDS]
            if layer not in fields or f"{layer}_Quality" not in fields:
                raise SourceError(
                    f"{path}: no {layer!r} and {layer + '_Quality'!r} under {DATA_FIELDS!r} "
                    f"(it has: {', '.join(sorted(fields))})"
                )
            rad = fields[layer]
            raw = rad[()]
            fill = _attr(rad, "_FillValue", 65535.0)
            scale = _attr(rad, "scale_factor", 1.0)
            offset = _attr(rad, "add_offset", 0.0)
            quality = fields[f"{layer}_Quality"][()]
            num = fields[f"{layer}_Num"][()] if f"{layer}_Num" in fields else None
            num_fill = (
                _attr(fields[f"{layer}_Num"], "_FillValue", 65535.0) if num is not None else None
            )
            lat = fields["lat"][()] if "lat" in fields else None
            lon = fields["lon"][()] if "lon" in fields else None
    except SourceError:
        raise
    except (OSError, KeyError) as err:
        raise SourceError(f"{path}: cannot read it as a Black Marble HDF5 tile: {err}") from err
    if lat is not None and lon is not None:
        west, north = float(lon[0]) - RESOLUTION_DEG / 2, float(lat[0]) + RESOLUTION_DEG / 2
    else:
        m = re.search(r"\.(h\d{2}v\d{2})\.", path.name)
        if m is None:
            raise SourceError(f"{path}: no lat/lon layers and no hNNvNN tile id in its name")
        box = tile_geobox(m.group(1))
        west, north = box.affine.c, box.affine.f
    gbox = GeoBox(
        raw.shape, Affine(RESOLUTION_DEG, 0.0, west, 0.0, -RESOLUTION_DEG, north), "EPSG:4326"
    )
    missing = quality == QUALITY_FILL
    if fill is not None:
        missing |= raw == fill
    radiance = np.where(missing, np.nan, raw.astype("float64") * (scale or 1.0) + (offset or 0.0))
    if num is None:
        count = (~missing).astype("uint16")
    else:
        bad_num = (num == num_fill) if num_fill is not None else np.zeros(num.shape, bool)
        count = np.where(missing | bad_num, 0, num).astype("uint16")
    template = xr_zeros(gbox, dtype="float32")
    out = xr.Dataset(
        {
            "radiance": template.copy(data=radiance.astype("float32")),
            "cf_cvg": template.copy(data=count),
            "gap_filled": template.copy(data=(quality == QUALITY_GAP_FILLED) & ~missing),
        }
    )
    out = out.rename({"latitude": "y", "longitude": "x"}) if "latitude" in out.dims else out
    out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
    out["cf_cvg"].attrs.update(units="1", long_name="observations behind the composite")
    return out


def _offset(target: float, source: float) -> int:
    steps = (target - source) / RESOLUTION_DEG
    n = round(steps)
    if abs(steps - n) > 1e-3:
        raise SourceError(
            f'the night-light grid is not on the Black Marble 15" lattice (off by '
            f"{steps - n:+.3f} px); build it with payesh.grid.ntl_geobox(city) (origin 0, 0)"
        )
    return int(n)


def blackmarble_month(
    paths: Sequence[Path | str], geobox: GeoBox, month: pd.Timestamp
) -> xr.Dataset:
    """The tiles in ``paths`` mosaicked onto the night-light grid ``geobox`` for ``month``.

    Returns
    -------
    xarray.Dataset
        As :func:`payesh.monthly.viirs_month`: ``radiance`` float32 nW·cm⁻²·sr⁻¹ (NaN
        where missing) and ``cf_cvg`` uint16; dims (time=1, y, x). ``attrs``:
        ``source_items`` (file names without ``.h5``: the ids of the items
        :func:`payesh.sources.laads.search_granules` makes), ``gap_filled_pixels``
        (how many kept values were gap-filled).
    """
    return mosaic([(Path(p).name.removesuffix(".h5"), read_tile(p)) for p in paths], geobox, month)


def mosaic(
    tiles: Sequence[tuple[str, xr.Dataset]], geobox: GeoBox, month: pd.Timestamp
) -> xr.Dataset:
    """Tiles read by :func:`read_tile`, each with its id, placed on ``geobox`` (the
    first tile to give a pixel a value wins); as :func:`blackmarble_month`."""
    ny, nx = geobox.shape
    radiance = np.full((ny, nx), np.nan, dtype="float32")
    count = np.zeros((ny, nx), dtype="uint16")
    gap = np.zeros((ny, nx), dtype=bool)
    t = geobox.affine
    used = []
    for name, tile in tiles:
        ta = tile.odc.geobox.affine
        col0 = _offset(t.c, ta.c)
        row0 = _offset(ta.f, t.f)
        th, tw = tile["radiance"].shape
        ys, ye = max(0, -row0), min(ny, th - row0)
        xs, xe = max(0, -col0), min(nx, tw - col0)
        if ys >= ye or xs >= xe:
            continue
        src = (slice(ys + row0, ye + row0), slice(xs + col0, xe + col0))
        dst = (slice(ys, ye), slice(xs, xe))
        value = tile["radiance"].values[src]
        fresh = np.isnan(radiance[dst]) & ~np.isnan(value)
        radiance[dst] = np.where(fresh, value, radiance[dst])
        count[dst] = np.where(fresh, tile["cf_cvg"].values[src], count[dst])
        gap[dst] |= fresh & tile["gap_filled"].values[src]
        used.append(name)
    template = xr_zeros(geobox, dtype="float32")
    out = xr.Dataset(
        {"radiance": template.copy(data=radiance), "cf_cvg": template.copy(data=count)}
    )
    out = out.rename({"latitude": "y", "longitude": "x"}) if "latitude" in out.dims else out
    out = out.expand_dims(time=[month])
    out["radiance"].attrs.update(units="nW cm-2 sr-1", long_name="night-time radiance")
    out["cf_cvg"].attrs.update(units="1", long_name="observations behind the composite")
    out.attrs["source_items"] = used
    out.attrs["gap_filled_pixels"] = int(gap.sum())
    return out
