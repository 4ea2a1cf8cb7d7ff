"""Land surface temperature per tile and month (SPEC §5): the tile mean, its valid
fraction, the tile's hot spot, and their anomalies against the tile's own history,
relative to the rest of the city in the same month.
"""

from __future__ import annotations

import xarray as xr

from payesh.grid import TileGrid
from payesh.indicators._common import var_attrs
from payesh.indicators.anomaly import difference_from_baseline, median_over
from payesh.indicators.nightlights import MIN_VALID
from payesh.indicators.tiles import spatial_dims, tile_reduce

__all__ = [
    "lst_tile_indicators",
]


def _lst_tile_terms(
    lst: xr.DataArray, lst_count: xr.DataArray, tg: TileGrid, pixels_per_tile: int | None
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Per tile: mean of the valid pixels, their count, and the hottest valid pixel above
    the month's city-median LST (:func:`lst_tile_indicators`)."""
    valid = lst.notnull() & (lst_count > 0)
    x = lst.where(valid)
    mean = tile_reduce(x, tg, how="mean", pixels_per_tile=pixels_per_tile)
    n = tile_reduce(x, tg, how="count", pixels_per_tile=pixels_per_tile)
    # A compound of a few Landsat pixels moves a 1 km tile's mean by a fraction of a
    # degree; its hottest pixel moves by several. The hot spot is the tile's hottest valid
    # pixel above the month's city-median LST, judged against its own history.
    pixel_median = median_over(x, list(spatial_dims(x)))
    hotspot = tile_reduce(x - pixel_median, tg, how="max", pixels_per_tile=pixels_per_tile)
    return mean, n, hotspot


def lst_tile_indicators(
    lst: xr.DataArray,
    lst_count: xr.DataArray,
    tg: TileGrid,
    *,
    pixels_per_tile: int | None = None,
    min_valid: float = MIN_VALID,
) -> xr.Dataset:
    """Land surface temperature per tile and month.

    Parameters
    ----------
    lst
        (time, y, x) float32, °C, NaN missing, on a grid nesting in the tiles
        (``aligned_geobox(city, 30)``).
    lst_count
        (time, y, x) clear observations behind each pixel; 0 = missing.
    tg
        The tile grid.
    pixels_per_tile
        Pixels of ``lst`` per tile side; default from its ``x`` spacing.
    min_valid
        Least valid pixel share for ``lst_mean`` (a partly cloudy tile's mean is biased
        towards whatever stayed clear), see :data:`MIN_VALID`.

    Returns
    -------
    xr.Dataset
        (time, tile_y, tile_x): ``lst_mean`` (°C), ``lst_valid_fraction`` (unitless),
        ``lst_anomaly`` (°C: how much more the tile exceeds the city's median LST
        than it usually does; baseline rule as in :func:`ntl_anomaly`).
    """
    # the pixel terms per month (each month's reductions are its own): temporaries of
    # one month, not of the whole (time, y, x) cube, when the months are in memory
    if lst.chunks is None and "time" in lst.dims and lst.sizes["time"] > 1:
        terms = [
            _lst_tile_terms(lst.isel(time=[i]), lst_count.isel(time=[i]), tg, pixels_per_tile)
            for i in range(lst.sizes["time"])
        ]
        mean, n, hotspot = (xr.concat(parts, dim="time") for parts in zip(*terms, strict=True))
    else:
        mean, n, hotspot = _lst_tile_terms(lst, lst_count, tg, pixels_per_tile)
    k = pixels_per_tile or lst.sizes[spatial_dims(lst)[0]] // tg.shape[0]
    vf = (n / float(k * k)).astype("float32")
    mean = mean.where(vf >= min_valid).astype("float32")
    # Heat is judged relative to the rest of the city in the same month: the seasonal
    # cycle (±20 °C) and a month's weather cancel, a tile that heats up does not.
    anom = difference_from_baseline(mean - median_over(mean, ["tile_y", "tile_x"]), vf, min_valid)
    hotspot = hotspot.where(vf >= min_valid).astype("float32")
    hot_anom = difference_from_baseline(hotspot, vf, min_valid)
    return xr.Dataset(
        {
            "lst_hotspot": hotspot.assign_attrs(
                var_attrs(
                    "degC",
                    "LST hot spot",
                    "the tile's hottest valid pixel minus the month's city-median LST",
                )
            ),
            "lst_hotspot_anomaly": hot_anom.assign_attrs(
                var_attrs(
                    "degC",
                    "LST hot-spot anomaly",
                    "lst_hotspot minus its median in the same calendar month of other years "
                    "(≥2), else of the preceding months",
                )
            ),
            "lst_mean": mean.assign_attrs(
                var_attrs("degC", "land surface temperature", "mean LST of the tile's valid pixels")
            ),
            "lst_valid_fraction": vf.assign_attrs(
                var_attrs("1", "LST valid fraction", "share of the tile's pixels with a clear LST")
            ),
            "lst_anomaly": anom.assign_attrs(
                var_attrs(
                    "degC",
                    "LST anomaly",
                    "the tile's excess over the city-median LST of the month, minus the "
                    "median of that excess in the same calendar month of other years (≥2), "
                    "else of the preceding months",
                )
            ),
        }
    )
