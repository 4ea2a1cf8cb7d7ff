"""XYZ map tiles (Web Mercator, 256 px PNG) rendered from a layer of the store, and legends.

Pure functions over numpy arrays: the caller picks the window of the layer that a tile
covers (:func:`source_window`), loads only that, and :func:`render_tile` warps it onto
the tile's grid and colours it with the layer's :class:`Style`. Missing values (NaN) are
transparent.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import matplotlib as mpl
import numpy as np
import pandas as pd
from affine import Affine
from PIL import Image
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject

__all__ = [
    "TILE_PX",
    "Grid",
    "Style",
    "empty_tile",
    "layer_style",
    "legend",
    "render_tile",
    "source_window",
    "tile_bounds",
    "to_float",
]

TILE_PX = 256
MAX_ZOOM = 22
_HALF = 20037508.342789244  # half the Web Mercator world, m
WEB_MERCATOR = CRS.from_epsg(3857)


@dataclass(frozen=True)
class Grid:
    """A layer's pixel grid, north-up: ``transform`` maps (col, row) to the CRS (m)."""

    crs: CRS
    transform: Affine
    height: int
    width: int
    flip_y: bool  # the stored rows run south to north

    @classmethod
    def from_coords(cls, crs: CRS, ys: np.ndarray, xs: np.ndarray, step: float | None) -> Grid:
        """The grid of pixel centres ``ys``, ``xs`` (step used when a dimension has one cell)."""
        dx = float(xs[1] - xs[0]) if xs.size > 1 else float(step or 1.0)
        dy = float(ys[1] - ys[0]) if ys.size > 1 else -float(step or 1.0)
        flip = dy > 0
        top = float(ys.max()) + abs(dy) / 2
        left = float(xs[0]) - dx / 2
        return cls(crs, Affine(dx, 0.0, left, 0.0, -abs(dy), top), ys.size, xs.size, flip)


@dataclass(frozen=True)
class Style:
    """How a layer is coloured: a matplotlib colour map over [vmin, vmax] (in ``units``)."""

    cmap: str
    vmin: float
    vmax: float
    units: str
    label: str
    is_date: bool = False


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Web Mercator bounds (left, bottom, right, top; m) of XYZ tile ``z/x/y``."""
    n = 2**z
    size = 2 * _HALF / n
    left = -_HALF + x * size
    top = _HALF - y * size
    return left, top - size, left + size, top


def source_window(grid: Grid, z: int, x: int, y: int) -> tuple[slice, slice, Affine] | None:
    """Rows/columns of ``grid`` (as stored) that tile ``z/x/y`` needs, and their transform.

    Returns None when the tile does not touch the grid. One pixel of margin is kept so
    that the warp has neighbours at the edges.
    """
    left, bottom, right, top = tile_bounds(z, x, y)
    tr = _from_mercator(grid.crs.to_wkt())
    n = 21
    xs = np.concatenate(
        [
            np.linspace(left, right, n),
            np.full(n, right),
            np.linspace(left, right, n),
            np.full(n, left),
        ]
    )
    ys = np.concatenate(
        [
            np.full(n, top),
            np.linspace(bottom, top, n),
            np.full(n, bottom),
            np.linspace(bottom, top, n),
        ]
    )
    sx, sy = tr.transform(xs, ys)
    sx, sy = np.asarray(sx), np.asarray(sy)
    if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
        return None
    inv = ~grid.transform
    cols, rows = inv * (sx, sy)
    c0 = max(0, math.floor(float(np.min(cols))) - 1)
    c1 = min(grid.width, math.ceil(float(np.max(cols))) + 1)
    r0 = max(0, math.floor(float(np.min(rows))) - 1)
    r1 = min(grid.height, math.ceil(float(np.max(rows))) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    win_tr = grid.transform * Affine.translation(c0, r0)
    if grid.flip_y:
        rows_stored = slice(grid.height - r1, grid.height - r0)
    else:
        rows_stored = slice(r0, r1)
    return rows_stored, slice(c0, c1), win_tr


@lru_cache(maxsize=64)
def _from_mercator(crs_wkt: str) -> Transformer:
    """Web Mercator → a grid CRS (building a transformer costs milliseconds; reuse it)."""
    return Transformer.from_crs(WEB_MERCATOR, CRS.from_wkt(crs_wkt), always_xy=True)


def to_float(values: np.ndarray) -> np.ndarray:
    """A layer's values as float32: dates as decimal years, booleans as 0/1, NaN = missing."""
    if np.issubdtype(values.dtype, np.datetime64):
        dt = pd.DatetimeIndex(values.ravel())
        years = dt.year + (dt.day_of_year - 1) / np.where(dt.is_leap_year, 366.0, 365.0)
        return np.asarray(years, dtype="float32").reshape(values.shape)
    return np.asarray(values, dtype="float32")


