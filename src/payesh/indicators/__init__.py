"""Indicators per tile and month: energy use (:mod:`.energy`) and construction
(:mod:`.construction`), on tiles built by :mod:`.tiles`."""

from __future__ import annotations

from payesh.indicators.construction import (
    construction_tile_indicators,
    extract_sites,
    match_permits,
    persistence,
    persistent_builtup,
)
from payesh.indicators.energy import (
    electricity_estimate,
    load_suspect,
    lst_tile_indicators,
    ntl_anomaly,
    ntl_tile_indicators,
    ntl_tile_weights,
    ntl_trend,
)
from payesh.indicators.tiles import tile_coords_dataset, tile_reduce

__all__ = [
    "construction_tile_indicators",
    "electricity_estimate",
    "extract_sites",
    "load_suspect",
    "lst_tile_indicators",
    "match_permits",
    "ntl_anomaly",
    "ntl_tile_indicators",
    "ntl_tile_weights",
    "ntl_trend",
    "persistence",
    "persistent_builtup",
    "tile_coords_dataset",
    "tile_reduce",
]
