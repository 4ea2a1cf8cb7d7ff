"""What the portal reads: the cities under a store root, their layers, months and sites.

Everything goes through :mod:`payesh.store` (read-only). A city is served only when its
name is one of the stores found under the root (a directory listing compared as strings;
nothing from a request is ever joined into a path). Each city is opened at one snapshot
and re-checked for a newer one every ``refresh_s`` seconds, so one response never mixes
two versions.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from pyproj import CRS, Transformer

from payesh.portal.tiles import Grid, Style, layer_style, to_float

__all__ = ["CityData", "Layer", "Registry"]

_CITY_RE = re.compile(r"^[a-z0-9_-]+$")
RASTER_GROUPS = ("tiles", "pixels", "ntl")
_SAMPLE = 400_000  # values sampled per layer to pick its colour range
_SLICE_CACHE = 256 * 2**20  # bytes of layer-months kept in memory per city, for tiles


@dataclass(frozen=True)
class Layer:
    """One variable of a raster group that can be mapped and downloaded."""

    name: str
    group: str
    label: str
    units: str
    has_time: bool
    is_date: bool

    @property
    def formats(self) -> list[str]:
        """Download formats that apply (tile layers: all five; pixel layers: cog, netcdf)."""
        if self.group == "tiles":
            return ["cog", "netcdf", "csv", "geojson", "parquet"]
        return ["cog", "netcdf"]


def _crs_of(ds: xr.Dataset) -> CRS:
    attrs = ds["spatial_ref"].attrs
    return CRS.from_wkt(attrs.get("crs_wkt") or attrs["spatial_ref"])


def _months(ds: xr.Dataset) -> list[str]:
    if "time" not in ds.dims:
        return []
    return [f"{t:%Y-%m}" for t in pd.DatetimeIndex(ds["time"].values)]


def _sample(var: xr.DataArray) -> np.ndarray:
    """A strided sample of ``var`` (at most ~``_SAMPLE`` values), as floats."""
    step = max(1, math.ceil((var.size / _SAMPLE) ** (1 / max(var.ndim, 1))))
    sub = var.isel({d: slice(None, None, step) for d in var.dims})
    return to_float(np.asarray(sub.compute(scheduler="synchronous").values))


@dataclass
class CityData:
    """One city at one snapshot: its groups (lazy), layers, months and caches."""

    name: str
    title: str
    snapshot: str
    committed: str
    groups: dict[str, xr.Dataset]
    layers: dict[str, Layer]
    months: list[str]
    bbox: tuple[float, float, float, float]
    sites: gpd.GeoDataFrame | None
    checked: float = field(default_factory=time.monotonic)
    _styles: dict[str, Style] = field(default_factory=dict)
    _grids: dict[str, Grid] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[Any, Any] = field(default_factory=dict)
    _slices: OrderedDict[tuple[str, int | None], np.ndarray] = field(default_factory=OrderedDict)

    def grid(self, group: str) -> Grid:
        """The pixel grid of a raster group."""
        with self._lock:
            if group not in self._grids:
                ds = self.groups[group]
                ydim, xdim = ("tile_y", "tile_x") if group == "tiles" else ("y", "x")
                step = None
                gt = ds["spatial_ref"].attrs.get("GeoTransform")
                if gt:
                    step = abs(float(str(gt).split()[1]))
                self._grids[group] = Grid.from_coords(
                    _crs_of(ds), ds[ydim].values, ds[xdim].values, step
                )
            return self._grids[group]

    def style(self, layer: Layer) -> Style:
        """The colour map and range of ``layer`` (computed once per snapshot)."""
        with self._lock:
            cached = self._styles.get(layer.name)
        if cached is not None:
            return cached
        var = self.groups[layer.group][layer.name]
        style = layer_style(
            layer.name, layer.units, layer.label, _sample(var), is_date=layer.is_date
        )
        with self._lock:
            self._styles[layer.name] = style
        return style

    def values(self, layer: Layer, ti: int | None) -> np.ndarray:
        """One month of a layer on its whole grid, as float32 (as stored: rows in the
        stored order); kept in memory for the next tiles, within ``_SLICE_CACHE`` bytes."""
        key = (layer.name, ti)
        with self._lock:
            hit = self._slices.get(key)
            if hit is not None:
                self._slices.move_to_end(key)
                return hit
        ydim, xdim = ("tile_y", "tile_x") if layer.group == "tiles" else ("y", "x")
        var = self.groups[layer.group][layer.name]
        if ti is not None:
            var = var.isel(time=ti)
        arr = to_float(
            np.asarray(var.transpose(ydim, xdim).compute(scheduler="synchronous").values)
        )
        with self._lock:
            self._slices[key] = arr
            while (
                sum(a.nbytes for a in self._slices.values()) > _SLICE_CACHE
                and len(self._slices) > 1
            ):
                self._slices.popitem(last=False)
        return arr

    def month_index(self, layer: Layer, month: str | None) -> int | None:
        """Index along ``time`` of ``month`` in the layer's group (default: the latest)."""
        if not layer.has_time:
            return None
        months = _months(self.groups[layer.group])
        if month is None:
            return len(months) - 1
        return months.index(month) if month in months else -1


