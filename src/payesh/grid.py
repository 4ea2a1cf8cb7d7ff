"""The pixel and tile grids of a city, as GeoBoxes.

The city grid covers the manifest's bbox in the city's projected CRS, snapped outward
to whole tiles whose edges fall on multiples of ``tile_size`` metres (an overhang of
less than 5 % of a tile is ignored, but a city always gets at least one tile). Tiles are numbered
from the north-west corner and named ``r{row:03d}c{col:03d}``; tile ``(r, c)`` is exactly
pixels ``[r*k:(r+1)*k, c*k:(c+1)*k]`` of the city grid (``k = tile_size / resolution``),
so every pixel belongs to exactly one tile.

Night lights are kept on their native EPSG:4326 grid (15 arc-seconds, 1/240 degree),
aligned to multiples of the pixel size as VIIRS/Black Marble products are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from odc.geo import geom
from odc.geo.geobox import GeoBox

from payesh.city import City

__all__ = [
    "NTL_RESOLUTION_DEG",
    "TileGrid",
    "aligned_geobox",
    "city_geobox",
    "grid_origin",
    "ntl_geobox",
    "tile_grid",
    "tile_name",
]

NTL_RESOLUTION_DEG = 1.0 / 240.0  # 15 arc-seconds: VIIRS DNB monthly / Black Marble

# A bbox edge closer than this share of a tile to a tile boundary is taken as on it: the
# lon/lat envelope of a projected square overhangs the square by a few tens of metres
# (grid convergence), which must not add a whole row or column of tiles.
SNAP_TOLERANCE = 0.05


def tile_name(row: int, col: int) -> str:
    """Name of the tile at ``row``, ``col`` (from the north-west corner)."""
    return f"r{row:03d}c{col:03d}"


def _projected_bounds(city: City) -> tuple[float, float, float, float]:
    poly = geom.box(*city.bbox, crs="EPSG:4326").to_crs(city.crs, resolution=math.inf)
    # to_crs densifies the edges, so the projected box contains the whole lon/lat box.
    b = poly.boundingbox
    t = city.tile_size
    tol = SNAP_TOLERANCE * t
    left, right = _snap(b.left, b.right, t, tol)
    bottom, top = _snap(b.bottom, b.top, t, tol)
    return left * t, bottom * t, right * t, top * t


def _snap(lo: float, hi: float, t: float, tol: float) -> tuple[int, int]:
    """Tile indices ``[first, stop)`` covering ``lo..hi`` (metres), edges within ``tol`` ignored.

    A city narrower than twice the tolerance still gets the one tile holding its centre
    (ignoring the overhang on both sides would leave it no tile at all).
    """
    first = math.floor((lo + tol) / t)
    stop = math.ceil((hi - tol) / t)
    if stop <= first:
        first = math.floor((lo + hi) / 2 / t)
        stop = first + 1
    return first, stop


def city_geobox(city: City) -> GeoBox:
    """The city's pixel grid: ``city.resolution`` metres in ``city.crs``, snapped to whole tiles."""
    return aligned_geobox(city, city.resolution)


def aligned_geobox(city: City, resolution: float) -> GeoBox:
    """The city's extent on a coarser grid whose pixels nest exactly in tiles.

    Parameters
    ----------
    city
        The city.
    resolution
        Wanted pixel size, metres (e.g. 30 for Landsat). The pixel size used is the
        closest one that divides ``tile_size`` evenly, so tile sums stay exact.
    """
    per_tile = max(1, round(city.tile_size / resolution))
    res = city.tile_size / per_tile
    left, bottom, right, top = _projected_bounds(city)
    # built from whole tiles, not snapped by GeoBox.from_bbox: with a pixel size such as
    # 320/21 m, snapping the bounds to multiples of it in floating point can lose or add
    # a pixel, and the grid would no longer end on the tiles' edges
    cols = round((right - left) / city.tile_size) * per_tile
    rows = round((top - bottom) / city.tile_size) * per_tile
    return GeoBox((rows, cols), Affine(res, 0.0, left, 0.0, -res, top), city.crs)


