"""Evidence chips for a construction site: what an inspector needs to see why it was flagged.

A chip shows the ground around the site before it was first seen and in the latest
month, with the site outlined, beside the site's built-up probability curve. The ground is
the store's true colour (``pixels/true_colour``, :func:`true_colour_window`) when the
store has it, else the monthly built-up probability (``pixels/builtup_prob``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from matplotlib.figure import Figure
from shapely.geometry.base import BaseGeometry

__all__ = ["before_after", "render_chip", "true_colour_window"]

TRUE_COLOUR = "true_colour"  # payesh.truecolour.TRUE_COLOUR (not imported: keeps the portal light)


def true_colour_window(
    pixels: xr.Dataset, rows: slice, cols: slice, *, flip_y: bool
) -> np.ndarray | None:
    """The stored true colour of a window as (time, y, x, 3) uint8, north-up.

    ``None`` when the store has no ``true_colour`` (made before it was kept). Months
    without it (NaN after a merge with an older store's months) are grey.
    """
    if TRUE_COLOUR not in pixels:
        return None
    win = pixels[TRUE_COLOUR].isel(y=rows, x=cols).transpose("time", "y", "x", "band")
    arr = np.asarray(win.compute(scheduler="synchronous").values)
    if arr.dtype != np.uint8:
        arr = np.where(np.isfinite(arr), arr, 128).astype("uint8")
    return arr[:, ::-1] if flip_y else arr


def before_after(months: Sequence[str], first_seen: pd.Timestamp | None) -> tuple[int, int]:
    """Indices of the 'before' month (the last one before ``first_seen``) and the latest."""
    last = len(months) - 1
    if first_seen is None or pd.isna(first_seen):
        return 0, last
    seen = pd.Timestamp(first_seen).to_period("M")
    before = [i for i, m in enumerate(months) if pd.Period(m, freq="M") < seen]
    return (before[-1] if before else 0), last


def _outline(ax: object, geom: BaseGeometry, tr: Affine) -> None:
    inv = ~tr
    polys = getattr(geom, "geoms", [geom])
    for poly in polys:
        xs, ys = poly.exterior.xy
        cols, rows = inv * (np.asarray(xs), np.asarray(ys))
        ax.plot(np.asarray(cols) - 0.5, np.asarray(rows) - 0.5, color="#00b3ff", lw=1.6)  # type: ignore[attr-defined]


def render_chip(
    prob: np.ndarray,
    tr: Affine,
    months: Sequence[str],
    geom: BaseGeometry,
    *,
    site_id: str,
    first_seen: pd.Timestamp | None,
    curve: Sequence[float | None],
    rgb: np.ndarray | None = None,
) -> bytes:
    """A PNG: the site before / latest (true colour, else probability), and its curve.

    Parameters
    ----------
    prob
        Built-up probability (0–1) of the window around the site, (time, y, x), north-up.
    tr
        Transform of the window (grid CRS, m).
    months
        ``YYYY-MM`` of each time step.
    geom
        The site polygon in the grid CRS.
    site_id, first_seen
        For the titles.
    curve
        Mean probability inside the site per month (None where missing).
    rgb
        True colour of the same window, (time, y, x, 3) uint8, north-up
        (:func:`true_colour_window`); shown instead of ``prob`` when given.
    """
    i0, i1 = before_after(months, first_seen)
    fig = Figure(figsize=(7.2, 2.5), dpi=100)
    fig.patch.set_facecolor("white")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.5]})
    for ax, i, what in ((axes[0], i0, "before"), (axes[1], i1, "latest")):
        if rgb is not None:
            ax.imshow(rgb[i], interpolation="nearest")
        else:
            ax.imshow(prob[i], cmap="YlOrRd", vmin=0, vmax=1, interpolation="nearest")
        _outline(ax, geom, tr)
        kind = "" if rgb is not None else " P(built-up)"
        ax.set_title(f"{what}{kind}: {months[i]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[2]
    y = np.array([np.nan if v is None else v for v in curve], dtype=float)
    x = np.arange(len(months))
    ax.plot(x[: len(y)], y, marker="o", ms=3, color="#c0392b")
    ax.set_ylim(0, 1)
    ax.set_xticks(x, [m[2:] for m in months], rotation=60, fontsize=6)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("built-up probability in the site", fontsize=9)
    if first_seen is not None and not pd.isna(first_seen):
        seen = pd.Timestamp(first_seen).to_period("M")
        hit = [i for i, m in enumerate(months) if pd.Period(m, freq="M") == seen]
        if hit:
            ax.axvline(hit[0], color="#555", ls="--", lw=0.8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"site {site_id}", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
