"""Tile coordinates and pixel-to-tile reductions shared by the indicator modules.

Tile-level outputs have dims ``(…, tile_y, tile_x)`` whose 1-D coordinates are the
projected tile centres (metres, city CRS) and whose 2-D coordinates are the tile name
(``tile``) and the tile centre in WGS84 (``lon``, ``lat``). A pixel grid reduces to tiles
when its pixels nest in tiles: the 10 m city grid (``k = tg.tile_pixels``) or a coarser
aligned grid such as Landsat's on ``aligned_geobox(city, 30)``.
"""

from __future__ import annotations

from typing import Any, Literal

import dask.array as dsa
import numpy as np
import xarray as xr
from numba import njit

from payesh import nanops
from payesh.errors import PayeshError
from payesh.grid import TileGrid

__all__ = [
    "pixels_per_tile",
    "spatial_dims",
    "tile_chunks",
    "tile_coords_dataset",
    "tile_counts",
    "tile_reduce",
    "whole_tiles",
]

Reduction = Literal["sum", "mean", "count", "max"]


def _nanmax(a: np.ndarray, axis: tuple[int, ...] | int | None = None, **_: object) -> np.ndarray:
    assert axis is not None
    return nanops.nanmax(a, axis=axis)  # an all-missing tile stays NaN


def spatial_dims(da: xr.DataArray | xr.Dataset) -> tuple[str, str]:
    """Names of the (row, column) dims of a raster: ``(y, x)`` or ``(latitude, longitude)``."""
    dims = tuple(da.dims)
    for pair in (("y", "x"), ("latitude", "longitude"), ("lat", "lon")):
        if pair[0] in dims and pair[1] in dims:
            return pair
    raise PayeshError(f"raster with dims {dims} has no (y, x) or (latitude, longitude) dims")


def tile_coords_dataset(tg: TileGrid) -> xr.Dataset:
    """An empty dataset holding the tile coordinates of ``tg``.

    Returns
    -------
    xr.Dataset
        Coords ``tile_y``, ``tile_x`` (tile centres, metres in the city CRS), and 2-D
        ``tile`` (names ``r{row:03d}c{col:03d}``), ``lon``, ``lat`` (degrees, WGS84).
    """
    ys, xs = tg.tile_coords()
    lon, lat = tg.centres_lonlat()
    dims = ("tile_y", "tile_x")
    crs = str(tg.geobox.crs)
    return xr.Dataset(
        coords={
            "tile_y": ("tile_y", ys, {"units": "m", "long_name": "tile centre y", "crs": crs}),
            "tile_x": ("tile_x", xs, {"units": "m", "long_name": "tile centre x", "crs": crs}),
            "tile": (dims, tg.names.astype(str), {"long_name": "tile name"}),
            "lon": (dims, lon, {"units": "degrees_east", "long_name": "tile centre longitude"}),
            "lat": (dims, lat, {"units": "degrees_north", "long_name": "tile centre latitude"}),
        }
    )


def pixels_per_tile(da: xr.DataArray, tg: TileGrid) -> int:
    """Pixels of ``da`` along one tile side, from its ``x`` coordinate spacing.

    Raises
    ------
    PayeshError
        If the pixels do not nest in the tiles of ``tg``.
    """
    _, xdim = spatial_dims(da)
    x = np.asarray(da[xdim].values, dtype="float64")
    if x.size < 2:
        raise PayeshError(
            "cannot infer the pixel size of a raster one pixel wide; pass pixels_per_tile"
        )
    res = abs(float(x[1] - x[0]))
    k = tg.tile_size / res
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise PayeshError(
            f"pixel size {res:g} m does not nest in {tg.tile_size:g} m tiles; "
            "use payesh.grid.aligned_geobox for the raster"
        )
    return round(k)


def _covering(da: xr.DataArray, tg: TileGrid, pixels_per_tile: int | None) -> tuple[str, str, int]:
    """``da``'s (row, column) dims and pixels per tile side, checked to cover ``tg``."""
    ydim, xdim = spatial_dims(da)
    k = pixels_per_tile if pixels_per_tile is not None else _pixels_per_tile(da, tg)
    rows, cols = tg.shape
    if da.sizes[ydim] != rows * k or da.sizes[xdim] != cols * k:
        raise PayeshError(
            f"raster of {da.sizes[ydim]}x{da.sizes[xdim]} pixels does not cover the "
            f"{rows}x{cols} tiles of {k}x{k} pixels each"
        )
    return ydim, xdim, k


