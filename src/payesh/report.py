"""What a person reads after a run: a short text summary, a score against the demo's
ground truth, and a PNG overview map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

if TYPE_CHECKING:
    from payesh.synthetic import Truth

DETECTION_LAG_MONTHS = 2  # persistence: 3 of the last 4 clear composites

__all__ = ["SiteScore", "overview_png", "score_load", "score_sites", "summary_text"]


@dataclass(frozen=True)
class SiteScore:
    """Found sites against the truth's new buildings.

    Attributes
    ----------
    n_truth, n_found : int
        New buildings in the truth; sites found.
    matched_truth : int
        Truth buildings overlapped by at least one found site (recall = matched_truth / n_truth).
    true_sites : int
        Found sites overlapping a truth building (precision = true_sites / n_found).
    status_agree : int
        Matched truth buildings whose found status equals the true one.
    traps_hit : list of str
        Traps (``cleared_field``, ``transient_bright``) a found site overlaps: should be empty.
    """

    n_truth: int
    n_found: int
    matched_truth: int
    true_sites: int
    status_agree: int
    traps_hit: list[str]
    n_detectable: int = 0
    matched_detectable: int = 0

    @property
    def recall(self) -> float:
        return self.matched_truth / self.n_truth if self.n_truth else float("nan")

    @property
    def precision(self) -> float:
        return self.true_sites / self.n_found if self.n_found else float("nan")


def _truth_frame(truth: Truth) -> gpd.GeoDataFrame:
    rows = [
        {
            "site_id": s.site_id,
            "status": s.status,
            "built": pd.Timestamp(s.built),
            "geometry": s.geometry,
        }
        for s in truth.sites
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def score_sites(
    found: gpd.GeoDataFrame, truth: Truth, *, detectable_by: pd.Timestamp | None = None
) -> SiteScore:
    """Compare found sites with the truth's new buildings (overlap in the sites' CRS).

    ``detectable_by``: the last month a building can appear and still be persistent by
    the end of the run (persistence needs several clear composites after it); buildings
    that appear later are counted apart.
    """
    true_df = _truth_frame(truth)
    if len(found) and found.crs is not None:
        true_df = true_df.to_crs(found.crs)
    matched = agree = n_det = matched_det = 0
    for _, t in true_df.iterrows():
        hits = found[found.intersects(t.geometry)] if len(found) else found
        det = detectable_by is None or t["built"] <= detectable_by
        n_det += int(det)
        if len(hits):
            matched += 1
            matched_det += int(det)
            agree += int((hits["status"] == t["status"]).any())
    true_sites = sum(
        bool(true_df.intersects(g).any()) for g in (found.geometry if len(found) else [])
    )
    traps_hit = []
    for trap in truth.traps:
        geom = gpd.GeoSeries([trap.geometry], crs="EPSG:4326")
        if len(found) and found.crs is not None:
            geom = geom.to_crs(found.crs)
        if len(found) and found.intersects(geom.iloc[0]).any():
            traps_hit.append(trap.kind)
    return SiteScore(
        len(true_df), len(found), matched, true_sites, agree, traps_hit, n_det, matched_det
    )


def score_load(tiles: xr.Dataset, truth: Truth) -> tuple[list[str], list[str]]:
    """(tiles the truth's unregistered load lies in, tiles flagged ``load_suspect`` at any month)."""
    flagged: list[str] = []
    if "load_suspect" in tiles:
        any_flag = (tiles["load_suspect"].fillna(0) > 0).any("time").values
        flagged = sorted(str(t) for t in np.asarray(tiles["tile"].values)[any_flag])
    truth_tiles: list[str] = []
    if truth.load is not None:
        lon = tiles["lon"].values
        lat = tiles["lat"].values
        c = truth.load.geometry.centroid
        d = (lon - c.x) ** 2 + (lat - c.y) ** 2
        idx = np.unravel_index(int(np.argmin(d)), d.shape)
        truth_tiles = [str(tiles["tile"].values[idx])]
    return truth_tiles, flagged


def _top_ntl_tiles(tiles: xr.Dataset, n: int = 5) -> list[str]:
    if "ntl_trend" not in tiles:
        return ["  (no night-light product in this run)"]
    trend = tiles["ntl_trend"].values.ravel()
    names = np.asarray(tiles["tile"].values).ravel()
    pvals = (
        tiles["ntl_trend_p"].values.ravel()
        if "ntl_trend_p" in tiles
        else np.full_like(trend, np.nan)
    )
    order = np.argsort(-np.nan_to_num(np.abs(trend), nan=-1))[:n]
    flags = (
        (tiles["load_suspect"].fillna(0) > 0).any("time").values.ravel()
        if "load_suspect" in tiles
        else np.zeros_like(trend, dtype=bool)
    )
    lines = []
    for i in order:
        if np.isnan(trend[i]):
            continue
        mark = "  ← suspected unregistered load" if flags[i] else ""
        lines.append(
            f"  {names[i]}  {trend[i]:+9.1f} per year  (Mann–Kendall p={pvals[i]:.3f}){mark}"
        )
    return lines


def summary_text(
    tiles: xr.Dataset,
    sites: gpd.GeoDataFrame,
    *,
    title: str,
    truth: Truth | None = None,
    png: Path | None = None,
) -> str:
    """The few lines printed after a demo or a run."""
    n_tiles = tiles.sizes["tile_y"] * tiles.sizes["tile_x"]
    months = pd.DatetimeIndex(tiles.time.values)
    lines = [
        title,
        f"{n_tiles} tiles × {len(months)} months ({months[0]:%Y-%m}..{months[-1]:%Y-%m})",
        "",
        "Night lights — tiles with the strongest change (Theil–Sen slope of ntl_sum):",
        *_top_ntl_tiles(tiles),
        "",
    ]
    counts = sites["status"].value_counts().to_dict() if len(sites) else {}
    lines.append(
        f"Construction — {len(sites)} sites found: {counts.get('unauthorized', 0)} unauthorized, "
        f"{counts.get('permitted', 0)} permitted"
    )
    if truth is not None:
        last_detectable = months[-1] - pd.DateOffset(months=DETECTION_LAG_MONTHS)
        s = score_sites(sites, truth, detectable_by=last_detectable)
        n_unauth = sum(t.status == "unauthorized" for t in truth.sites)
        lines += [
            f"  vs. truth: {s.n_truth} new buildings ({n_unauth} unauthorized); "
            f"found {s.matched_truth}/{s.n_truth} (recall {s.recall:.0%}); "
            f"{s.matched_detectable}/{s.n_detectable} of those built by {last_detectable:%Y-%m} "
            f"(later ones cannot yet persist {DETECTION_LAG_MONTHS + 1} months)",
            f"  precision {s.true_sites}/{s.n_found} ({s.precision:.0%}), "
            f"status (permitted/unauthorized) right for {s.status_agree}/{s.matched_truth}",
            "  traps (cleared field, one-scene bright object): "
            + ("none became a site" if not s.traps_hit else "hit: " + ", ".join(s.traps_hit)),
        ]
        truth_tiles, flagged = score_load(tiles, truth)
        if truth.load is not None:
            ok = bool(set(truth_tiles) & set(flagged))
            lines += [
                "",
                f"Unregistered load — truth: tile {', '.join(truth_tiles)} from "
                f"{truth.load.start:%Y-%m}; flagged: {', '.join(flagged) or 'none'} "
                + ("(found)" if ok else "(missed)"),
            ]
    if "electricity_mwh" in tiles:
        lines.append(
            f"Electricity estimate — city total {float(tiles['electricity_mwh'].sum()):,.0f} MWh "
            f"over the period"
        )
    if png is not None:
        lines += ["", f"Overview map: {png}"]
    return "\n".join(lines)


def overview_png(
    pixels: xr.Dataset,
    tiles: xr.Dataset,
    sites: gpd.GeoDataFrame,
    path: Path,
    *,
    title: str,
    permits: gpd.GeoDataFrame | None = None,
    consumption: pd.Series | None = None,
) -> Path:
    """A three-panel PNG: built-up and sites, night-light change per tile, city totals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    ax = axes[0]
    prob = pixels["builtup_prob"].isel(time=-1)
    x, y = pixels["x"].values, pixels["y"].values
    extent = (x[0], x[-1], y[-1], y[0])
    ax.imshow(prob.values, cmap="Greys", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    if permits is not None and len(permits):
        permits.to_crs(sites.crs if sites.crs else permits.crs).boundary.plot(
            ax=ax, color="tab:blue", linewidth=0.8
        )
    colours = {"unauthorized": "tab:red", "permitted": "tab:green"}
    for status, colour in colours.items():
        sub = sites[sites["status"] == status] if len(sites) else sites
        if len(sub):
            sub.plot(ax=ax, facecolor=colour, edgecolor=colour, alpha=0.6, linewidth=1.2)
    ax.legend(
        handles=[
            Patch(color="tab:red", alpha=0.6, label="unauthorized site"),
            Patch(color="tab:green", alpha=0.6, label="permitted site"),
            Patch(facecolor="none", edgecolor="tab:blue", label="permit"),
        ],
        loc="lower left",
        fontsize=8,
    )
    ax.set_title(f"Built-up probability {pd.Timestamp(prob.time.values):%Y-%m} and new sites")
    ax.set_xticks([])
    ax.set_yticks([])

    ax = axes[1]
    if "ntl_sum" in tiles:
        change = tiles["ntl_sum"].isel(time=slice(-3, None)).mean("time") - tiles["ntl_sum"].isel(
            time=slice(0, 3)
        ).mean("time")
        im = ax.imshow(
            change.values,
            cmap="RdBu_r",
            vmin=-np.nanmax(np.abs(change.values)),
            vmax=np.nanmax(np.abs(change.values)),
        )
        fig.colorbar(im, ax=ax, shrink=0.8, label="Δ ntl_sum, last 3 vs first 3 months")
        names = np.asarray(tiles["tile"].values)
        flags = (
            (tiles["load_suspect"].fillna(0) > 0).any("time").values
            if "load_suspect" in tiles
            else np.zeros(names.shape, bool)
        )
        for (r, c), name in np.ndenumerate(names):
            ax.text(c, r, name, ha="center", va="center", fontsize=7, color="0.25")
            if flags[r, c]:
                ax.add_patch(
                    plt.Rectangle(
                        (c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="k", linewidth=2.5
                    )
                )
        ax.set_title("Night-light change per tile (box: suspected unregistered load)")
    ax.set_xticks([])
    ax.set_yticks([])

    ax = axes[2]
    months = pd.DatetimeIndex(tiles.time.values)
    if "ntl_sum" in tiles:
        # a city total only where every tile was observed: a partial sum is not a dip
        n_tiles = tiles.sizes["tile_y"] * tiles.sizes["tile_x"]
        ax.plot(
            months,
            tiles["ntl_sum"].sum(("tile_y", "tile_x"), min_count=n_tiles).values,
            "o-",
            color="goldenrod",
            label="Σ ntl_sum (city)",
        )
        ax.set_ylabel("night lights, nW cm⁻² sr⁻¹ (pixel-weighted sum)")
    ax2 = ax.twinx()
    if consumption is not None:
        ax2.bar(
            consumption.index,
            consumption.values,
            width=20,
            alpha=0.3,
            color="tab:blue",
            label="reported consumption",
        )
    if "electricity_mwh" in tiles:
        ax2.plot(
            months,
            tiles["electricity_mwh"].sum(("tile_y", "tile_x"), min_count=1).values,
            "s--",
            color="tab:blue",
            label="estimated electricity",
        )
    ax2.set_ylabel("MWh per month")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title("City totals per month")
    fig.autofmt_xdate()
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
