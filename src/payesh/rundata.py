"""The run's data: the monthly composites it reads (:class:`MonthlyData`), everything it
produces (:class:`Indicators`), and the monthly layers of the ``pixels`` group as the
store gets them (:func:`pixel_months`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import xarray as xr

from payesh.errors import PayeshError
from payesh.keptmonths import CACHE_ATTR
from payesh.truecolour import TRUE_COLOUR

__all__ = ["Indicators", "MonthlyData", "pixel_months"]


@dataclass(frozen=True)
class MonthlyData:
    """Monthly composites of each product, concatenated along ``time``."""

    s2: xr.Dataset | None = None
    landsat: xr.Dataset | None = None
    viirs: xr.Dataset | None = None
    source_items: Mapping[str, list[str]] = field(default_factory=dict)
    skipped_items: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, monthly: Mapping[str, list[xr.Dataset]]) -> MonthlyData:
        """Concatenate per-month datasets (as produced by :mod:`payesh.monthly`)."""
        joined: dict[str, xr.Dataset | None] = {}
        items: dict[str, list[str]] = {}
        skipped: dict[str, list[str]] = {}
        for key in ("s2", "landsat", "viirs"):
            parts = monthly.get(key)
            if not parts:
                joined[key] = None
                continue
            items[key] = sorted({i for p in parts for i in p.attrs.get("source_items", [])})
            skipped[key] = sorted({i for p in parts for i in p.attrs.get("skipped_items", [])})
            # a month with no data (payesh.monthly.empty_month) has no spatial_ref: the
            # others' CRS is its CRS too (one grid per product)
            ref = next((p.coords["spatial_ref"] for p in parts if "spatial_ref" in p.coords), None)
            if ref is not None:
                parts = [
                    p if "spatial_ref" in p.coords else p.assign_coords(spatial_ref=ref)
                    for p in parts
                ]
            ds = xr.concat(parts, dim="time", combine_attrs="drop_conflicts")
            ds.attrs.pop("source_items", None)
            ds.attrs.pop("skipped_items", None)
            ds.attrs.pop(CACHE_ATTR, None)
            joined[key] = ds
        if all(v is None for v in joined.values()):
            raise PayeshError("a run needs the monthly data of at least one product")
        return cls(
            s2=joined["s2"],
            landsat=joined["landsat"],
            viirs=joined["viirs"],
            source_items=items,
            skipped_items={k: v for k, v in skipped.items() if v},
        )


@dataclass(frozen=True)
class Indicators:
    """Everything a run produces, ready to commit."""

    groups: dict[str, xr.Dataset]
    sites: gpd.GeoDataFrame
    provenance: dict[str, Any]

    def summary(self) -> str:
        """A few lines a person reads after a run."""
        tiles = self.groups["tiles"]
        n_t = tiles.sizes["time"]
        n_tiles = tiles.sizes["tile_y"] * tiles.sizes["tile_x"]
        status = self.sites["status"].value_counts().to_dict() if len(self.sites) else {}
        flagged = int(tiles["load_suspect"].max("time").sum()) if "load_suspect" in tiles else 0
        return (
            f"{n_tiles} tiles × {n_t} months; sites: {len(self.sites)} "
            f"({status.get('unauthorized', 0)} unauthorized, {status.get('permitted', 0)} permitted); "
            f"tiles flagged for unexplained load: {flagged}"
        )


def pixel_months(monthly: MonthlyData) -> xr.Dataset | None:
    """The monthly layers of the ``pixels`` group as the store gets them, when the months
    were classified as they were made (:func:`s2_month_layers`); ``None`` otherwise.

    ``builtup_prob`` and ``true_colour``, staged or in memory: what
    :func:`compute_indicators` puts in ``groups["pixels"]`` beside ``first_seen``.
    """
    s2 = monthly.s2
    if s2 is None or "builtup_prob" not in s2:
        return None
    if TRUE_COLOUR not in s2 and "red" in s2:
        return None  # true colour is made by compute_indicators
    names = ["builtup_prob"] + ([TRUE_COLOUR] if TRUE_COLOUR in s2 else [])
    return xr.Dataset({name: s2[name] for name in names})
