"""Night lights per tile and month (SPEC §5): the pixel-to-tile overlap weights, and the
sum, mean, lit fraction and valid fraction of each tile.

Night lights stay on their native EPSG:4326 grid; a sparse matrix of overlap weights
(share of each night-light pixel inside each tile) carries them to tiles, so city totals
do not depend on the tile size. :data:`MIN_VALID`, the coverage a tile value needs, is
shared by the other energy indicators.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from scipy import sparse

from payesh.errors import PayeshError
from payesh.grid import TileGrid
from payesh.indicators._common import var_attrs
from payesh.indicators.tiles import spatial_dims, tile_coords_dataset

__all__ = [
    "LIT_THRESHOLD",
    "MIN_CLEAR_NIGHTS",
    "MIN_VALID",
    "ntl_tile_indicators",
    "ntl_tile_weights",
]

LIT_THRESHOLD = 5.0
"""Radiance above which a night-light pixel counts as lit, nW·cm⁻²·sr⁻¹.

Monthly VIIRS DNB composites of unlit land sit at ~0.3–1 nW·cm⁻²·sr⁻¹ of residual
background (Elvidge et al. 2017, Int. J. Remote Sens. 38:5860); thresholds of a few to
~10 nW·cm⁻²·sr⁻¹ are the usual way to delineate lit settlement (review: Levin et al.
2020, Remote Sens. Environ. 237:111443). 5 is a conventional, not a calibrated, choice.
"""

MIN_CLEAR_NIGHTS = 3
"""Cloud-free nights (``cf_cvg``) from which a night-light pixel counts as fully observed.

A monthly composite pixel averages its clear nights; with one or two (monsoon, snow) its
radiance is as noisy as a single overpass (moonlight, haze, residual cloud). Such a pixel
is kept in the tile's sum and mean, but counts only ``cf_cvg / 3`` towards the tile's
``ntl_valid_fraction``, so a month seen on one or two nights is low-coverage (NaN below
:data:`MIN_VALID`, and never an anomaly). On the real Mumbai cube (EOG, 2012–2015)
dry-season pixels have 8–17 clear nights, monsoon ones a median of 0–3. 3 is a
conventional, not a calibrated, choice.
"""

MIN_VALID = 0.5
"""Least share of a tile's area with valid observations for a tile value to be reported.