def tile_reduce(
    da: xr.DataArray,
    tg: TileGrid,
    *,
    how: Reduction = "sum",
    pixels_per_tile: int | None = None,
) -> xr.DataArray:
    """Reduce a pixel raster ``(…, y, x)`` to tiles ``(…, tile_y, tile_x)`` with ``coarsen``.

    Parameters
    ----------
    da
        Raster on a grid whose pixels nest in the tiles of ``tg`` and that covers exactly
        the city grid (e.g. ``tg.geobox`` or ``aligned_geobox(city, 30)``). NaN = missing.
    tg
        The tile grid.
    how
        ``"sum"`` (NaN pixels skipped; a tile with no valid pixel sums to 0), ``"mean"``
        (mean of the valid pixels; NaN where none), ``"count"`` (number of non-NaN pixels)
        or ``"max"`` (largest valid pixel; NaN where none).
    pixels_per_tile
        Pixels per tile side; default: inferred from ``da``'s ``x`` spacing.

    Returns
    -------
    xr.DataArray
        Same dtype family as ``da`` (``count`` is int), lazily if ``da`` is Dask-backed,
        with the coords of :func:`tile_coords_dataset`. Attributes are not kept.
    """
    ydim, xdim, k = _covering(da, tg, pixels_per_tile)
    da = da.drop_vars([c for c in da.coords if c not in da.dims or c in (ydim, xdim)])
    window = da.coarsen({ydim: k, xdim: k})
    if how == "sum":
        out = window.sum()
    elif how == "count":
        out = window.count()
    elif how == "max":
        out = window.reduce(_nanmax)
    elif how == "mean":
        total = window.sum()
        n = window.count()
        out = (total / n.where(n > 0)).astype(da.dtype if da.dtype.kind == "f" else "float64")
    else:
        raise PayeshError(f"tile_reduce: how={how!r} is not one of 'sum', 'mean', 'count', 'max'")
    out = out.rename({ydim: "tile_y", xdim: "tile_x"}).drop_vars(
        ["tile_y", "tile_x"], errors="ignore"
    )
    return out.assign_coords(tile_coords_dataset(tg).coords)


_pixels_per_tile = pixels_per_tile


def whole_tiles(data: dsa.Array, k: int) -> dsa.Array:
    """``data`` (…, y, x) with blocks of whole tiles of ``k`` pixels (re-cut if not)."""
    whole = {
        axis: max(k, max(data.chunks[axis]) // k * k)
        for axis in (data.ndim - 2, data.ndim - 1)
        if any(c % k for c in data.chunks[axis])
    }
    return data.rechunk(whole) if whole else data


def tile_chunks(data: dsa.Array, k: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (tile_y, tile_x) chunks of a reduction of :func:`whole_tiles` blocks to tiles."""
    return tuple(c // k for c in data.chunks[-2]), tuple(c // k for c in data.chunks[-1])


@njit(nogil=True, cache=True)
def _counts_kernel(a: np.ndarray, k: int, above: Any) -> np.ndarray:
    """(2, n, y/k, x/k) int32 of ``a`` (n, y, x): pixels not NaN, pixels > ``above``."""
    n, ny, nx = a.shape
    out = np.zeros((2, n, ny // k, nx // k), dtype=np.int32)
    for i in range(n):
        for y in range(ny):
            ty = y // k
            for tx in range(nx // k):
                valid = 0
                over = 0
                for x in range(tx * k, (tx + 1) * k):
                    v = a[i, y, x]
                    valid += v == v
                    over += v > above
                out[0, i, ty, tx] += valid
                out[1, i, ty, tx] += over
    return out


def _counts_block(block: np.ndarray, k: int, above: Any) -> np.ndarray:
    lead = block.shape[:-2]
    flat = np.ascontiguousarray(block.reshape((-1, *block.shape[-2:])))
    out = _counts_kernel(flat, k, above)
    return out.reshape((2, *lead, block.shape[-2] // k, block.shape[-1] // k))


def tile_counts(
    da: xr.DataArray,
    tg: TileGrid,
    *,
    above: float,
    pixels_per_tile: int | None = None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Pixels per tile ``(…, tile_y, tile_x)`` that are not NaN, and that are ``> above``.

    What ``tile_reduce(da.notnull().astype("float32"), tg, how="sum")`` and
    ``tile_reduce((da > above).where(da.notnull()).astype("float32"), tg, how="sum")``
    give (as int32, which converts to those float32 sums exactly), in one compiled pass
    over the pixels instead of a dozen whole-array temporaries.

    Parameters
    ----------
    da
        Raster ``(…, y, x)`` covering the city grid exactly (as :func:`tile_reduce`);
        NaN = missing. Integer rasters have no missing pixel.
    tg
        The tile grid.
    above
        Threshold, in ``da``'s units, compared in ``da``'s dtype (as numpy compares
        ``da > above``).
    pixels_per_tile
        Pixels per tile side; default: inferred from ``da``'s ``x`` spacing.

    Returns
    -------
    tuple of xr.DataArray
        ``(valid, over)``: int32 pixel counts (unitless) with the coords of
        :func:`tile_coords_dataset` and ``da``'s other dims. Lazy if ``da`` is
        Dask-backed; its blocks are re-cut to whole tiles when they are not.
    """
    ydim, xdim, k = _covering(da, tg, pixels_per_tile)
    lead = [d for d in da.dims if d not in (ydim, xdim)]
    da = da.transpose(*lead, ydim, xdim)
    threshold = np.asarray(above).astype(da.dtype)[()]
    data = da.data
    if isinstance(data, dsa.Array):
        data = whole_tiles(data, k)
        counts = dsa.map_blocks(
            _counts_block,
            data,
            k,
            threshold,
            new_axis=0,
            dtype=np.int32,
            chunks=((2,), *data.chunks[:-2], *tile_chunks(data, k)),
        )
    else:
        counts = _counts_block(np.asarray(data), k, threshold)
    coords = tile_coords_dataset(tg).coords
    dims = (*lead, "tile_y", "tile_x")
    lead_coords = {d: da[d] for d in lead if d in da.coords}
    valid, over = (
        xr.DataArray(counts[i], dims=dims, coords={**lead_coords, **coords}) for i in (0, 1)
    )
    return valid, over