def _layers(groups: dict[str, xr.Dataset]) -> dict[str, Layer]:
    out: dict[str, Layer] = {}
    for g in RASTER_GROUPS:
        ds = groups.get(g)
        if ds is None:
            continue
        dims = ("tile_y", "tile_x") if g == "tiles" else ("y", "x")
        for v, var in ds.data_vars.items():
            name = str(v)
            kind = var.dtype.kind
            if name == "spatial_ref" or kind not in "biufM" or name in out:
                continue
            if not set(dims) <= set(var.dims) or not set(var.dims) <= {"time", *dims}:
                continue
            out[name] = Layer(
                name=name,
                group=g,
                label=str(var.attrs.get("long_name") or name.replace("_", " ")),
                units=str(var.attrs.get("units", "")),
                has_time="time" in var.dims,
                is_date=kind == "M",
            )
    return out


def _bbox(groups: dict[str, xr.Dataset]) -> tuple[float, float, float, float]:
    ds = groups["tiles"] if "tiles" in groups else next(iter(groups.values()))
    ydim, xdim = ("tile_y", "tile_x") if "tile_y" in ds.dims else ("y", "x")
    g = Grid.from_coords(_crs_of(ds), ds[ydim].values, ds[xdim].values, None)
    left, top = g.transform.c, g.transform.f
    right, bottom = g.transform * (g.width, g.height)
    tr = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    w, s, e, n = tr.transform_bounds(left, bottom, right, top, densify_pts=21)
    return (round(w, 6), round(s, 6), round(e, 6), round(n, 6))


def _title(name: str, attrs: dict[str, Any]) -> str:
    from payesh.city import cities_dir, load_city
    from payesh.errors import PayeshError

    manifest = cities_dir() / f"{name}.yaml"
    if manifest.is_file():
        try:
            return load_city(manifest).title
        except PayeshError:
            pass
    return str(attrs.get("city_title") or name.replace("_", " ").replace("-", " ").title())


class Registry:
    """The cities under a store root, each opened at its latest snapshot.

    Parameters
    ----------
    store_root
        A local directory holding one store per city (``<root>/<city>``).
    refresh_s
        Seconds between checks for a newer snapshot of a city.
    """

    def __init__(self, store_root: str | os.PathLike[str], *, refresh_s: float = 30.0) -> None:
        self.root = str(store_root)
        self.refresh_s = refresh_s
        self._cities: dict[str, CityData] = {}
        self._names: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._lock = threading.Lock()

    def names(self) -> frozenset[str]:
        """Names of the city stores under the root (listing refreshed every ``refresh_s``)."""
        stamp, names = self._names
        if time.monotonic() - stamp < self.refresh_s and names:
            return names
        root = Path(self.root.removeprefix("file://"))
        found = set()
        if root.is_dir():
            for entry in os.scandir(root):
                if entry.is_dir() and _CITY_RE.match(entry.name):
                    if (Path(entry.path) / "refs").is_dir():
                        found.add(entry.name)
        names = frozenset(found)
        self._names = (time.monotonic(), names)
        return names

    def get(self, name: str) -> CityData | None:
        """The city ``name`` at its latest snapshot, or None when no such store exists."""
        if name not in self.names():
            return None
        with self._lock:
            city = self._cities.get(name)
        if city is not None and time.monotonic() - city.checked < self.refresh_s:
            return city
        from payesh.store import history

        latest = history(name, store=self.root)
        if not latest:
            return None
        snap = str(latest[0]["snapshot_id"])
        if city is not None and city.snapshot == snap:
            city.checked = time.monotonic()
            return city
        city = self._open(name, snap, latest[0]["time"])
        with self._lock:
            self._cities[name] = city
        return city

    def _open(self, name: str, snap: str, when: Any) -> CityData:
        from payesh.errors import StoreError
        from payesh.store import open_indicators, open_sites

        groups: dict[str, xr.Dataset] = {}
        for g in RASTER_GROUPS:
            try:
                groups[g] = open_indicators(name, store=self.root, group=g, version=snap)
            except StoreError:
                continue
        sites: gpd.GeoDataFrame | None
        try:
            sites = open_sites(name, store=self.root, version=snap)
        except StoreError:
            sites = None
        months = sorted({m for ds in groups.values() for m in _months(ds)})
        attrs = dict(next(iter(groups.values())).attrs) if groups else {}
        return CityData(
            name=name,
            title=_title(name, attrs),
            snapshot=snap,
            committed=pd.Timestamp(when).isoformat(timespec="seconds"),
            groups=groups,
            layers=_layers(groups),
            months=months,
            bbox=_bbox(groups) if groups else (0.0, 0.0, 0.0, 0.0),
            sites=sites,
        )


