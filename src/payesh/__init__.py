"""payesh — watch cities from space.

The few things a notebook user calls; everything else lives in focused modules
(``payesh.city``, ``payesh.grid``, ``payesh.sources``, ``payesh.indicators``, ...).
"""

from __future__ import annotations

__version__ = "0.1.0"

from payesh.city import City, list_cities, load_city
from payesh.errors import PayeshError
from payesh.grid import city_geobox, tile_grid
from payesh.store import history, open_indicators, open_sites

__all__ = [
    "City",
    "PayeshError",
    "__version__",
    "city_geobox",
    "history",
    "list_cities",
    "load_city",
    "open_indicators",
    "open_sites",
    "tile_grid",
]
