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
from payesh.sources.aws import check_credentials
from payesh.sources.profiles import PRODUCTS, product_for_collection
from payesh.sources.stac import open_catalog
from payesh.sources.validate import any_remote, skip_bad_items, skipped_ids

__all__ = ["NIGHT_LIGHTS", "RunPlan", "native_origin", "plan_run"]

#: Where a run's night lights come from: the STAC catalog's ``viirs-ntl-monthly`` items,
#: or NASA Black Marble VNP46A3 monthly tiles from LAADS DAAC (Earth Search and Planetary
#: Computer hold no night lights).
NIGHT_LIGHTS = ("stac", "blackmarble")


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

    from payesh.sources.inflight import request_slot
    from payesh.sources.signing import sign_items

    href = sign_items([item])[0].assets[asset_key].get_absolute_href()
    try:
        with request_slot(), rasterio.open(href) as src:
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
    night_lights: str = "stac"

    def month_items(self, product: str, month: pd.Timestamp) -> list[pystac.Item]:
        """Items of ``product`` acquired during ``month``."""
        out = []
        for item in self.items.get(product, []):
            assert item.datetime is not None
            t = pd.Timestamp(item.datetime.replace(tzinfo=None))
            if t.year == month.year and t.month == month.month:
                out.append(item)
        return out

    def reads_remote(self) -> bool:
        """Whether any item's assets are read over a network (http, s3, GDAL ``/vsi``):
        such reads wait on round trips more than on the cores."""
        return any(any_remote(items) for items in self.items.values())

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
            source = " (Black Marble)" if k == "viirs" and self.night_lights != "stac" else ""
            parts.append(f"{k}: {len(v)} items{source}" + (f" ({bad} skipped)" if bad else ""))
        return f"{self.city.name} {self.period} from {self.catalog} — " + ", ".join(parts)


def plan_run(
    city: City,
    catalog: str,
    period: Period,
    *,
    collections: Sequence[str] | None = None,
    night_lights: str = "stac",
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
    night_lights
        ``stac`` (the catalog's ``viirs-ntl-monthly``) or ``blackmarble``: NASA Black
        Marble VNP46A3 tiles over the city, listed on LAADS DAAC (``PAYESH_LAADS_URL``,
        default the real archive) with the Earthdata token in ``EARTHDATA_TOKEN``; each
        file becomes an item (id: the file name, which carries its production time).
        Months LAADS has not published are left out with a ``MissingDataWarning``.

    Raises
    ------
    SourceError
        Catalog missing or unreadable, an unknown collection, no item of any product
        over the city (a product without items is left out with a ``MissingDataWarning``),
        an unknown ``night_lights``, or Black Marble wanted without a token.
    """
    if night_lights not in NIGHT_LIGHTS:
        raise SourceError(
            f"night lights {night_lights!r}: not a source payesh reads ({', '.join(NIGHT_LIGHTS)})"
        )
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
        if product.key == "viirs" and night_lights == "blackmarble":
            found = _blackmarble_items(city, period)
            if found:
                items[product.key] = found
            else:
                missing.append("Black Marble VNP46A3")
            continue
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
        keys = {k for candidates in product.bands.values() for k in candidates}
        check_credentials(found, keys, what=product.key)  # before anything is read
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
    return RunPlan(
        city=city,
        period=period,
        catalog=cat.location,
        items=items,
        skipped=skipped,
        night_lights=night_lights,
    )


def _blackmarble_items(city: City, period: Period) -> list[pystac.Item]:
    """Black Marble VNP46A3 files over ``city`` for ``period``, listed on LAADS DAAC;
    months or tiles not there are warned about (``MissingDataWarning``)."""
    from payesh.sources import laads
    from payesh.sources.http import current_policy

    base = laads.laads_url()
    found, missing = laads.search_granules(
        city.bbox,
        list(period.months),
        token=laads.earthdata_token(),
        base=base,
        policy=current_policy(),
    )
    if missing and found:
        warnings.warn(
            f"Black Marble VNP46A3 over {city.name}: nothing on {base} for {', '.join(missing)}; "
            f"the night-light indicators of those months are missing",
            MissingDataWarning,
            stacklevel=3,
        )
    return found


def months_with_data(plan: RunPlan, product: str) -> np.ndarray:
    """Boolean per month of the run: whether ``product`` has any item then."""
    return np.array([bool(plan.month_items(product, m)) for m in plan.months])