Below it the tile-month is NaN: half a tile cannot stand for the whole of it."""


def _crs_wkt(gbox: GeoBox) -> str:
    if gbox.crs is None:
        raise PayeshError(f"{gbox!r} has no CRS")
    return gbox.crs.to_wkt()


def _pixel_polygons(gbox: GeoBox, dst_crs: str, *, densify: int = 8) -> np.ndarray:
    """Polygons (in ``dst_crs``) of every pixel of ``gbox``, row-major; edges densified."""
    ny, nx = gbox.shape
    t = gbox.transform
    f = np.linspace(0.0, 1.0, densify + 1)[:-1]
    # ring in pixel units around a unit square, counter-clockwise from (0, 0)
    ring_c = np.concatenate([f, np.ones_like(f), 1 - f, np.zeros_like(f)])
    ring_r = np.concatenate([np.zeros_like(f), f, np.ones_like(f), 1 - f])
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    col = cc.reshape(-1, 1) + ring_c
    row = rr.reshape(-1, 1) + ring_r
    xs = t.a * col + t.b * row + t.c
    ys = t.d * col + t.e * row + t.f
    tr = Transformer.from_crs(_crs_wkt(gbox), dst_crs, always_xy=True)
    px, py = tr.transform(xs, ys)
    coords = np.stack([np.asarray(px), np.asarray(py)], axis=-1)
    return np.asarray(shapely.polygons(coords))


def ntl_tile_weights(ntl_gbox: GeoBox, tg: TileGrid) -> sparse.csr_matrix:
    """Share of every night-light pixel that falls inside every tile.

    Night-light pixel polygons (edges densified with 8 points) are reprojected to the tile
    CRS and intersected exactly with the tile squares (shapely).

    Parameters
    ----------
    ntl_gbox
        The native night-light grid (EPSG:4326, e.g. :func:`payesh.grid.ntl_geobox`).
    tg
        The tile grid.

    Returns
    -------
    scipy.sparse.csr_matrix
        Shape ``(n_tiles, n_ntl_pixels)``, tiles and pixels both row-major;
        ``w[i, j] = area(pixel j ∩ tile i) / area(pixel j)`` (unitless). Columns of pixels
        wholly inside the city grid sum to 1, so Σ over tiles of
        ``w @ radiance`` = Σ radiance × (share of the pixel inside the city).
    """
    crs = _crs_wkt(tg.geobox)
    pixels = _pixel_polygons(ntl_gbox, crs)
    tiles = np.asarray([p.geom for _, p in tg.tile_polygons()])
    tree = shapely.STRtree(tiles)
    pix_idx, tile_idx = tree.query(pixels, predicate="intersects")
    inter = shapely.area(shapely.intersection(pixels[pix_idx], tiles[tile_idx]))
    w = inter / shapely.area(pixels[pix_idx])
    keep = w > 0
    n_tiles = tiles.size
    return sparse.csr_matrix(
        (w[keep], (tile_idx[keep], pix_idx[keep])), shape=(n_tiles, pixels.size)
    )


def _row_area_factor(lat_centres: np.ndarray, res_deg: float) -> np.ndarray:
    """Relative area of equal-angle pixels centred at ``lat_centres`` (sphere), unitless."""
    half = math.radians(abs(res_deg)) / 2
    lat = np.radians(lat_centres)
    return np.sin(lat + half) - np.sin(lat - half)


def _ntl_kernel(
    radiance: np.ndarray,
    cf_cvg: np.ndarray,
    *,
    weights: sparse.csr_matrix,
    area_weights: sparse.csr_matrix,
    shape: tuple[int, int],
    lit_threshold: float,
    min_valid: float,
    min_clear_nights: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lead = radiance.shape[:-2]
    rad = radiance.reshape(-1, radiance.shape[-2] * radiance.shape[-1]).astype("float64")
    cf = cf_cvg.reshape(rad.shape)
    valid = np.isfinite(rad) & (cf > 0)
    r = np.where(valid, rad, 0.0)
    v = valid.astype("float64")
    # coverage: a pixel is fully observed from min_clear_nights cloud-free nights on
    nights = np.clip(np.where(valid, cf, 0).astype("float64"), 0, max(min_clear_nights, 1))
    covered = nights / max(min_clear_nights, 1)
    lit = (valid & (rad > lit_threshold)).astype("float64")

    tile_area = np.asarray(area_weights.sum(axis=1)).ravel()  # (n_tiles,)
    valid_area = np.asarray(area_weights @ v.T).T  # (n, n_tiles)
    covered_area = np.asarray(area_weights @ covered.T).T
    with np.errstate(invalid="ignore", divide="ignore"):
        valid_frac = covered_area / tile_area
        mean = np.asarray(area_weights @ r.T).T / valid_area
        lit_frac = np.asarray(area_weights @ lit.T).T / valid_area
    # Σ radiance × weight over valid pixels, plus the missing pixels' weight filled with
    # the tile's valid-area mean (exact when every pixel is valid).
    observed = np.asarray(weights @ r.T).T
    missing_w = np.asarray(weights @ (1.0 - v).T).T
    total = observed + np.where(missing_w > 0, mean * missing_w, 0.0)
    ok = valid_frac >= min_valid
    out = [
        np.where(ok, total, np.nan),
        np.where(ok, mean, np.nan),
        np.where(ok, lit_frac, np.nan),
        np.nan_to_num(valid_frac, nan=0.0),
    ]
    return tuple(a.reshape(*lead, *shape).astype("float32") for a in out)


def ntl_tile_indicators(
    ntl: xr.Dataset,
    weights: sparse.csr_matrix,
    tg: TileGrid,
    *,
    lit_threshold: float = LIT_THRESHOLD,
    min_valid: float = MIN_VALID,
    min_clear_nights: int = MIN_CLEAR_NIGHTS,
) -> xr.Dataset:
    """Night-light indicators per tile and month.

    Parameters
    ----------
    ntl
        Monthly night lights on their native grid: ``radiance`` (time, y, x) float32
        (or dims latitude, longitude as odc-geo names them),
        nW·cm⁻²·sr⁻¹, NaN where missing, and ``cf_cvg`` (cloud-free observations).
        A pixel with ``cf_cvg == 0`` or NaN radiance is missing, not dark.
    weights
        From :func:`ntl_tile_weights` for this grid and ``tg``.
    tg
        The tile grid.
    lit_threshold
        Radiance above which a pixel is lit, nW·cm⁻²·sr⁻¹ (see :data:`LIT_THRESHOLD`).
    min_valid
        Least valid area share for ``ntl_sum``/``ntl_mean``/``lit_fraction`` to be reported
        (see :data:`MIN_VALID`); below it they are NaN.
    min_clear_nights
        Cloud-free nights from which a pixel counts as fully observed in
        ``ntl_valid_fraction`` (see :data:`MIN_CLEAR_NIGHTS`).

    Returns
    -------
    xr.Dataset
        (time, tile_y, tile_x), lazy if ``ntl`` is: ``ntl_sum``, ``ntl_mean``,
        ``lit_fraction``, ``ntl_valid_fraction``.
    """
    ydim, xdim = spatial_dims(ntl["radiance"])
    ny, nx = ntl.sizes[ydim], ntl.sizes[xdim]
    if weights.shape != (tg.shape[0] * tg.shape[1], ny * nx):
        raise PayeshError(
            f"night-light weights of shape {weights.shape} do not match {tg.shape} tiles and "
            f"a {ny}x{nx} night-light grid; recompute them with ntl_tile_weights"
        )
    lat = np.asarray(ntl[ydim].values, dtype="float64")
    res = abs(float(lat[1] - lat[0])) if lat.size > 1 else 1 / 240
    area = np.repeat(_row_area_factor(lat, res), nx)
    area_weights = sparse.csr_matrix(weights.multiply(area[None, :]))
    # non-index coords (e.g. the night-light grid's spatial_ref) do not describe tiles
    rad = ntl["radiance"].reset_coords(drop=True)
    cf = ntl["cf_cvg"].reset_coords(drop=True)
    if rad.chunks is not None:
        rad = rad.chunk({ydim: -1, xdim: -1})
        cf = cf.chunk({ydim: -1, xdim: -1})
    rows, cols = tg.shape
    outs = xr.apply_ufunc(
        _ntl_kernel,
        rad,
        cf,
        input_core_dims=[[ydim, xdim], [ydim, xdim]],
        output_core_dims=[["tile_y", "tile_x"]] * 4,
        dask="parallelized",
        output_dtypes=["float32"] * 4,
        dask_gufunc_kwargs={"output_sizes": {"tile_y": rows, "tile_x": cols}},
        kwargs={
            "weights": weights,
            "area_weights": area_weights,
            "shape": (rows, cols),
            "lit_threshold": float(lit_threshold),
            "min_valid": float(min_valid),
            "min_clear_nights": int(min_clear_nights),
        },
    )
    names = ("ntl_sum", "ntl_mean", "lit_fraction", "ntl_valid_fraction")
    attrs = (
        var_attrs(
            "nW cm-2 sr-1 (pixel-weighted sum)",
            "sum of night lights",
            "Σ radiance × share of each night-light pixel inside the tile; missing pixels are "
            f"filled with the tile's valid-area mean; NaN when valid area share < {min_valid}",
        ),
        var_attrs(
            "nW cm-2 sr-1",
            "mean night-light radiance",
            "area-weighted mean radiance of the tile's valid night-light area",
        ),
        var_attrs(
            "1",
            "lit fraction",
            f"share of the tile's valid area with radiance > {lit_threshold} nW cm-2 sr-1",
        ),
        var_attrs(
            "1",
            "night-light valid fraction",
            "share of the tile's area observed on clear nights: each night-light pixel "
            f"counts min(cf_cvg, {min_clear_nights}) / {min_clear_nights} (cf_cvg = 0 or "
            "NaN radiance: missing)",
        ),
    )
    ds = xr.Dataset({n: o.assign_attrs(a) for n, o, a in zip(names, outs, attrs, strict=True)})
    return ds.assign_coords(tile_coords_dataset(tg).coords)