# --------------------------------------------------------------------------- sites


def site_curves(city: CityData) -> dict[str, list[float | None]]:
    """Mean built-up probability inside each site, per month (None where missing)."""
    key = ("curves",)
    if key in city.cache:
        return dict(city.cache[key])
    out: dict[str, list[float | None]] = {}
    pixels = city.groups.get("pixels")
    sites = city.sites
    if pixels is None or sites is None or "builtup_prob" not in pixels or sites.empty:
        city.cache[key] = out
        return out
    from rasterio.features import geometry_mask

    grid = city.grid("pixels")
    sites = sites.to_crs(grid.crs)
    prob = pixels["builtup_prob"]
    for sid, geom in zip(sites["site_id"], sites.geometry, strict=True):
        win = window_of(grid, geom.bounds, pad_m=0.0)
        if win is None:
            out[str(sid)] = []
            continue
        rows, cols, tr = win
        vals = np.asarray(
            prob.isel(y=rows, x=cols).compute(scheduler="synchronous").values, dtype="float32"
        )
        if grid.flip_y:
            vals = vals[:, ::-1, :]
        inside = ~geometry_mask([geom], out_shape=vals.shape[1:], transform=tr, all_touched=True)
        curve: list[float | None] = []
        for month in vals:
            v = month[inside]
            v = v[np.isfinite(v)]
            curve.append(round(float(v.mean()), 4) if v.size else None)
        out[str(sid)] = curve
    city.cache[key] = out
    return out


def window_of(
    grid: Grid, bounds: tuple[float, float, float, float], *, pad_m: float
) -> tuple[slice, slice, Any] | None:
    """Stored rows/cols of ``grid`` covering ``bounds`` (grid CRS, m) plus ``pad_m``, north-up transform."""
    from affine import Affine

    left, bottom, right, top = bounds
    inv = ~grid.transform
    c0, r0 = inv * (left - pad_m, top + pad_m)
    c1, r1 = inv * (right + pad_m, bottom - pad_m)
    c0, r0 = max(0, math.floor(c0)), max(0, math.floor(r0))
    c1, r1 = min(grid.width, math.ceil(c1)), min(grid.height, math.ceil(r1))
    if c0 >= c1 or r0 >= r1:
        return None
    tr = grid.transform * Affine.translation(c0, r0)
    rows = slice(grid.height - r1, grid.height - r0) if grid.flip_y else slice(r0, r1)
    return rows, slice(c0, c1), tr


def sites_geojson(city: CityData, chip_url: Callable[[str], str]) -> dict[str, Any]:
    """The sites as a GeoJSON FeatureCollection (EPSG:4326) with their evidence."""
    if city.sites is None or city.sites.empty:
        return {"type": "FeatureCollection", "features": [], "months": city.months}
    curves = site_curves(city)
    gdf = city.sites.to_crs("EPSG:4326")
    feats = []
    for _, row in gdf.iterrows():
        sid = str(row["site_id"])
        first = row["first_seen"]
        permit = row["permit_id"]
        feats.append(
            {
                "type": "Feature",
                "id": sid,
                "geometry": shapely.geometry.mapping(row.geometry),
                "properties": {
                    "site_id": sid,
                    "first_seen": None if pd.isna(first) else f"{pd.Timestamp(first):%Y-%m-%d}",
                    "area_m2": float(row["area_m2"]),
                    "tile": str(row["tile"]),
                    "status": str(row["status"]),
                    "permit_id": None if pd.isna(permit) or permit == "" else str(permit),
                    "confidence": float(row["confidence"]),
                    "chip": chip_url(sid),
                    "builtup_prob_by_month": curves.get(sid, []),
                },
            }
        )
    months = _months(city.groups["pixels"]) if "pixels" in city.groups else city.months
    return {"type": "FeatureCollection", "features": feats, "months": months}
