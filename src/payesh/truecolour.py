"""True colour: Sentinel-2 reflectance stretched to 8-bit RGB, for display and the store.

The store keeps each month's true colour (:func:`true_colour_layer`, variable
``true_colour`` of the ``pixels`` group, uint8 (time, band, y, x)), made with the same
stretch as :func:`true_colour`, so a chip drawn from the store (:mod:`payesh.evidence`)
equals one drawn from the composites. float32 reflectance takes its level from its bits
and the thresholds of :func:`level_thresholds` (a numba kernel, in runs on a pool of
threads): the bytes of the float64 definition, many times faster.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr
from numba import njit

from payesh.errors import PayeshError
from payesh.parallel import each_run

__all__ = [
    "GAMMA",
    "MAX_REFLECTANCE",
    "MISSING_GREY",
    "RGB_BANDS",
    "TRUE_COLOUR",
    "level_thresholds",
    "true_colour",
    "true_colour_layer",
]

RGB_BANDS: tuple[str, str, str] = ("red", "green", "blue")
"""Sentinel-2 bands of a true-colour chip (B04, B03, B02)."""

TRUE_COLOUR = "true_colour"
"""Name of the true-colour variable of the store's ``pixels`` group."""

MAX_REFLECTANCE = 0.3
"""Reflectance shown as full brightness in true colour."""

GAMMA = 1.6
"""True colour is ``(reflectance / MAX_REFLECTANCE) ** (1 / GAMMA)``, clipped to [0, 1]."""

MISSING_GREY = 128
"""Value of the three bands of a pixel with no clear observation."""


def _true_colour_exact(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, max_reflectance: float
) -> np.ndarray:
    """The definition: ``round(clip(r / max, 0, 1) ** (1 / GAMMA) * 255)`` in float64."""
    rgb = np.stack([red, green, blue], axis=-1).astype("float64")
    scaled = np.clip(rgb / max_reflectance, 0.0, 1.0) ** (1 / GAMMA)
    out = np.round(scaled * 255)
    out[~np.isfinite(rgb).all(axis=-1)] = MISSING_GREY
    return out.astype("uint8")


@lru_cache(maxsize=8)
def level_thresholds(max_reflectance: float) -> np.ndarray:
    """For levels 1…255, the least float32 reflectance :func:`_true_colour_exact` gives
    that level or more: the level of a float32 value is then the number of thresholds at
    or below it (the definition is non-decreasing in the reflectance).

    Found by bisection over the bit patterns of non-negative float32 (ordered as the
    values are), 255 levels at once.
    """

    def level(bits: np.ndarray) -> np.ndarray:
        x = bits.astype(np.uint32).view(np.float32)
        v = np.clip(x.astype("float64") / max_reflectance, 0.0, 1.0) ** (1 / GAMMA)
        return np.asarray(np.round(v * 255))

    want = np.arange(1, 256, dtype="float64")
    lo = np.zeros(255, dtype=np.int64)  # level(0.0) = 0 < every wanted level
    top = np.float32(max_reflectance) * np.float32(2)  # level 255
    hi = np.full(255, int(np.array(top, dtype=np.float32).view(np.uint32)), dtype=np.int64)
    while np.any(hi - lo > 1):  # invariant: level(lo) < want <= level(hi)
        mid = (lo + hi) // 2
        ok = level(mid) >= want
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return hi.astype(np.uint32).view(np.float32)


@lru_cache(maxsize=8)
def _level_table(max_reflectance: float) -> tuple[np.ndarray, np.ndarray]:
    """(level of the least float32 of each 16-bit prefix, thresholds)."""
    thresholds = level_thresholds(max_reflectance)
    starts = (np.arange(1 << 15, dtype=np.uint32) << 16).view(np.float32)  # x >= 0
    base = np.searchsorted(thresholds, starts, side="right").astype(np.int32)
    return base, thresholds


@njit(nogil=True, cache=True)
def _levels(band: np.ndarray, out: np.ndarray, missing: np.ndarray, base: Any, thr: Any) -> None:
    bits = band.view(np.uint32)
    for i in range(band.size):
        b = bits[i]
        if (b & 0x7F800000) == 0x7F800000:  # NaN, ±inf
            missing[i] = True
            out[i] = 0
        elif b >> 31:  # negative (or -0.0): level 0
            out[i] = 0
        else:
            lvl = base[b >> 16]
            x = band[i]
            while lvl < 255 and x >= thr[lvl]:  # a 16-bit prefix spans at most 2 levels
                lvl += 1
            out[i] = lvl


_RUN_PX = 1 << 16
"""Pixels a job of :func:`_true_colour_planes` converts (the jobs run on a pool)."""


