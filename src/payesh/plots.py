"""Figures of the energy indicators a planner reads: one tile's night lights through time,
and the city map of night-light trends.

Both take the ``tiles`` dataset of :func:`payesh.open_indicators` (lazy is fine: only
the variables drawn are read) and return the matplotlib ``Figure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from payesh.errors import PayeshError
from payesh.indicators.anomaly import ntl_baseline
from payesh.indicators.nightlights import MIN_VALID
from payesh.indicators.suspect import LIGHT_Z

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_ntl_series", "plot_trend_map"]


def _tile_names(tiles: xr.Dataset) -> np.ndarray:
    """Tile names as a ``<U`` array (a store may hand back numpy's variable-width strings)."""
    raw = np.asarray(tiles["tile"].values)
    return np.array([str(v) for v in raw.ravel()]).reshape(raw.shape)


def _tile_index(tiles: xr.Dataset, tile: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(tile, tuple):
        r, c = tile
        if not (0 <= r < tiles.sizes["tile_y"] and 0 <= c < tiles.sizes["tile_x"]):
            raise PayeshError(
                f"tile {tile} is outside the {tiles.sizes['tile_y']}x{tiles.sizes['tile_x']} tiles"
            )
        return int(r), int(c)
    names = _tile_names(tiles)
    hit = np.argwhere(names == tile)
    if hit.size == 0:
        raise PayeshError(
            f"no tile named {tile!r}; tiles run from {names.flat[0]} to {names.flat[-1]}"
        )
    return int(hit[0][0]), int(hit[0][1])


def _require(tiles: xr.Dataset, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if n not in tiles]
    if missing:
        raise PayeshError(
            f"{what} needs {', '.join(missing)} in the tiles; "
            "the run had no night lights (VIIRS) for this city"
        )


def plot_ntl_series(
    tiles: xr.Dataset,
    tile: str | tuple[int, int],
    *,
    z_threshold: float = LIGHT_Z,
    figsize: tuple[float, float] = (12.0, 5.5),
) -> Figure:
    """One tile's night lights through time, with its baseline, anomalies and coverage.

    Top panel: ``ntl_sum`` per month; the seasonal baseline of :func:`ntl_anomaly`
    (dashed) with the band ``baseline ± z_threshold × scale`` inside which no anomaly is
    raised; months with ``|ntl_anomaly| ≥ z_threshold`` marked (▲ up, ▼ down); months
    flagged ``load_suspect`` boxed; low-coverage months (the tile's or the city's median
    valid fraction < 0.5: no anomaly possible) hatched.
    Bottom panel: ``ntl_valid_fraction`` per month.

    Parameters
    ----------
    tiles
        The city's tiles (``ntl_sum``, ``ntl_valid_fraction``; ``ntl_anomaly`` and
        ``load_suspect`` used when present).
    tile
        Tile name (``"r003c002"``) or ``(row, col)``.
    z_threshold
        Anomaly threshold, robust σ (default :data:`payesh.indicators.suspect.LIGHT_Z`).
    figsize
        Figure size, inches.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    _require(tiles, ("ntl_sum", "ntl_valid_fraction"), "plot_ntl_series")
    r, c = _tile_index(tiles, tile)
    name = str(np.asarray(tiles["tile"].values)[r, c]) if "tile" in tiles.coords else f"{tile}"
    city_vf = tiles["ntl_valid_fraction"]
    base = ntl_baseline(tiles["ntl_sum"], valid_fraction=city_vf).isel(tile_y=r, tile_x=c)
    one = tiles.isel(tile_y=r, tile_x=c)
    months = pd.DatetimeIndex(one["time"].values)
    x = np.asarray(one["ntl_sum"].values, dtype="float64")
    vf = np.asarray(one["ntl_valid_fraction"].values, dtype="float64")
    med = np.asarray(base["ntl_baseline"].values, dtype="float64")
    scale = np.asarray(base["ntl_baseline_scale"].values, dtype="float64")
    if "ntl_anomaly" in one:
        z = np.asarray(one["ntl_anomaly"].values, dtype="float64")
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(vf >= MIN_VALID, (x - med) / scale, np.nan)
    units = tiles["ntl_sum"].attrs.get("units", "nW cm-2 sr-1")
    half = pd.Timedelta(days=14)

    fig, (ax, axv) = plt.subplots(
        2, 1, figsize=figsize, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.fill_between(
        months,
        med - z_threshold * scale,
        med + z_threshold * scale,
        color="tab:blue",
        alpha=0.15,
        linewidth=0,
        label=f"baseline ± {z_threshold:g}σ",
    )
    ax.plot(months, med, "--", color="tab:blue", lw=1.2, label="seasonal baseline")
    ax.plot(months, x, "o-", color="goldenrod", lw=1.8, ms=5, label="ntl_sum")
    with np.errstate(invalid="ignore"):
        up = z >= z_threshold
        down = z <= -z_threshold
    if up.any():
        ax.plot(
            months[up], x[up], "^", color="tab:red", ms=11, label=f"anomaly ≥ +{z_threshold:g}σ"
        )
    if down.any():
        ax.plot(
            months[down],
            x[down],
            "v",
            color="tab:purple",
            ms=11,
            label=f"anomaly ≤ −{z_threshold:g}σ",
        )
    for m, zi, xi in zip(months[up | down], z[up | down], x[up | down], strict=True):
        ax.annotate(
            f"{zi:+.0f}σ",
            (m, xi),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
            color="tab:red" if zi > 0 else "tab:purple",
        )
    # months without a z-score for lack of coverage: the tile's, or the city's (median tile)
    city_median = np.asarray(city_vf.median(("tile_y", "tile_x")).values, dtype="float64")
    low = (vf < MIN_VALID) | (city_median < MIN_VALID)
    for m in months[low]:
        for a in (ax, axv):
            a.axvspan(m - half, m + half, facecolor="0.85", hatch="///", edgecolor="0.6", lw=0)
    if "load_suspect" in one:
        flagged = np.asarray(one["load_suspect"].fillna(0).values) > 0
        for m in months[flagged]:
            ax.axvspan(m - half, m + half, fill=False, edgecolor="k", lw=1.0)
    handles, labels = ax.get_legend_handles_labels()
    if low.any():
        handles.append(Patch(facecolor="0.85", hatch="///", edgecolor="0.6"))
        labels.append(f"low coverage (< {MIN_VALID:g}): no anomaly")
    if "load_suspect" in one and bool((np.asarray(one["load_suspect"].fillna(0)) > 0).any()):
        handles.append(Patch(fill=False, edgecolor="k", lw=1.0))
        labels.append("flagged load_suspect")
    ax.legend(handles, labels, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_ylabel(f"ntl_sum\n{units}")
    ax.set_title(f"tile {name}: night lights, seasonal baseline and anomalies")
    ax.grid(alpha=0.3)
    axv.bar(
        months,
        vf,
        width=20,
        color=np.where(low, "0.55", "tab:green"),
        edgecolor="none",
    )
    axv.axhline(MIN_VALID, color="k", lw=0.8, ls=":")
    axv.set_ylim(0, 1.05)
    axv.set_ylabel("valid\nfraction (1)")
    axv.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.subplots_adjust(right=0.8)  # room for the legend on the right
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges of regularly spaced cell centres (either order)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    step = centres[1] - centres[0]
    return np.concatenate([centres - step / 2, [centres[-1] + step / 2]])


def plot_trend_map(
    tiles: xr.Dataset,
    *,
    alpha: float = 0.05,
    labels: bool | None = None,
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7.5, 6.5),
) -> Figure:
    """City map of ``ntl_trend``; tiles whose trend is not significant are greyed and hatched.

    Parameters
    ----------
    tiles
        The city's tiles with ``ntl_trend`` and ``ntl_trend_p`` (tile_y, tile_x); the
        ``tile_x``/``tile_y`` coordinates are tile centres in the city's projected CRS
        (their ``crs`` attribute labels the axes).
    alpha
        Significance level of the Mann–Kendall test (unitless): tiles with
        ``ntl_trend_p ≥ alpha`` (or no trend) are hatched.
    labels
        Write each tile's name, slope and p-value on it; default: when there are at most
        36 tiles (more would not be legible).
    ax
        Axes to draw on; default: a new figure.
    figsize
        Figure size, inches, when a new figure is made.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    _require(tiles, ("ntl_trend", "ntl_trend_p"), "plot_trend_map")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure  # type: ignore[assignment]
    trend = np.asarray(tiles["ntl_trend"].values, dtype="float64")
    p = np.asarray(tiles["ntl_trend_p"].values, dtype="float64")
    xs = np.asarray(tiles["tile_x"].values, dtype="float64")
    ys = np.asarray(tiles["tile_y"].values, dtype="float64")
    finite = np.abs(trend[np.isfinite(trend)])
    # colour limit: 98th percentile of |trend|, so one runaway tile does not wash out the rest
    lim = float(np.percentile(finite, 98)) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    extend = "both" if finite.size and float(finite.max()) > lim else "neither"
    mesh = ax.pcolormesh(
        _edges(xs),
        _edges(ys),
        np.ma.masked_invalid(trend),
        cmap="RdBu_r",
        norm=TwoSlopeNorm(0.0, -lim, lim),
        shading="flat",
    )
    units = tiles["ntl_trend"].attrs.get("units", "per year")
    fig.colorbar(mesh, ax=ax, label=f"ntl_trend (Theil–Sen), {units}", shrink=0.85, extend=extend)
    dx = float(abs(xs[1] - xs[0])) if xs.size > 1 else 1.0
    dy = float(abs(ys[1] - ys[0])) if ys.size > 1 else 1.0
    names = _tile_names(tiles) if "tile" in tiles.coords else None
    if labels is None:
        labels = trend.size <= 36
    n_sig = 0
    for (r, c), t in np.ndenumerate(trend):
        sig = bool(np.isfinite(t) and np.isfinite(p[r, c]) and p[r, c] < alpha)
        n_sig += sig
        xc, yc = float(xs[c]), float(ys[r])
        x0, y0 = xc - dx / 2, yc - dy / 2
        if not sig:
            ax.add_patch(
                Rectangle(
                    (x0, y0),
                    dx,
                    dy,
                    facecolor=(0.92, 0.92, 0.92, 0.6),
                    hatch="//",
                    edgecolor="0.55",
                    lw=0,
                    gid="not-significant",
                )
            )
        ax.add_patch(Rectangle((x0, y0), dx, dy, fill=False, edgecolor="0.4", lw=0.5))
        if not labels:
            continue
        label = "" if names is None else f"{names[r, c]}\n"
        value = "no trend" if not np.isfinite(t) else f"{t:+.3g}/yr"
        ax.text(
            xc,
            yc,
            f"{label}{value}" + (f"\np={p[r, c]:.3f}" if np.isfinite(p[r, c]) else ""),
            ha="center",
            va="center",
            fontsize=7,
            fontweight="bold" if sig else "normal",
            color="k" if sig else "0.35",
        )
    crs = tiles["tile_x"].attrs.get("crs", "")
    ax.set_aspect("equal")
    for axis, centres in ((ax.xaxis, xs), (ax.yaxis, ys)):
        if centres.size <= 8:  # ticks on the tile edges
            axis.set_ticks(np.sort(_edges(centres)))
        else:
            axis.set_major_locator(MaxNLocator(6))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 1000:.1f}"))
    ax.set_xlabel(f"easting, km ({crs})" if crs else "easting, km")
    ax.set_ylabel(f"northing, km ({crs})" if crs else "northing, km")
    months = pd.DatetimeIndex(tiles["time"].values) if "time" in tiles.dims else None
    period = f" {months[0]:%Y-%m}..{months[-1]:%Y-%m}" if months is not None else ""
    ax.set_title(
        f"night-light trend{period}: {n_sig} of {trend.size} tiles significant "
        f"(Mann–Kendall p < {alpha:g})",
        fontsize=10,
    )
    ax.legend(
        handles=[Patch(facecolor=(0.9, 0.9, 0.9), hatch="//", edgecolor="0.55")],
        labels=[f"not significant (p ≥ {alpha:g})"],
        loc="upper left",
        bbox_to_anchor=(0.0, -0.12),
        fontsize=8,
        frameon=False,
    )
    return fig