def render_tile(
    window: np.ndarray,
    grid: Grid,
    win_transform: Affine,
    z: int,
    x: int,
    y: int,
    style: Style,
    *,
    smooth: bool = False,
) -> bytes:
    """Warp a window of a layer onto tile ``z/x/y`` and colour it; PNG bytes (RGBA).

    Parameters
    ----------
    window
        The values of the window as stored (rows in the stored order), float.
    grid
        The layer's grid (for its CRS and row order).
    win_transform
        North-up transform of the window (from :func:`source_window`).
    style
        Colour map and range.
    smooth
        Bilinear resampling (continuous pixel layers); nearest otherwise (tiles, dates).
    """
    src = np.asarray(window, dtype="float32")
    if grid.flip_y:
        src = src[::-1, :]
    left, _bottom, right, top = tile_bounds(z, x, y)
    size = (right - left) / TILE_PX
    dst = np.full((TILE_PX, TILE_PX), np.nan, dtype="float32")
    reproject(
        source=np.ascontiguousarray(src),
        destination=dst,
        src_transform=win_transform,
        src_crs=grid.crs.to_wkt(),
        src_nodata=np.nan,
        dst_transform=Affine(size, 0.0, left, 0.0, -size, top),
        dst_crs="EPSG:3857",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear if smooth else Resampling.nearest,
    )
    return colourize(dst, style)


def colourize(values: np.ndarray, style: Style) -> bytes:
    """RGBA PNG of ``values`` coloured by ``style``; NaN is transparent."""
    cmap = mpl.colormaps[style.cmap]
    span = style.vmax - style.vmin or 1.0
    norm = np.clip((values - style.vmin) / span, 0.0, 1.0)
    rgba = cmap(np.nan_to_num(norm), bytes=True)
    rgba[..., 3] = np.where(np.isfinite(values), 255, 0).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def empty_tile() -> bytes:
    """A fully transparent 256 px PNG."""
    buf = io.BytesIO()
    Image.new("RGBA", (TILE_PX, TILE_PX), (0, 0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- styles

_DIVERGING = ("anomaly", "trend")
_FIXED: dict[str, tuple[str, float, float]] = {
    "builtup_prob": ("YlOrRd", 0.0, 1.0),
    "builtup_fraction": ("YlOrRd", 0.0, 1.0),
    "load_suspect": ("Reds", 0.0, 1.0),
    "ntl_trend_p": ("viridis_r", 0.0, 1.0),
}
_CMAPS: dict[str, str] = {
    "ntl_sum": "magma",
    "ntl_mean": "magma",
    "radiance": "magma",
    "lst_mean": "inferno",
    "lst_hotspot": "inferno",
    "electricity_mwh": "plasma",
    "new_builtup_m2": "OrRd",
    "unauthorized_m2": "Reds",
    "unauthorized_sites": "Reds",
    "load_suspect_score": "Reds",
    "cf_cvg": "cividis",
    "first_seen": "viridis",
}


def layer_style(name: str, units: str, label: str, sample: np.ndarray, *, is_date: bool) -> Style:
    """The colour map and range of layer ``name``.

    Fractions and probabilities span [0, 1]; anomalies and trends get a diverging map
    centred on 0; other layers span the 2nd–98th percentile of ``sample`` (float values of
    the layer over all months; dates as decimal years).
    """
    if name in _FIXED or (name.endswith("fraction") and units == "1"):
        cmap, lo, hi = _FIXED.get(name, ("viridis", 0.0, 1.0))
        return Style(cmap, lo, hi, units, label, is_date)
    finite = sample[np.isfinite(sample)]
    if any(k in name for k in _DIVERGING) and not name.endswith("_p"):
        m = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
        m = m or 1.0
        return Style("RdBu_r", -m, m, units, label, is_date)
    if finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
        if is_date:
            lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = 0.0, 1.0
    if not is_date and lo >= 0 and name not in ("lst_mean", "lst_hotspot"):
        lo = 0.0  # amounts start at zero
    if hi <= lo:
        hi = lo + 1.0
    return Style(_CMAPS.get(name, "viridis"), lo, hi, units, label, is_date)


def legend(style: Style, *, stops: int = 9) -> dict[str, object]:
    """A layer's legend: colour stops (hex) from ``vmin`` to ``vmax``, units and label."""
    cmap = mpl.colormaps[style.cmap]
    colours = [mpl.colors.to_hex(cmap(i / (stops - 1))) for i in range(stops)]
    return {
        "cmap": style.cmap,
        "vmin": style.vmin,
        "vmax": style.vmax,
        "units": "year" if style.is_date else style.units,
        "label": style.label,
        "colors": colours,
    }