def ntl_geobox(
    city: City,
    resolution: float = NTL_RESOLUTION_DEG,
    *,
    origin: tuple[float, float] = (0.0, 0.0),
) -> GeoBox:
    """Native night-light grid (EPSG:4326) covering the city's projected extent.

    Parameters
    ----------
    city
        The city.
    resolution
        Pixel size, degrees (15 arc-seconds for VIIRS monthly and Black Marble).
    origin
        A (lon, lat) pixel corner of the product's own grid, degrees. Black Marble tiles
        have corners on whole multiples of the pixel size (the default); EOG's VIIRS
        monthly composites are shifted by half a pixel (corner at -180.00208°, 75.00208°).
        Use :func:`grid_origin` to read it from a file, so that no pixel is resampled.
    """
    left, bottom, right, top = _projected_bounds(city)
    ll = geom.box(left, bottom, right, top, crs=city.crs).to_crs("EPSG:4326", resolution=math.inf)
    b = ll.boundingbox
    ox, oy = origin
    w = ox + math.floor((b.left - ox) / resolution + 1e-9) * resolution
    s = oy + math.floor((b.bottom - oy) / resolution + 1e-9) * resolution
    e = ox + math.ceil((b.right - ox) / resolution - 1e-9) * resolution
    n = oy + math.ceil((b.top - oy) / resolution - 1e-9) * resolution
    width = round((e - w) / resolution)
    height = round((n - s) / resolution)
    transform = Affine(resolution, 0.0, w, 0.0, -resolution, n)
    return GeoBox((height, width), transform, "EPSG:4326")


def grid_origin(transform: tuple[float, ...] | list[float]) -> tuple[float, float]:
    """A pixel corner ``(x, y)`` of a north-up grid from its affine ``(a, b, c, d, e, f)``."""
    a, _, c, _, e, f = transform[:6]
    return (c % abs(a), f % abs(e))


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a city grid.

    Attributes
    ----------
    geobox : GeoBox
        The city pixel grid the tiles partition.
    tile_pixels : int
        Side of a tile in pixels of ``geobox``.
    """

    geobox: GeoBox
    tile_pixels: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        ny, nx = self.geobox.shape
        return ny // self.tile_pixels, nx // self.tile_pixels

    @property
    def tile_size(self) -> float:
        """Side of a tile, in units of the CRS (metres)."""
        return abs(self.geobox.resolution.x) * self.tile_pixels

    @cached_property
    def names(self) -> np.ndarray:
        """Tile names, an array of shape :attr:`shape`."""
        rows, cols = self.shape
        return np.array([[tile_name(r, c) for c in range(cols)] for r in range(rows)], dtype=object)

    def tile_geobox(self, row: int, col: int) -> GeoBox:
        """The pixel grid of one tile."""
        k = self.tile_pixels
        return self.geobox[row * k : (row + 1) * k, col * k : (col + 1) * k]

    def tile_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Projected coordinates of the tile centres: ``(y of each row, x of each col)``, metres."""
        rows, cols = self.shape
        left, _, _, top = self.geobox.boundingbox
        t = self.tile_size
        ys = top - (np.arange(rows) + 0.5) * t
        xs = left + (np.arange(cols) + 0.5) * t
        return ys, xs

    def tile_polygons(self) -> list[tuple[str, geom.Geometry]]:
        """(name, polygon in the city CRS) of every tile, row by row."""
        rows, cols = self.shape
        return [
            (tile_name(r, c), self.tile_geobox(r, c).extent)
            for r in range(rows)
            for c in range(cols)
        ]

    def centres_lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile centres in WGS84: ``(lon, lat)`` arrays of shape :attr:`shape`, degrees."""
        from pyproj import Transformer

        ys, xs = self.tile_coords()
        xx, yy = np.meshgrid(xs, ys)
        crs = self.geobox.crs
        assert crs is not None, "a city grid always has a CRS"
        tr = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(xx, yy)
        return np.asarray(lon), np.asarray(lat)


def tile_grid(city: City) -> TileGrid:
    """The city's tiles over :func:`city_geobox`."""
    return TileGrid(city_geobox(city), city.tile_pixels)
