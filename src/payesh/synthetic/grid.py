"""The demo city's specification and the pixel grids every sensor is rendered on.

The city is a square in the UTM zone of its centre whose bounds are multiples of
``tile_size`` metres, so the processing grid (``resolution``) and the tiles are exact.
Each sensor gets its own native grid around it, aligned the way the real products are:

* Sentinel-2: 10 m / 20 m in UTM, origin on multiples of 20 m (MGRS tiles start at
  ``x = 100 km·k − 40 m``, i.e. a multiple of 20 m).
* Landsat Collection 2: 30 m in UTM, pixel corners on odd multiples of 15 m.
* VIIRS monthly (EOG VNL): EPSG:4326, 15 arc-second pixels (1/240°), corners on
  multiples of 1/240°.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds


@dataclass(frozen=True)
class DemoSpec:
    """What to generate: where, how big, when, how often, and how the files are written.

    Parameters
    ----------
    name
        City id (``[a-z0-9_-]+``); names the manifest, permits and consumption files.
    center
        ``(lon, lat)`` of the city centre in degrees (WGS84); snapped to the tile grid.
    size_km
        Side of the square city in kilometres (rounded to whole tiles).
    start, end
        First and last month (``YYYY-MM``), both inclusive.
    s2_revisit_days, landsat_revisit_days
        Days between consecutive Sentinel-2 / Landsat acquisitions.
    resolution
        Metres; the processing grid of the manifest (the Sentinel-2 10 m grid).
    tile_size
        Metres; side of a processing tile. The city's UTM bounds are multiples of it.
    seed
        Seed of every random choice; the same seed gives identical files.
    compress
        GDAL compression of the COGs (providers use ``DEFLATE``).
    blocksize
        Internal COG tile size in pixels.
    """

    name: str = "demo"
    center: tuple[float, float] = (44.97, 38.55)
    size_km: float = 4.0
    start: str = "2025-01"
    end: str = "2025-12"
    s2_revisit_days: int = 5
    landsat_revisit_days: int = 16
    resolution: int = 10
    tile_size: int = 1000
    seed: int = 0
    compress: str = "DEFLATE"
    blocksize: int = 512


@dataclass(frozen=True)
class GeneratedCity:
    """Where :func:`generate_city` wrote things (all absolute paths).

    Attributes
    ----------
    root
        The output folder (parent of ``cities/``, ``catalog/``, ...).
    manifest
        ``cities/<name>.yaml``.
    catalog
        ``catalog/catalog.json``, the static STAC catalog.
    permits
        ``permits/<name>.geojson``.
    consumption
        ``consumption/<name>.csv``.
    truth_dir
        ``truth/`` (read it with :func:`payesh.synthetic.load_truth`).
    """

    root: Path
    manifest: Path
    catalog: Path
    permits: Path
    consumption: Path
    truth_dir: Path


@dataclass(frozen=True)
class PixelGrid:
    """A north-up pixel grid: CRS, affine transform and ``(height, width)``."""

    crs: str
    transform: Affine
    shape: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        t = self.transform
        h, w = self.shape
        return (t.c, t.f + t.e * h, t.c + t.a * w, t.f)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units."""
        return float(self.transform.a)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates: ``x`` of shape ``(W,)`` and ``y`` of shape ``(H,)``."""
        t = self.transform
        h, w = self.shape
        x = t.c + t.a * (np.arange(w) + 0.5)
        y = t.f + t.e * (np.arange(h) + 0.5)
        return x, y


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding ``(lon, lat)`` (degrees)."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _snap_down(v: float, step: float, offset: float = 0.0) -> float:
    return math.floor((v - offset) / step) * step + offset


def _snap_up(v: float, step: float, offset: float = 0.0) -> float:
    return math.ceil((v - offset) / step) * step + offset


@dataclass(frozen=True)
class CityGrids:
    """Every grid of one demo city.

    Attributes
    ----------
    epsg
        UTM EPSG code of the city.
    city
        The city at ``resolution`` (the manifest's grid); bounds multiples of ``tile_size``.
    s2_10, s2_20
        Sentinel-2 scene grids (city plus ``margin``), 10 m and 20 m.
    landsat
        Landsat 30 m grid (corners on odd multiples of 15 m) covering the S2 scene.
    viirs
        EPSG:4326 grid of 1/240° pixels covering the city plus about 2 km.
    bbox
        ``(W, S, E, N)`` lon/lat envelope of the city square (degrees).
    """

    epsg: int
    city: PixelGrid
    s2_10: PixelGrid
    s2_20: PixelGrid
    landsat: PixelGrid
    viirs: PixelGrid
    bbox: tuple[float, float, float, float]

    @property
    def city_offset(self) -> tuple[int, int]:
        """``(row, col)`` of the city's north-west pixel inside the 10 m S2 grid."""
        c, s = self.city.transform, self.s2_10.transform
        return (round((s.f - c.f) / 10.0), round((c.c - s.c) / 10.0))


def city_grids(spec: DemoSpec, *, margin_m: float = 500.0) -> CityGrids:
    """Compute the city square and each sensor's native grid around it.

    Parameters
    ----------
    spec
        The demo specification (centre, size, resolution, tile size).
    margin_m
        Metres of Sentinel-2/Landsat scene beyond each side of the city.

    Returns
    -------
    CityGrids
    """
    lon, lat = spec.center
    epsg = utm_epsg(lon, lat)
    crs = f"EPSG:{epsg}"
    to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    cx, cy = to_utm.transform(lon, lat)
    tile = float(spec.tile_size)
    n_tiles = max(1, round(spec.size_km * 1000.0 / tile))
    side = n_tiles * tile
    x0 = round((cx - side / 2.0) / tile) * tile
    y0 = round((cy - side / 2.0) / tile) * tile
    res = float(spec.resolution)
    n_px = round(side / res)
    city = PixelGrid(crs, Affine(res, 0.0, x0, 0.0, -res, y0 + side), (n_px, n_px))

    sx0, sy0 = _snap_down(x0 - margin_m, 20.0), _snap_down(y0 - margin_m, 20.0)
    sx1, sy1 = _snap_up(x0 + side + margin_m, 20.0), _snap_up(y0 + side + margin_m, 20.0)
    w20, h20 = round((sx1 - sx0) / 20.0), round((sy1 - sy0) / 20.0)
    s2_20 = PixelGrid(crs, Affine(20.0, 0.0, sx0, 0.0, -20.0, sy1), (h20, w20))
    s2_10 = PixelGrid(crs, Affine(10.0, 0.0, sx0, 0.0, -10.0, sy1), (2 * h20, 2 * w20))

    lx0, ly0 = _snap_down(sx0, 30.0, 15.0), _snap_down(sy0, 30.0, 15.0)
    lx1, ly1 = _snap_up(sx1, 30.0, 15.0), _snap_up(sy1, 30.0, 15.0)
    landsat = PixelGrid(
        crs,
        Affine(30.0, 0.0, lx0, 0.0, -30.0, ly1),
        (round((ly1 - ly0) / 30.0), round((lx1 - lx0) / 30.0)),
    )

    bbox = transform_bounds(crs, "EPSG:4326", x0, y0, x0 + side, y0 + side, densify_pts=21)
    pad = 0.02  # degrees, about 2 km: VIIRS blooming reaches beyond the city
    k0 = math.floor((bbox[0] - pad) * 240.0)
    k1 = math.ceil((bbox[2] + pad) * 240.0)
    j0 = math.floor((bbox[1] - pad) * 240.0)
    j1 = math.ceil((bbox[3] + pad) * 240.0)
    viirs = PixelGrid(
        "EPSG:4326",
        Affine(1.0 / 240.0, 0.0, k0 / 240.0, 0.0, -1.0 / 240.0, j1 / 240.0),
        (j1 - j0, k1 - k0),
    )
    west, south, east, north = (float(v) for v in bbox)
    return CityGrids(epsg, city, s2_10, s2_20, landsat, viirs, (west, south, east, north))


def rng_for(seed: int, *tags: object) -> np.random.Generator:
    """A generator for one named part of the scenario, independent of call order.

    Parameters
    ----------
    seed
        The city's seed.
    *tags
        Names (and indices) of the part, e.g. ``("s2", 12)``.
    """
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(t).encode()) for t in tags]
    return np.random.default_rng(np.random.SeedSequence(words))
