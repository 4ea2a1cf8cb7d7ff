"""Indicators per tile and month: energy use (night lights :mod:`.nightlights`, their
anomalies :mod:`.anomaly` and trends :mod:`.trend`, heat :mod:`.lst`, the electricity
estimate :mod:`.electricity` and suspect loads :mod:`.suspect`, all re-exported by the
facade :mod:`.energy`) and construction (:mod:`.construction`), on tiles built by
:mod:`.tiles`."""

from __future__ import annotations

from payesh.indicators.anomaly import ntl_anomaly
from payesh.indicators.construction import (
    construction_tile_indicators,
    extract_sites,
    match_permits,
    persistence,
    persistent_builtup,
)
from payesh.indicators.electricity import electricity_estimate
from payesh.indicators.lst import lst_tile_indicators
from payesh.indicators.nightlights import ntl_tile_indicators, ntl_tile_weights
from payesh.indicators.suspect import load_suspect
from payesh.indicators.tiles import tile_coords_dataset, tile_reduce
from payesh.indicators.trend import ntl_trend

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
