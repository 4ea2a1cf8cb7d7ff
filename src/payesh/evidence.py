"""Evidence for each construction site: a before/after chip and a probability curve.

An inspector should see *why* a site was flagged: what the ground looked like before the
site was first seen and what it looks like now, and how the built-up probability of the
site's pixels rose and stayed up (the persistence rule). Pure functions over arrays the
caller already has (monthly composites or the store's ``pixels`` group, ``builtup_prob``,
sites); the PNGs are written next to the exported sites, under ``<out>/evidence/``.

The store keeps each month's true colour (:func:`~payesh.truecolour.true_colour_layer`,
variable ``true_colour`` of the ``pixels`` group, uint8 (time, band, y, x)), made with the
same stretch as :func:`~payesh.truecolour.true_colour`, so a chip drawn from the store
equals one drawn from the composites. Both are in :mod:`payesh.truecolour` and
re-exported here with the other true-colour names.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr

from payesh.errors import PayeshError
from payesh.indicators.builtup_persistence import BUILTUP_THRESHOLD
from payesh.truecolour import GAMMA as GAMMA
from payesh.truecolour import MAX_REFLECTANCE as MAX_REFLECTANCE
from payesh.truecolour import (
    MISSING_GREY,
    RGB_BANDS,
    TRUE_COLOUR,
    true_colour,
    true_colour_layer,
)
from payesh.truecolour import level_thresholds as level_thresholds

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

EVIDENCE_COLUMNS: tuple[str, str] = ("evidence_chip", "evidence_curve")
"""Columns :func:`write_evidence` adds to the sites: PNG paths relative to the export."""


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
