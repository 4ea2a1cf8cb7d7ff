"""Products and provider profiles: which collection, which assets, under which keys.

A profile is data. Adding a provider means adding the asset keys it uses for a
product; the loading code reads everything else (scale, offset, nodata) from the items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from payesh.errors import SourceError

__all__ = ["PRODUCTS", "Product", "product_for_collection"]


@dataclass(frozen=True)
class Product:
    """A kind of imagery payesh reads.

    Attributes
    ----------
    key : str
        payesh's short name (``s2``, ``landsat``, ``viirs``).
    collections : tuple of str
        STAC collection ids that hold it (Earth Search, Planetary Computer, ...).
    bands : mapping
        payesh band name -> candidate asset keys, tried in order (first present wins).
    """

    key: str
    collections: tuple[str, ...]
    bands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def asset_key(self, band: str, available: set[str] | frozenset[str]) -> str | None:
        """The asset key that holds ``band`` among ``available`` keys, if any."""
        for key in self.bands[band]:
            if key in available:
                return key
        return None


# Earth Search v1 keys first, then Planetary Computer's.
S2 = Product(
    key="s2",
    collections=("sentinel-2-l2a",),
    bands=MappingProxyType(
        {
            "blue": ("blue", "B02"),
            "green": ("green", "B03"),
            "red": ("red", "B04"),
            "nir": ("nir", "B08"),
            "swir16": ("swir16", "B11"),
            "swir22": ("swir22", "B12"),
            "scl": ("scl", "SCL"),
        }
    ),
)

LANDSAT = Product(
    key="landsat",
    collections=("landsat-c2-l2",),
    bands=MappingProxyType({"lwir11": ("lwir11",), "qa_pixel": ("qa_pixel",)}),
)

VIIRS = Product(
    key="viirs",
    collections=("viirs-ntl-monthly",),
    bands=MappingProxyType({"radiance": ("radiance",), "cf_cvg": ("cf_cvg",)}),
)

PRODUCTS: Mapping[str, Product] = MappingProxyType({p.key: p for p in (S2, LANDSAT, VIIRS)})


def product_for_collection(collection: str) -> Product:
    """The product a STAC collection id holds.

    Raises
    ------
    SourceError
        When payesh does not know the collection.
    """
    for product in PRODUCTS.values():
        if collection in product.collections:
            return product
    known = ", ".join(c for p in PRODUCTS.values() for c in p.collections)
    raise SourceError(f"unknown collection {collection!r} (payesh reads: {known})")
