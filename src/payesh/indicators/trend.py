"""Trends of each tile's night lights (SPEC §5): Theil–Sen slope and Mann–Kendall
significance, a numpy kernel over a trailing ``time`` axis lifted with
:func:`xarray.apply_ufunc`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import ndtr

from payesh import nanops
from payesh.indicators._common import var_attrs
from payesh.parallel import whole_along

__all__ = [
    "ntl_trend",
]

_DAYS_PER_YEAR = 365.25


def _trend_kernel(
    values: np.ndarray, *, years: np.ndarray, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Theil–Sen slope and Mann–Kendall two-sided p-value along the last axis."""
    x = values.astype("float64")
    n_t = x.shape[-1]
    i, j = np.triu_indices(n_t, k=1)
    dx = x[..., j] - x[..., i]  # pairs with time j later than time i
    dt = years[j] - years[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = dx / dt
    slopes = np.where(dt > 0, slopes, np.nan)
    finite = np.isfinite(x)
    n = finite.sum(axis=-1)
    slope = nanops.nanmedian(slopes, axis=-1) if slopes.shape[-1] else np.full(n.shape, np.nan)
    # Mann–Kendall S with the tie-corrected variance (as scipy.stats.kendalltau,
    # method="asymptotic": no continuity correction).
    s = np.nansum(np.sign(dx), axis=-1)
    eq = (x[..., :, None] == x[..., None, :]) & finite[..., :, None] & finite[..., None, :]
    c = eq.sum(axis=-1)  # size of the tie group of each value (1 = untied)
    ties = np.where(finite, (c - 1) * (2 * c + 5), 0).sum(axis=-1)
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = s / np.sqrt(var)
    p = 2.0 * ndtr(-np.abs(z))
    p = np.where(var > 0, p, 1.0)
    ok = n >= min_points
    return np.where(ok, slope, np.nan).astype("float32"), np.where(ok, p, np.nan).astype("float32")


def ntl_trend(ntl_sum: xr.DataArray, *, min_points: int = 4) -> xr.Dataset:
    """Theil–Sen trend and Mann–Kendall significance of each tile's night lights.

    Parameters
    ----------
    ntl_sum
        (time, tile_y, tile_x), NaN when missing (skipped).
    min_points
        Least number of valid months; fewer → NaN.

    Returns
    -------
    xr.Dataset
        (tile_y, tile_x): ``ntl_trend`` (median of pairwise slopes, units of ``ntl_sum``
        per year, time in years of 365.25 days) and ``ntl_trend_p`` (two-sided p-value of
        the Mann–Kendall test, normal approximation with tie correction).
    """
    t = ntl_sum["time"].values.astype("datetime64[ns]").astype("int64")
    years = (t - t[0]) / (86400e9 * _DAYS_PER_YEAR)
    slope, p = xr.apply_ufunc(
        _trend_kernel,
        whole_along(ntl_sum, "time"),
        input_core_dims=[["time"]],
        output_core_dims=[[], []],
        dask="parallelized",
        output_dtypes=["float32", "float32"],
        kwargs={"years": years, "min_points": int(min_points)},
    )
    units = ntl_sum.attrs.get("units", "nW cm-2 sr-1 (pixel-weighted sum)")
    return xr.Dataset(
        {
            "ntl_trend": slope.assign_attrs(
                var_attrs(f"{units} per year", "night-light trend", "Theil–Sen slope per year")
            ),
            "ntl_trend_p": p.assign_attrs(
                var_attrs(
                    "1",
                    "night-light trend p-value",
                    "two-sided Mann–Kendall p-value (normal approximation, tie-corrected)",
                )
            ),
        }
    )
