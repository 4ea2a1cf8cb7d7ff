"""Masked imagery of a city for notebooks: search → load → mask, lazily, on the city grid.

:func:`load_imagery` is what a data scientist calls to look at the pixels behind the
indicators. It wires the functions the monitoring run uses — :mod:`payesh.sources`
(STAC search, loading in physical units) and :mod:`payesh.masking` (clouds, shadows,
fill and no-coverage become NaN) — and computes nothing: the result is Dask-backed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr
from odc.geo.geobox import GeoBox

from payesh.city import City, load_city
from payesh.errors import SourceError
from payesh.grid import aligned_geobox, city_geobox
from payesh.masking import mask_landsat, mask_s2, mask_viirs
from payesh.period import Period
from payesh.plan import native_origin
from payesh.sources.load import S2_REFLECTANCE, load_landsat_lst, load_s2, load_viirs
from payesh.sources.profiles import PRODUCTS
from payesh.sources.stac import open_catalog

__all__ = ["LANDSAT_RESOLUTION_M", "load_imagery", "product_geobox"]

#: Landsat surface temperature is loaded on a 30 m grid nested in the city's tiles.
LANDSAT_RESOLUTION_M = 30.0


def product_geobox(city: City, product: str, items: Sequence[Any] = ()) -> GeoBox:
    """The grid a product is loaded on for ``city``.

    ``s2``: the city grid (:func:`payesh.grid.city_geobox`); ``landsat``: a 30 m grid
    nested in the tiles; ``viirs``: the night-light grid on the items' own pixel lattice
    (EPSG:4326), so no night-light pixel is resampled.
    """
    if product == "s2":
        return city_geobox(city)
    if product == "landsat":
        return aligned_geobox(city, LANDSAT_RESOLUTION_M)
    if product == "viirs":
        from payesh.grid import ntl_geobox

        origin = native_origin(items[0], "radiance") if items else (0.0, 0.0)
        return ntl_geobox(city, origin=origin)
    raise SourceError(f"unknown product {product!r}; valid products: {', '.join(PRODUCTS)}")


def load_imagery(
    city: City | str | os.PathLike[str],
    product: str,
    start: str,
    end: str,
    *,
    catalog: str | os.PathLike[str],
    bands: Sequence[str] | None = None,
    chunks: Mapping[str, int] | None = None,
    buffer_px: int = 0,
    mask_snow: bool = False,
) -> xr.Dataset:
    """Masked imagery of one product over a city, every acquisition from ``start`` to ``end``.

    Parameters
    ----------
    city
        A :class:`~payesh.city.City`, a manifest name (``datasets/cities``) or a manifest path.
    product
        ``s2`` (Sentinel-2 L2A reflectance), ``landsat`` (Landsat C2 L2 surface
        temperature) or ``viirs`` (VIIRS monthly night lights).
    start, end
        First and last month, ``YYYY-MM`` (both included).
    catalog
        A STAC API URL or the path of a static ``catalog.json``.
    bands
        Sentinel-2 reflectance bands (default ``blue green red nir swir16 swir22``);
        ignored for the other products.
    chunks
        Dask chunks, e.g. ``{"time": 1, "y": 1024, "x": 1024}``; default one chunk per
        scene.
    buffer_px
        Sentinel-2: dilate clouds and shadows by this many pixels before masking.
    mask_snow
        Sentinel-2: also mask snow and ice.

    Returns
    -------
    xarray.Dataset
        Lazy (Dask-backed), dims ``(time, y, x)``, one time step per acquisition, with a
        ``spatial_ref`` coordinate (read by odc-geo, rioxarray and GDAL):

        * ``s2``: float32 reflectance per band (units ``1``) and bool ``clear`` /
          ``observed``, on the city grid (``city.resolution`` metres in ``city.crs``);
        * ``landsat``: ``lst`` float32 °C and ``clear``, on a 30 m grid nested in the tiles;
        * ``viirs``: ``radiance`` float32 nW cm-2 sr-1 and ``cf_cvg``, on the native
          15-arc-second EPSG:4326 grid covering the city.

        Masked observations (cloud, shadow, fill; for night lights no cloud-free
        coverage) are NaN, never 0. ``attrs`` hold ``product``, ``city`` and
        ``source_items`` (the STAC item ids read).

    Raises
    ------
    SourceError
        Unknown product; the catalog is missing or holds no items of the product over the
        city in the period.
    ManifestError, PayeshError
        Unknown city or manifest problem; months not written ``YYYY-MM``.
    """
    if product not in PRODUCTS:
        raise SourceError(f"unknown product {product!r}; valid products: {', '.join(PRODUCTS)}")
    the_city = city if isinstance(city, City) else load_city(city)
    period = Period.parse(start, end)
    cat = open_catalog(str(catalog))
    spec = PRODUCTS[product]
    available = cat.collections()
    collections = [c for c in spec.collections if c in available]
    t0, t1 = period.datetime_range()
    items = (
        cat.search(collections=collections, bbox=the_city.bbox, start=t0, stop=t1)
        if collections
        else []
    )
    if not items:
        raise SourceError(
            f"no {'/'.join(spec.collections)} items over {the_city.name} during {period} "
            f"in catalog {catalog} (it has: {', '.join(sorted(available)) or 'no collections'})"
        )
    geobox = product_geobox(the_city, product, items)
    if product == "s2":
        wanted = tuple(bands) if bands is not None else S2_REFLECTANCE
        raw = load_s2(items, geobox, bands=wanted, chunks=chunks)
        out = mask_s2(raw, wanted, mask_snow=mask_snow, buffer_px=buffer_px)
    elif product == "landsat":
        lazy = chunks if chunks is not None else {}  # one chunk per scene: no surprise compute
        out = mask_landsat(load_landsat_lst(items, geobox, chunks=lazy))
    else:
        lazy = chunks if chunks is not None else {}
        out = mask_viirs(load_viirs(items, geobox, chunks=lazy))
    out.attrs = {
        **out.attrs,
        "product": product,
        "city": the_city.name,
        "source_items": [i.id for i in items],
    }
    return out
