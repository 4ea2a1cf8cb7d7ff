"""Products and provider profiles: which collection, which assets, under which keys.

A profile is data. Adding a provider means adding the asset keys it uses for a
product (:class:`Product`) and, where its assets need more than a plain GET, a
:class:`Provider` saying where its assets live and how URLs are signed; the loading code
reads everything else (scale, offset, nodata) from the items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlparse

from payesh.errors import SourceError

__all__ = [
    "PRODUCTS",
    "PROVIDERS",
    "S2_SATURATED_DN",
    "Product",
    "Provider",
    "product_for_collection",
    "provider_for_href",
]


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

S2_SATURATED_DN = 65535
"""Sentinel-2 L1C/L2A special value SATURATED (0 is NODATA): not a reflectance (it would
read as 6.5); such a band value is missing, whatever SCL says of the pixel."""


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


@dataclass(frozen=True)
class Provider:
    """Where a provider keeps its assets, and what reading them takes.

    Attributes
    ----------
    name : str
        Short name (``earth-search``, ``planetary-computer``).
    catalog_urls : tuple of str
        Root URLs of its STAC API (for reference and :func:`provider_for_href`).
    asset_hosts : tuple of str
        Host names, or suffixes starting with ``.``, that its asset hrefs point at.
    sign : str or None
        The signer (a key of :data:`payesh.sources.signing.SIGNERS`) applied to item
        copies right before their assets are read, never at search time: signed URLs
        expire (Planetary Computer's SAS tokens after about 45 minutes).
    """

    name: str
    catalog_urls: tuple[str, ...] = ()
    asset_hosts: tuple[str, ...] = ()
    sign: str | None = None

    def serves(self, href: str) -> bool:
        """Whether ``href`` (an asset or catalog URL) belongs to this provider."""
        if any(href.rstrip("/").startswith(u.rstrip("/")) for u in self.catalog_urls):
            return True
        host = (urlparse(href).hostname or "").lower()
        return bool(host) and any(
            host.endswith(h) if h.startswith(".") else host == h for h in self.asset_hosts
        )


EARTH_SEARCH = Provider(
    name="earth-search",
    catalog_urls=("https://earth-search.aws.element84.com/v1",),
    asset_hosts=(
        "sentinel-cogs.s3.us-west-2.amazonaws.com",
        "usgs-landsat.s3.us-west-2.amazonaws.com",
    ),
)

PLANETARY_COMPUTER = Provider(
    name="planetary-computer",
    catalog_urls=("https://planetarycomputer.microsoft.com/api/stac/v1",),
    asset_hosts=(".blob.core.windows.net",),
    sign="planetary-computer",
)

PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {p.name: p for p in (EARTH_SEARCH, PLANETARY_COMPUTER)}
)


def provider_for_href(href: str) -> Provider | None:
    """The provider whose assets (or STAC API) ``href`` points at, if payesh knows it."""
    for provider in PROVIDERS.values():
        if provider.serves(href):
            return provider
    return None
