"""What a run will read: the STAC items of each product over a city and period.

Planning searches the catalog once and fails early, with one clear message, when the
catalog does not exist, holds no Sentinel-2 over the city, or a collection is unknown.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pystac
from odc.geo.geobox import GeoBox

from payesh.city import City
from payesh.errors import MissingDataWarning, SourceError
from payesh.grid import grid_origin, ntl_geobox
from payesh.period import Period
from payesh.sources.profiles import PRODUCTS, product_for_collection
from payesh.sources.stac import open_catalog
from payesh.sources.validate import skip_bad_items, skipped_ids

__all__ = ["RunPlan", "native_origin", "plan_run"]


def native_origin(item: pystac.Item, asset_key: str) -> tuple[float, float]:
    """A pixel corner of an asset's grid, from ``proj:transform`` or else the file itself."""
    asset = item.assets.get(asset_key)
    if asset is None:
        raise SourceError(f"item {item.id!r} has no {asset_key!r} asset")
    transform = asset.extra_fields.get("proj:transform") or item.properties.get("proj:transform")
    if transform:
        values = list(transform) if isinstance(transform, list | tuple) else []
        ok = len(values) >= 6 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values[:6]
        )
        if not ok or values[0] == 0 or values[4] == 0:
            raise SourceError(
                f"item {item.id!r}: proj:transform {transform!r} of {asset_key!r} is not an "
                f"affine transform (six finite numbers, non-zero pixel size)"
            )
        return grid_origin(values)
    import rasterio

    from payesh.sources.signing import sign_items

    href = sign_items([item])[0].assets[asset_key].get_absolute_href()
    try:
        with rasterio.open(href) as src:
            t = src.transform
    except rasterio.errors.RasterioIOError as err:
        raise SourceError(f"item {item.id!r}: cannot open {asset_key!r}: {err}") from err
    return grid_origin([t.a, t.b, t.c, t.d, t.e, t.f])


@dataclass(frozen=True)
class RunPlan:
    """The items a run reads, by product (``s2``, ``landsat``, ``viirs``).

    ``skipped`` lists, by product, the ids of items found but left out because their
    metadata is unusable (a missing asset, no CRS), each reported by a ``BadItemWarning``.
    """

    city: City
    period: Period
    catalog: str
    items: dict[str, list[pystac.Item]]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def month_items(self, product: str, month: pd.Timestamp) -> list[pystac.Item]:
        """Items of ``product`` acquired during ``month``."""
        out = []
        for item in self.items.get(product, []):
            assert item.datetime is not None
            t = pd.Timestamp(item.datetime.replace(tzinfo=None))
            if t.year == month.year and t.month == month.month:
                out.append(item)
        return out

    def item_ids(self, product: str, month: pd.Timestamp | None = None) -> list[str]:
        """Ids of the items behind ``product`` (in ``month``, if given)."""
        items = self.items.get(product, []) if month is None else self.month_items(product, month)
        return [i.id for i in items]

    def ntl_grid(self) -> GeoBox:
        """The night-light grid over the city, on the items' own pixel lattice."""
        origin = (0.0, 0.0)
        items = self.items.get("viirs") or []
        if items:
            origin = native_origin(items[0], "radiance")
        return ntl_geobox(self.city, origin=origin)

    @property
    def months(self) -> pd.DatetimeIndex:
        """Month starts of the run."""
        return self.period.months

    def summary(self) -> str:
        """One line: how many items of each product (and how many were skipped)."""
        parts = []
        for k, v in self.items.items():
            bad = len(self.skipped.get(k, []))
            parts.append(f"{k}: {len(v)} items" + (f" ({bad} skipped)" if bad else ""))
        return f"{self.city.name} {self.period} from {self.catalog} — " + ", ".join(parts)


def plan_run(
    city: City,
    catalog: str,
    period: Period,
    *,
    collections: Sequence[str] | None = None,
) -> RunPlan:
    """Search ``catalog`` for every product payesh reads over ``city`` during ``period``.

    Parameters
    ----------
    city
        The city (its lon/lat bbox is searched).
    catalog
        A STAC API URL or the path of a static ``catalog.json``.
    period
        Months to monitor.
    collections
        Restrict to these collection ids (each must be one payesh reads).

    Raises
    ------
    SourceError
        Catalog missing or unreadable, an unknown collection, or no item of any product
        over the city (a product without items is left out with a ``MissingDataWarning``).
    """
    cat = open_catalog(catalog)
    available = cat.collections()
    wanted = list(collections) if collections is not None else None
    if wanted is not None:
        for c in wanted:
            product_for_collection(c)
            if c not in available:
                raise SourceError(
                    f"collection {c!r} is not in catalog {catalog} "
                    f"(it has: {', '.join(sorted(available)) or 'none'})"
                )
    start, stop = period.datetime_range()
    items: dict[str, list[pystac.Item]] = {}
    missing: list[str] = []
    skipped: dict[str, list[str]] = {}
    for product in PRODUCTS.values():
        cols = [c for c in product.collections if c in available]
        if wanted is not None:
            cols = [c for c in cols if c in wanted]
        if not cols:
            if wanted is None:
                missing.append("/".join(product.collections))
            continue  # not in the catalog, or left out by the user
        found = cat.search(collections=cols, bbox=city.bbox, start=start, stop=stop)
        good = skip_bad_items(found, product, tuple(product.bands), stacklevel=3)
        if len(good) < len(found):
            skipped[product.key] = skipped_ids(found, [i.id for i in good])
        found = good
        if found:
            items[product.key] = found
        else:
            missing.append("/".join(cols))
    if not items:
        every = " or ".join(c for p in PRODUCTS.values() for c in p.collections)
        raise SourceError(
            f"no {every} items over {city.name} (bbox {list(city.bbox)}) during {period} "
            f"in catalog {catalog} (it has: {', '.join(sorted(available)) or 'no collections'})"
        )
    if missing:
        # A run goes on with the products it found: a night-light-only catalog still
        # gives the energy indicators; what is missing is said, not silently dropped.
        warnings.warn(
            f"no {', '.join(missing)} items over {city.name} during {period} in {catalog}; "
            f"their indicators are left out",
            MissingDataWarning,
            stacklevel=2,
        )
    return RunPlan(city=city, period=period, catalog=cat.location, items=items, skipped=skipped)


def months_with_data(plan: RunPlan, product: str) -> np.ndarray:
    """Boolean per month of the run: whether ``product`` has any item then."""
    return np.array([bool(plan.month_items(product, m)) for m in plan.months])
