"""A run's product-months through the month cache (:mod:`payesh.monthcache`).

:func:`kept_month` opens a month kept by an earlier run under the same key, or makes it
and keeps it for the next; it marks each month it returns (:data:`CACHE_ATTR`) with its
key and whether it was found, and :func:`cache_use` reads those marks back: what the run
took from the cache (:class:`CacheUse`), and the keys a committed run keeps when the
cache is pruned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import xarray as xr

from payesh import runkeys
from payesh.grid import tile_grid
from payesh.plan import RunPlan

__all__ = ["CACHE_ATTR", "CacheUse", "cache_use", "kept_month"]


#: Attribute a month made by :func:`kept_month` carries for the run: ``key:hit|made``.
CACHE_ATTR = "payesh_month_cache"


def kept_month(
    plan: RunPlan,
    product: str,
    month: pd.Timestamp,
    make: Callable[[], xr.Dataset],
    *,
    cache: Path | None,
    reuse: bool = True,
) -> xr.Dataset:
    """``product``'s ``month`` from the month cache (:mod:`payesh.monthcache`) when a
    month of the same key is kept there (and ``reuse``), else ``make()``, kept for the
    next run — unless an item of it was skipped as unreadable: that month is made again
    by every run until it reads whole. Without ``cache``, ``make()``. Sentinel-2 and
    Landsat months come back lazily, as staged; night-light months in memory.
    ``attrs[CACHE_ATTR]`` says which (``<key>:hit`` or ``<key>:made``), for the run to
    count and to prune by (:func:`cache_use`)."""
    if cache is None:
        return make()
    from payesh import monthcache

    key = monthcache.month_key(
        product,
        month,
        city=plan.city,
        item_ids=plan.item_ids(product, month),
        model_version=runkeys.model_fingerprint() if product == "s2" else "",
    )
    kept = monthcache.get(cache, plan.city, product, month, key) if reuse else None
    how = "hit"
    if kept is None:
        how = "made"
        made = make()
        if made.attrs.get("skipped_items"):
            # an item of the month could not be read: the month is made again by the next
            # run (the provider may fix the file under the same id), so it is kept only
            # for this run, under a name no run looks up
            key = f"{key}.{uuid.uuid4().hex[:8]}"
        tile_px = tile_grid(plan.city).tile_pixels
        kept = monthcache.put(cache, plan.city, product, month, key, made, tile_pixels=tile_px)
    if product == "viirs":  # a few kB a month
        kept = kept.load()
    kept.attrs[CACHE_ATTR] = f"{key}:{how}"
    return kept


@dataclass(frozen=True)
class CacheUse:
    """What a run's months took from the month cache: the keys it used (to keep them, see
    :func:`payesh.monthcache.prune`) and, per product, how many months were found kept."""

    keys: list[str] = field(default_factory=list)
    from_cache: dict[str, int] = field(default_factory=dict)
    months: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """``s2 11 of 12, landsat 12 of 12``."""
        return ", ".join(f"{k} {n} of {self.months[k]}" for k, n in self.from_cache.items())


def cache_use(monthly: Mapping[str, list[xr.Dataset]]) -> CacheUse:
    """Read (and take off) the marks :func:`kept_month` put on a run's months."""
    use = CacheUse()
    for product, months in monthly.items():
        for ds in months:
            mark = ds.attrs.pop(CACHE_ATTR, None)
            if mark is None:
                continue
            key, how = str(mark).rsplit(":", 1)
            use.keys.append(key)
            use.months[product] = use.months.get(product, 0) + 1
            use.from_cache[product] = use.from_cache.get(product, 0) + (how == "hit")
    return use
