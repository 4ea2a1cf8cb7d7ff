"""payesh.synthetic — an offline, seeded demo city that looks like what real providers serve.

:func:`generate_city` writes a static STAC catalog (Sentinel-2 L2A in the Earth Search v1
layout, Landsat C2 L2 surface temperature, VIIRS monthly night lights) of a growing city,
the city manifest with its permits and reported consumption, and the ground truth that
:func:`load_truth` reads back.
"""

from __future__ import annotations

from .generate import DemoSpecError, generate_city
from .grid import DemoSpec, GeneratedCity, city_grids
from .truth import Truth, TruthLoad, TruthSite, TruthTrap, load_truth

__all__ = [
    "DemoSpec",
    "DemoSpecError",
    "GeneratedCity",
    "Truth",
    "TruthLoad",
    "TruthSite",
    "TruthTrap",
    "city_grids",
    "generate_city",
    "load_truth",
]
