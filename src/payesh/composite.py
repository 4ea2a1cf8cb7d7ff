"""Monthly composites: one clear value per pixel and month, with the count behind it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from payesh import nanops
from payesh.parallel import whole_along

__all__ = ["month_starts", "monthly_composite"]


def month_starts(times: np.ndarray | pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Month start of each timestamp."""
    return pd.DatetimeIndex(times).to_period("M").to_timestamp()


def _nan_reduce(arr: np.ndarray, how: str) -> np.ndarray:
    # all-NaN pixels stay NaN; nanops never warns (catch_warnings is not thread-safe)
    out = nanops.nanmedian(arr, axis=-1) if how == "median" else nanops.nanmean(arr, axis=-1)
    return out.astype("float32")


def monthly_composite(
    ds: xr.Dataset,
    bands: Sequence[str],
    months: pd.DatetimeIndex,
    *,
    how: str = "median",
) -> xr.Dataset:
    """Per-pixel monthly composite of masked observations.

    Parameters
    ----------
    ds
        Masked observations (NaN where not clear), dims (time, y, x), with boolean
        ``clear`` and, optionally, ``observed`` variables.
    bands
        Variables to composite.
    months
        Month starts to produce; a month without observations is all-NaN with count 0.
    how
        ``"median"`` (robust to residual clouds; Sentinel-2) or ``"mean"`` (Landsat LST).

    Returns
    -------
    xarray.Dataset
        ``bands`` (float32) plus ``clear_count`` and ``obs_count`` (int16), dims (time, y, x)
        with ``time`` = month starts.
    """
    obs_months = month_starts(ds.time.values)
    parts = []
    for month in months:
        idx = np.flatnonzero(obs_months == month)
        if len(idx) == 0:
            template = ds[list(bands)].isel(time=0, drop=True)
            empty = xr.full_like(template, np.nan, dtype="float32")
            empty["clear_count"] = xr.zeros_like(template[bands[0]], dtype="int16")
            empty["obs_count"] = xr.zeros_like(template[bands[0]], dtype="int16")
            parts.append(empty)
            continue
        sub = whole_along(ds.isel(time=idx), "time")  # a pixel's scenes in one block
        reduced = xr.apply_ufunc(
            _nan_reduce,
            sub[list(bands)],
            input_core_dims=[["time"]],
            kwargs={"how": how},
            dask="parallelized",
            output_dtypes=[np.float32],
        )
        reduced["clear_count"] = sub["clear"].sum("time").astype("int16")
        observed = sub["observed"] if "observed" in sub else sub["clear"] | True
        reduced["obs_count"] = observed.sum("time").astype("int16")
        parts.append(reduced)
    out = xr.concat(parts, dim=pd.Index(months, name="time"), coords="minimal", compat="override")
    for b in bands:
        out[b].attrs = ds[b].attrs
    out["clear_count"].attrs.update(units="1", long_name="clear observations in the month")
    out["obs_count"].attrs.update(units="1", long_name="observations in the month")
    return out
