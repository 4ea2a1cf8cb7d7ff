"""Where the notebooks find their city, and two small map helpers they share.

The notebooks read everything from the environment, so the same notebook runs on the
demo city, on a real city, or on the small city the test suite generates:

``PAYESH_CITY``
    The city's id (default ``demo``).
``PAYESH_STORE``
    The store root (default ``data/demo/store``, what ``make demo`` writes); a relative
    path is taken from the repository root, an ``s3://`` URI is used as it is.
``PAYESH_MANIFEST``
    The city's manifest, for its permits and reported consumption. Default: the
    ``cities/<city>.yaml`` that ``make demo`` writes beside its store, else the manifest
    named ``PAYESH_CITY`` in ``datasets/cities/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "Setup", "draw_tiles", "map_axes", "outline", "setup", "tile_frame"]


@dataclass(frozen=True)
class Setup:
    """What a notebook opens: the city's id, the store root and the manifest (path or id)."""

    city: str
    store: str
    manifest: str


def _resolve(path: str) -> str:
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else REPO / p)


def setup(environ: dict[str, str] | None = None) -> Setup:
    """Read ``PAYESH_CITY``, ``PAYESH_STORE`` and ``PAYESH_MANIFEST`` (see the module doc)."""
    env = dict(os.environ if environ is None else environ)
    city = env.get("PAYESH_CITY") or "demo"
    store = _resolve(env.get("PAYESH_STORE") or "data/demo/store")
    manifest = env.get("PAYESH_MANIFEST")
    if manifest:
        manifest = _resolve(manifest)
    else:
        beside = None if "://" in store else Path(store).parent / "cities" / f"{city}.yaml"
        manifest = str(beside) if beside is not None and beside.is_file() else city
    return Setup(city=city, store=store, manifest=manifest)


def tile_frame(city: Any) -> Any:
    """The city's tiles as a GeoDataFrame (``tile`` name + polygon, in the city's CRS)."""
    import geopandas as gpd

    import payesh

    polys = payesh.tile_grid(city).tile_polygons()
    return gpd.GeoDataFrame(
        {"tile": [name for name, _ in polys]},
        geometry=[g.geom for _, g in polys],
        crs=city.crs,
    )


def draw_tiles(ax: Any, frame: Any, *, labels: bool = True, color: str = "0.35") -> None:
    """Outline the tiles of ``frame`` (from :func:`tile_frame`) on ``ax`` and name them."""
    outline(ax, frame.geometry, color=color, linewidth=0.6, linestyle=":")
    if labels:
        for name, geom in zip(frame["tile"], frame.geometry, strict=True):
            minx, _, _, maxy = geom.bounds
            ax.annotate(
                name,
                (minx, maxy),
                xytext=(2, -2),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=7,
                color=color,
            )


def map_axes(ax: Any, city: Any) -> None:
    """Square a map drawn in the city's CRS and label its axes in kilometres."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 1000:.1f}"))
    ax.set_xlabel(f"easting, km ({city.crs})")
    ax.set_ylabel(f"northing, km ({city.crs})")


def outline(ax: Any, geometries: Any, **style: Any) -> None:
    """Draw the outlines of shapely polygons on ``ax`` (in their own coordinates).

    Cheaper than ``GeoSeries.boundary.plot``, which redraws the whole figure on every
    call: that matters on a figure of many small panels.
    """
    import shapely

    style = {"linewidth": 1.0, **style}
    for geom in geometries:
        for part in shapely.get_parts(geom):
            for ring in [part.exterior, *part.interiors]:
                x, y = ring.xy
                ax.plot(x, y, **style)
