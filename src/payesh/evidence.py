"""Evidence for each construction site: a before/after chip and a probability curve.

An inspector should see *why* a site was flagged: what the ground looked like before the
site was first seen and what it looks like now, and how the built-up probability of the
site's pixels rose and stayed up (the persistence rule). Pure functions over arrays the
caller already has (monthly composites or the store's ``pixels`` group, ``builtup_prob``,
sites); the PNGs are written next to the exported sites, under ``<out>/evidence/``.

The store keeps each month's true colour (:func:`true_colour_layer`, variable
``true_colour`` of the ``pixels`` group, uint8 (time, band, y, x)), made with the same
stretch as :func:`true_colour`, so a chip drawn from the store equals one drawn from the
composites.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from numba import njit

from payesh.errors import PayeshError
from payesh.indicators.construction import BUILTUP_THRESHOLD
from payesh.parallel import each_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHIP_MARGIN_M",
    "EVIDENCE_COLUMNS",
    "TRUE_COLOUR",
    "probability_curve_png",
    "site_chip_png",
    "site_window",
    "true_colour",
    "true_colour_layer",
    "write_evidence",
    "write_store_evidence",
]

CHIP_MARGIN_M = 150.0
"""Ground around a site shown in its chip, metres (15 pixels of 10 m each side)."""

RGB_BANDS: tuple[str, str, str] = ("red", "green", "blue")
"""Sentinel-2 bands of a true-colour chip (B04, B03, B02)."""

TRUE_COLOUR = "true_colour"
"""Name of the true-colour variable of the store's ``pixels`` group."""

EVIDENCE_COLUMNS: tuple[str, str] = ("evidence_chip", "evidence_curve")
"""Columns :func:`write_evidence` adds to the sites: PNG paths relative to the export."""

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


def site_window(
    geometry_bounds: Sequence[float], x: np.ndarray, y: np.ndarray, *, margin_m: float
) -> tuple[slice, slice]:
    """Index slices ``(ys, xs)`` of the pixels within ``margin_m`` of a site's bounds.

    ``x`` ascending and ``y`` descending pixel-centre coordinates (metres, city CRS).
    """
    x0, y0, x1, y1 = geometry_bounds
    xs = np.flatnonzero((x >= x0 - margin_m) & (x <= x1 + margin_m))
    ys = np.flatnonzero((y >= y0 - margin_m) & (y <= y1 + margin_m))
    if xs.size == 0 or ys.size == 0:
        raise PayeshError(f"site bounds {tuple(geometry_bounds)} lie outside the pixel grid")
    return slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


def _figure_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _draw_outline(ax: Axes, geom: object) -> None:
    """The polygon's rings in red (plain lines: no GeoPandas plot, which redraws the figure)."""
    boundary = shapely.boundary(geom)
    for line in shapely.get_parts(boundary):
        xs, ys = np.asarray(line.coords).T[:2]
        ax.plot(xs, ys, color="red", linewidth=1.2)


def site_chip_png(
    before: np.ndarray,
    after: np.ndarray,
    path: Path,
    *,
    extent: tuple[float, float, float, float],
    outline: object | None = None,
    titles: tuple[str, str] = ("before", "after"),
) -> Path:
    """Write a side-by-side before/after chip.

    Parameters
    ----------
    before, after
        ``(y, x, 3)`` uint8 images (:func:`true_colour`) of the same window.
    path
        PNG file to write.
    extent
        (left, right, bottom, top) of the window, metres in the city CRS.
    outline
        The site polygon (shapely, city CRS), drawn in red on both panels.
    titles
        Panel titles, e.g. the months shown.
    """
    if before.shape != after.shape or before.ndim != 3:
        raise PayeshError(f"chip images differ or are not RGB: {before.shape} vs {after.shape}")
    from matplotlib.figure import Figure

    # a bare Figure (no pyplot): no global state, no interactive redraws
    fig = Figure(figsize=(6.4, 3.4))
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.08, top=0.92, wspace=0.04)
    for ax, img, title in zip(axes, (before, after), titles, strict=True):
        ax.imshow(img, extent=extent, interpolation="nearest")
        if outline is not None:
            _draw_outline(ax, outline)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{extent[1] - extent[0]:.0f} m")
        ax.set_ylabel("")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    return _figure_png(fig, path)