def _true_colour_planes(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, max_reflectance: float
) -> np.ndarray:
    """:func:`_true_colour_exact` as band planes, ``(3, *shape)``; for float32 input by
    looking the level up from the value's bits and the thresholds (the same bytes — tests
    compare every float32 near each threshold — many times faster, and no float64 copies
    of the month), in runs of :data:`_RUN_PX` pixels on a pool of threads."""
    bands = [np.asarray(a) for a in (red, green, blue)]
    shape = bands[0].shape
    if not all(a.dtype == np.float32 for a in bands):
        return np.moveaxis(_true_colour_exact(red, green, blue, max_reflectance), -1, 0)
    base, thr = _level_table(float(max_reflectance))
    flat = [np.ascontiguousarray(band).reshape(-1) for band in bands]
    n = flat[0].size
    out = np.empty((3, n), dtype="uint8")
    missing = np.zeros(n, dtype=bool)

    def run(lo: int) -> None:
        hi = min(n, lo + _RUN_PX)
        for i in range(3):
            _levels(flat[i][lo:hi], out[i, lo:hi], missing[lo:hi], base, thr)
        gone = missing[lo:hi]
        if gone.any():
            out[:, lo:hi][:, gone] = MISSING_GREY

    each_run(n, _RUN_PX, run, "features")
    return out.reshape(3, *shape)


def _true_colour_kernel(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, max_reflectance: float
) -> np.ndarray:
    """:func:`_true_colour_planes` with the band axis last, ``(*shape, 3)`` (a view of the
    planes: xarray's layer puts the band axis back in front without a copy)."""
    return np.moveaxis(_true_colour_planes(red, green, blue, max_reflectance), 0, -1)


def true_colour(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    max_reflectance: float = MAX_REFLECTANCE,
) -> np.ndarray:
    """RGB uint8 image of surface reflectance.

    Parameters
    ----------
    red, green, blue
        ``(y, x)`` reflectance (unitless, ~0–1), NaN where missing.
    max_reflectance
        Reflectance shown as full brightness (0.3 suits bright arid ground and roofs);
        a gamma of 1/1.6 lifts the dark vegetation and shadows.

    Returns
    -------
    np.ndarray
        ``(y, x, 3)`` uint8; missing pixels are mid grey (128).
    """
    if np.ndim(red) != 2:
        raise PayeshError(f"true_colour needs 2-D bands, got shape {np.shape(red)}")
    return np.ascontiguousarray(_true_colour_kernel(red, green, blue, max_reflectance))


def true_colour_layer(
    composite: xr.Dataset, *, max_reflectance: float = MAX_REFLECTANCE
) -> xr.DataArray:
    """The store's ``true_colour`` of monthly composites: :func:`true_colour` of each month.

    Parameters
    ----------
    composite
        Monthly composite (time, y, x) with ``red``, ``green``, ``blue`` surface
        reflectance (unitless, ~0–1; NaN where no clear observation), lazy or not.
    max_reflectance
        Reflectance shown as full brightness.

    Returns
    -------
    xarray.DataArray
        ``true_colour`` uint8 with dims (time, band, y, x) and ``band`` = red, green,
        blue — the layout GDAL/QGIS and rioxarray read as a 3-band RGB raster per month,
        and ``.plot.imshow(rgb="band")`` in xarray. Pixels without a clear observation
        are grey (128); ``builtup_prob`` is NaN there. 3 bytes a pixel-month before
        compression. Lazy on Dask-backed input.
    """
    missing = [b for b in RGB_BANDS if b not in composite]
    if missing:
        raise PayeshError(f"composite lacks band(s) {missing} for the true-colour layer")
    red, green, blue = (composite[b] for b in RGB_BANDS)
    out = xr.apply_ufunc(
        _true_colour_kernel,
        red,
        green,
        blue,
        kwargs={"max_reflectance": max_reflectance},
        output_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=["uint8"],
        dask_gufunc_kwargs={"output_sizes": {"band": 3}},
        keep_attrs=True,  # the coordinates' attributes (units, CRS); the variable's are set below
    )
    out.attrs = {}
    lead = [d for d in red.dims if d not in ("y", "x")]
    out = out.transpose(*lead, "band", "y", "x").assign_coords(
        band=("band", np.array(RGB_BANDS, dtype=object), {"long_name": "Sentinel-2 band"})
    )
    return out.rename(TRUE_COLOUR).assign_attrs(
        units="1",
        long_name="true colour (Sentinel-2 B04, B03, B02), 8-bit",
        description=(
            "monthly median surface reflectance of red/green/blue stretched for display: "
            f"round(255 * clip(reflectance / {max_reflectance:g}, 0, 1) ** (1 / {GAMMA:g})); "
            f"{MISSING_GREY} in all bands where the month has no clear observation"
        ),
        max_reflectance=float(max_reflectance),
        gamma=float(GAMMA),
        missing_value_grey=MISSING_GREY,
        source="Sentinel-2 L2A monthly composite (source items: the store's source_items['s2'])",
        made_by="payesh.evidence.true_colour_layer",
    )
