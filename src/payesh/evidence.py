"""Evidence for each construction site: a before/after chip and a probability curve.

An inspector should see *why* a site was flagged: what the ground looked like before the
site was first seen and what it looks like now, and how the built-up probability of the
site's pixels rose and stayed up (the persistence rule). Pure functions over arrays the
caller already has (monthly composites, ``builtup_prob``, sites); the PNGs are written
next to the exported sites, under ``<out>/evidence/``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr

from payesh.errors import PayeshError

__all__ = [
    "CHIP_MARGIN_M",
    "probability_curve_png",
    "site_chip_png",
    "site_window",
    "true_colour",
    "write_evidence",
]

CHIP_MARGIN_M = 150.0
"""Ground around a site shown in its chip, metres (15 pixels of 10 m each side)."""

RGB_BANDS: tuple[str, str, str] = ("red", "green", "blue")
"""Sentinel-2 bands of a true-colour chip (B04, B03, B02)."""


def true_colour(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, *, max_reflectance: float = 0.3
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
    rgb = np.stack([red, green, blue], axis=-1).astype("float64")
    if rgb.ndim != 3:
        raise PayeshError(f"true_colour needs 2-D bands, got shape {np.shape(red)}")
    scaled = np.clip(rgb / max_reflectance, 0.0, 1.0) ** (1 / 1.6)
    out = np.round(scaled * 255)
    out[~np.isfinite(rgb).all(axis=-1)] = 128
    return out.astype("uint8")


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


def _figure_png(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if before.shape != after.shape or before.ndim != 3:
        raise PayeshError(f"chip images differ or are not RGB: {before.shape} vs {after.shape}")
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.4), layout="constrained")
    for ax, img, title in zip(axes, (before, after), titles, strict=True):
        ax.imshow(img, extent=extent, interpolation="nearest")
        if outline is not None:
            gpd.GeoSeries([outline]).boundary.plot(ax=ax, color="red", linewidth=1.2)
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
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = pd.to_datetime(np.asarray(times))
    fig, ax = plt.subplots(figsize=(5.0, 2.6), layout="constrained")
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


def write_evidence(
    sites: gpd.GeoDataFrame,
    composites: xr.Dataset,
    prob: xr.DataArray,
    out_dir: str | Path,
    *,
    threshold: float = 0.5,
    margin_m: float = CHIP_MARGIN_M,
) -> gpd.GeoDataFrame:
    """Write a chip and a curve per site under ``out_dir/evidence/``.

    Parameters
    ----------
    sites
        Sites (``site_id``, ``first_seen``, geometry in the city CRS).
    composites
        Monthly composites (time, y, x) with ``red``, ``green``, ``blue`` reflectance, on
        the grid of ``prob``, lazy or not (only the windows around the sites are
        computed); matched to ``prob``'s months by nearest time within 16 days.
    prob
        ``builtup_prob`` (time, y, x), 0–1.
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
    missing = [b for b in RGB_BANDS if b not in composites]
    if missing:
        raise PayeshError(f"composites lack band(s) {missing} for true-colour chips")
    out = Path(out_dir)
    # align the composites' months with prob's (a month without scenes becomes NaN)
    rgb = composites[list(RGB_BANDS)].reindex(
        time=prob["time"].values, method="nearest", tolerance="16D"
    )
    x = np.asarray(prob["x"].values)
    y = np.asarray(prob["y"].values)
    times = np.asarray(prob["time"].values).astype("datetime64[ns]")
    res = sites.copy()
    chips: list[str] = []
    curves: list[str] = []
    for _, site in sites.iterrows():
        sid = str(site["site_id"])
        ys, xs = site_window(site.geometry.bounds, x, y, margin_m=margin_m)
        win = rgb.isel(y=ys, x=xs).compute()
        pw = np.asarray(prob.isel(y=ys, x=xs).values, dtype="float64")
        wx, wy = x[xs], y[ys]
        dx = float(abs(x[1] - x[0])) if x.size > 1 else 10.0
        extent = (wx[0] - dx / 2, wx[-1] + dx / 2, wy[-1] - dx / 2, wy[0] + dx / 2)
        clear = np.isfinite(win["red"].values).mean(axis=(1, 2))
        fs = pd.Timestamp(site["first_seen"]).to_datetime64()
        before_idx = np.flatnonzero(times < fs)
        if before_idx.size:
            rev = before_idx[::-1]  # latest first: argmax picks the latest of the clearest
            b = int(rev[np.argmax(clear[rev])])
        else:
            b = 0
        last3 = np.arange(max(0, times.size - 3), times.size)
        a = int(last3[::-1][np.argmax(clear[last3][::-1])])
        imgs = [true_colour(*(win[band].values[i] for band in RGB_BANDS)) for i in (b, a)]
        month = [f"{pd.Timestamp(times[i]):%Y-%m}" for i in (b, a)]
        chip = site_chip_png(
            imgs[0],
            imgs[1],
            out / "evidence" / f"{sid}-chip.png",
            extent=extent,
            outline=site.geometry,
            titles=(f"{sid} before: {month[0]}", f"after: {month[1]}"),
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
    res["evidence_chip"] = pd.Series(chips, index=res.index, dtype=object)
    res["evidence_curve"] = pd.Series(curves, index=res.index, dtype=object)
    return res
