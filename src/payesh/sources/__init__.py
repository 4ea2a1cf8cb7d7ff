"""Finding and reading imagery: STAC search, provider profiles, loading onto a city grid.

Nothing here knows what is computed from the pixels.
"""

from payesh.sources.load import load_landsat_lst, load_s2, load_viirs
from payesh.sources.profiles import PRODUCTS, Product, product_for_collection
from payesh.sources.stac import Catalog, open_catalog

__all__ = [
    "PRODUCTS",
    "Catalog",
    "Product",
    "load_landsat_lst",
    "load_s2",
    "load_viirs",
    "open_catalog",
    "product_for_collection",
]
