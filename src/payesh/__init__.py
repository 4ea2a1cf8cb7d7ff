"""payesh — watch cities from space.

The few things a notebook user calls; everything else lives in focused modules
(``payesh.city``, ``payesh.grid``, ``payesh.sources``, ``payesh.indicators``, ...).
They are imported on first use, so ``import payesh`` (and the CLI's ``--help``) stays
fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "City": "payesh.city",
    "list_cities": "payesh.city",
    "load_city": "payesh.city",
    "PayeshError": "payesh.errors",
    "city_geobox": "payesh.grid",
    "tile_grid": "payesh.grid",
    "load_imagery": "payesh.imagery",
    "history": "payesh.store",
    "open_indicators": "payesh.store",
    "open_sites": "payesh.store",
    "open_tree": "payesh.store",
}

__all__ = [
    "City",
    "PayeshError",
    "__version__",
    "city_geobox",
    "history",
    "list_cities",
    "load_city",
    "load_imagery",
    "open_indicators",
    "open_sites",
    "open_tree",
    "tile_grid",
]

if TYPE_CHECKING:
    from payesh.city import City, list_cities, load_city
    from payesh.errors import PayeshError
    from payesh.grid import city_geobox, tile_grid
    from payesh.imagery import load_imagery
    from payesh.store import history, open_indicators, open_sites, open_tree


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'payesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