def probability_curve_png(
    times: np.ndarray,
    mean_prob: np.ndarray,
    path: Path,
    *,
    threshold: float,
    first_seen: np.datetime64 | pd.Timestamp | None = None,
    title: str = "",
) -> Path:
    """Write the site's built-up probability by month.

    Parameters
    ----------
    times
        Months (datetime64).
    mean_prob
        Mean built-up probability (0–1) of the site's pixels per month; NaN = not clear.
    path
        PNG file to write.
    threshold
        The built-up threshold of the persistence rule (drawn as a dashed line).
    first_seen
        Month the site was first seen (drawn as a vertical line).
    """
    from matplotlib.figure import Figure

    t = pd.to_datetime(np.asarray(times))
    fig = Figure(figsize=(5.0, 2.6))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.2, top=0.9)
    ok = np.isfinite(mean_prob)
    ax.plot(t[ok], mean_prob[ok], "o-", color="tab:red", label="mean P(built-up)")
    if (~ok).any():
        ax.plot(t[~ok], np.zeros(int((~ok).sum())), "x", color="grey", label="no clear view")
    ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="threshold")
    if first_seen is not None and not pd.isna(first_seen):
        from matplotlib.dates import date2num

        when = float(date2num(pd.Timestamp(first_seen)))
        ax.axvline(when, color="tab:blue", linewidth=1, label="first seen")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("probability (0–1)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return _figure_png(fig, path)


def _site_mean(prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(prob[:, mask], axis=1)


def _prob_colours(prob: np.ndarray) -> np.ndarray:
    """``(t, y, x)`` probability (0–1) as ``(t, y, x, 3)`` uint8 (YlOrRd; NaN grey)."""
    from matplotlib import colormaps

    rgba = colormaps["YlOrRd"](np.nan_to_num(np.clip(prob, 0.0, 1.0), nan=0.0))
    out = np.round(rgba[..., :3] * 255).astype("uint8")
    out[~np.isfinite(prob)] = MISSING_GREY
    return out


def _stored_colours(win: xr.DataArray) -> np.ndarray:
    """The store's ``true_colour`` window as ``(t, y, x, 3)`` uint8.

    Months without it (NaN after a merge with months of an older store) are grey.
    """
    arr = np.asarray(win.transpose("time", "y", "x", "band").values)
    if arr.dtype != np.uint8:
        arr = np.where(np.isfinite(arr), arr, MISSING_GREY).astype("uint8")
    return arr


def _crs_wkt(obj: xr.DataArray | xr.Dataset) -> str | None:
    if "spatial_ref" in obj.coords:
        attrs = obj.coords["spatial_ref"].attrs
        wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
        return None if wkt is None else str(wkt)
    return None


def write_evidence(
    sites: gpd.GeoDataFrame,
    composites: xr.Dataset | None,
    prob: xr.DataArray,
    out_dir: str | Path,
    *,
    threshold: float = BUILTUP_THRESHOLD,
    margin_m: float = CHIP_MARGIN_M,
) -> gpd.GeoDataFrame:
    """Write a chip and a curve per site under ``out_dir/evidence/``.

    Parameters
    ----------
    sites
        Sites (``site_id``, ``first_seen``, geometry; reprojected to ``prob``'s CRS when
        both are known, else taken to be in it).
    composites
        Where the chip's images come from: monthly composites (time, y, x) with ``red``,
        ``green``, ``blue`` reflectance, or a dataset holding the store's ``true_colour``
        (the ``pixels`` group), on the grid of ``prob``, lazy or not (only the windows
        around the sites are computed); matched to ``prob``'s months by nearest time
        within 16 days. ``None``: the chip shows ``prob`` itself (a store without
        imagery).
    prob
        ``builtup_prob`` (time, y, x), 0–1, NaN where the month had no clear view.
    out_dir
        Folder the sites are exported to; the PNGs go to ``out_dir/evidence``.
    threshold
        Built-up threshold, for the curve.
    margin_m
        Ground shown around each site, metres.

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``sites`` with ``evidence_chip`` and ``evidence_curve``: the PNG paths
        relative to ``out_dir`` (``evidence/<site_id>-chip.png``, ``-curve.png``).
        The chip's *before* is the last month before ``first_seen`` with the most clear
        pixels in the window (the first month if none), *after* the latest month with
        the most clear pixels among the last three.
    """
    stored = composites is not None and TRUE_COLOUR in composites
    source: xr.Dataset | xr.DataArray | None = None
    if composites is not None:
        if stored:
            source = composites[TRUE_COLOUR]
        else:
            missing = [b for b in RGB_BANDS if b not in composites]
            if missing:
                raise PayeshError(
                    f"composites lack band(s) {missing} (or a {TRUE_COLOUR!r} variable) "
                    "for true-colour chips"
                )
            source = composites[list(RGB_BANDS)]
        # align the composites' months with prob's (a month without scenes becomes NaN)
        source = source.reindex(time=prob["time"].values, method="nearest", tolerance="16D")
    out = Path(out_dir)
    wkt = _crs_wkt(prob)
    if wkt is not None and sites.crs is not None and len(sites):
        sites = sites.to_crs(wkt)
    x = np.asarray(prob["x"].values)
    y = np.asarray(prob["y"].values)
    times = np.asarray(prob["time"].values).astype("datetime64[ns]")
    res = sites.copy()
    chips: list[str] = []
    curves: list[str] = []
    for _, site in sites.iterrows():
        sid = str(site["site_id"])
        ys, xs = site_window(site.geometry.bounds, x, y, margin_m=margin_m)
        pw = np.asarray(prob.isel(y=ys, x=xs).values, dtype="float64")
        if source is None:
            colours = _prob_colours(pw)
            clear = np.isfinite(pw).mean(axis=(1, 2))
        elif stored:
            assert isinstance(source, xr.DataArray)
            win = source.isel(y=ys, x=xs).compute()
            colours = _stored_colours(win)
            has = np.isfinite(np.asarray(win.values, dtype="float64")).all(axis=(1, 2, 3))
            clear = np.isfinite(pw).mean(axis=(1, 2)) * has
        else:
            win_ds = source.isel(y=ys, x=xs).compute()
            colours = np.stack(
                [
                    true_colour(*(win_ds[band].values[i] for band in RGB_BANDS))
                    for i in range(times.size)
                ]
            )
            clear = np.isfinite(win_ds["red"].values).mean(axis=(1, 2))
        wx, wy = x[xs], y[ys]
        dx = float(abs(x[1] - x[0])) if x.size > 1 else 10.0
        extent = (wx[0] - dx / 2, wx[-1] + dx / 2, wy[-1] - dx / 2, wy[0] + dx / 2)
        fs = pd.Timestamp(site["first_seen"]).to_datetime64()
        before_idx = np.flatnonzero(times < fs)
        if before_idx.size:
            rev = before_idx[::-1]  # latest first: argmax picks the latest of the clearest
            b = int(rev[np.argmax(clear[rev])])
        else:
            b = 0
        last3 = np.arange(max(0, times.size - 3), times.size)
        a = int(last3[::-1][np.argmax(clear[last3][::-1])])
        month = [f"{pd.Timestamp(times[i]):%Y-%m}" for i in (b, a)]
        what = "" if source is not None else " P(built-up)"
        chip = site_chip_png(
            colours[b],
            colours[a],
            out / "evidence" / f"{sid}-chip.png",
            extent=extent,
            outline=site.geometry,
            titles=(f"{sid} before{what}: {month[0]}", f"after{what}: {month[1]}"),
        )
        # site pixels: centres inside the polygon
        gx, gy = np.meshgrid(wx, wy)
        inside = shapely.contains_xy(site.geometry, gx, gy)
        curve = probability_curve_png(
            times,
            _site_mean(pw, inside),
            out / "evidence" / f"{sid}-curve.png",
            threshold=threshold,
            first_seen=site["first_seen"],
            title=f"{sid}: built-up probability, first seen {pd.Timestamp(fs):%Y-%m}",
        )
        chips.append(chip.relative_to(out).as_posix())
        curves.append(curve.relative_to(out).as_posix())
    res[EVIDENCE_COLUMNS[0]] = pd.Series(chips, index=res.index, dtype=object)
    res[EVIDENCE_COLUMNS[1]] = pd.Series(curves, index=res.index, dtype=object)
    return res


def write_store_evidence(
    sites: gpd.GeoDataFrame,
    pixels: xr.Dataset,
    out_dir: str | Path,
    *,
    threshold: float = BUILTUP_THRESHOLD,
) -> gpd.GeoDataFrame:
    """:func:`write_evidence` from the store's ``pixels`` group alone.

    The chip shows the stored ``true_colour`` (the probability where a store has none),
    the curve the stored ``builtup_prob``.

    Parameters
    ----------
    sites
        The sites (:func:`payesh.store.open_sites`), any CRS.
    pixels
        The ``pixels`` group (:func:`payesh.store.open_indicators` with
        ``group="pixels"``), lazy: only the windows around the sites are read.
    out_dir
        Folder the sites are exported to.
    threshold
        Built-up threshold, for the curve.
    """
    if "builtup_prob" not in pixels:
        raise PayeshError("the pixels group has no 'builtup_prob': no evidence can be drawn")
    images = pixels if TRUE_COLOUR in pixels else None
    return write_evidence(sites, images, pixels["builtup_prob"], out_dir, threshold=threshold)
