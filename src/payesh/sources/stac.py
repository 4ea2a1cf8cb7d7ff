"""STAC search through one interface for static catalogs on disk and STAC APIs.

A static catalog is walked once and filtered locally by collection, bbox and time; a
STAC API is searched with pystac-client, page by page, every request retried with
backoff on 429/5xx answers, timeouts and dropped connections (see
:mod:`payesh.sources.stac_io` and :mod:`payesh.sources.retry`) before one
:class:`~payesh.errors.SourceError` reports it.
Either way the result is a list of ``pystac.Item``, sorted by time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac

from payesh.errors import SourceError
from payesh.sources.http import RetryingStacApiIO, RetryPolicy, current_policy
from payesh.sources.profiles import product_for_collection

__all__ = ["Catalog", "open_catalog"]


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _item_time(item: pystac.Item, where: str = "") -> datetime:
    """When ``item`` was acquired, time-zone aware: a time without a zone is taken as UTC.

    ``where`` (the catalog, ending in ": ") prefixes the error of an item without a
    readable time.
    """
    try:
        dt = item.datetime or item.common_metadata.start_datetime
    except (ValueError, TypeError, OverflowError) as err:
        raise SourceError(f"{where}item {item.id!r}: start_datetime is not a time: {err}") from err
    if dt is None:
        raise SourceError(f"{where}item {item.id!r} has no datetime")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _item_bbox(item: pystac.Item, where: str = "") -> tuple[float, float, float, float] | None:
    """``item``'s bbox as (west, south, east, north) degrees; a 3-D bbox loses its heights."""
    raw = item.bbox
    if raw is None:
        return None
    bad = SourceError(
        f"{where}item {item.id!r}: bbox {raw!r} is not [west, south, east, north] "
        "(or the 6 numbers of a 3-D bbox)"
    )
    if not isinstance(raw, list | tuple) or len(raw) not in (4, 6):
        raise bad
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError) as err:
        raise bad from err
    if len(values) == 6:  # [west, south, min height, east, north, max height]
        values = [values[0], values[1], values[3], values[4]]
    if not all(math.isfinite(v) for v in values):
        raise bad
    return values[0], values[1], values[2], values[3]


def _bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return not (a[2] < b[0] or a[0] > b[2] or a[3] < b[1] or a[1] > b[3])


#: Items asked for per page of a STAC API search.
DEFAULT_PAGE_SIZE = 100


@dataclass
class Catalog:
    """A place to find imagery: a static catalog's ``catalog.json`` or a STAC API URL.

    Parameters
    ----------
    location
        The path of a ``catalog.json`` or the root URL of a STAC API.
    retry
        How requests to a STAC API are retried (unused for a static catalog); ``None``:
        the process-wide policy (:func:`payesh.sources.retry.current_policy`).
    page_size
        Items per page of an API search (the ``limit`` sent; the server may give fewer).
    """

    location: str
    retry: RetryPolicy | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    _static_items: list[pystac.Item] | None = field(default=None, repr=False)
    _api: Any = field(default=None, repr=False)

    @property
    def is_api(self) -> bool:
        """Whether this is a STAC API (searched remotely) rather than a static catalog."""
        return _is_url(self.location)

    def _walk(self) -> list[pystac.Item]:
        if self._static_items is None:
            try:
                root = pystac.Catalog.from_file(self.location)
                self._static_items = list(root.get_items(recursive=True))
            # a JSON list or a non-STAC document fails inside pystac with a TypeError,
            # an AttributeError or a STACTypeError (not a STACError)
            except (
                OSError,
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
                pystac.STACError,
                pystac.STACTypeError,
            ) as err:
                raise SourceError(f"{self.location}: cannot read the STAC catalog: {err}") from err
            for item in self._static_items:
                if not isinstance(item.id, str) or not item.id:
                    raise SourceError(
                        f"{self.location}: item {item.get_self_href()} has id {item.id!r}; "
                        "an item's id is a non-empty string"
                    )
        return self._static_items

    def collections(self) -> set[str]:
        """Collection ids of the items the catalog holds (static) or offers (API)."""
        if self.is_api:
            from pystac_client.exceptions import APIError

            client = self._client()
            try:
                return {c.id for c in client.get_collections()}
            except (APIError, pystac.STACError) as err:
                # pystac re-raises a failed root link as "does not resolve": say why
                cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
                raise SourceError(
                    f"STAC API {self.location}: cannot list its collections: {err}{cause}"
                ) from err
        return {i.collection_id for i in self._walk() if i.collection_id}

    def _client(self) -> Any:
        if self._api is None:
            from pystac_client import Client
            from pystac_client.exceptions import APIError

            policy = self.retry or current_policy()
            io = RetryingStacApiIO(policy)
            try:
                self._api = Client.open(self.location, stac_io=io, timeout=policy.timeout)
            except (APIError, OSError, ValueError, pystac.STACError) as err:
                raise SourceError(f"STAC API {self.location}: cannot open it: {err}") from err
        return self._api

    def search(
        self,
        *,
        collections: Iterable[str],
        bbox: Sequence[float],
        start: datetime,
        stop: datetime,
    ) -> list[pystac.Item]:
        """Items of ``collections`` over ``bbox`` (lon/lat) with ``start <= time < stop``."""
        wanted = list(collections)
        for c in wanted:
            product_for_collection(c)  # unknown collection ids fail here, clearly
        if self.is_api:
            where = f"STAC API {self.location}: "
            items = self._search_api(wanted, bbox, start, stop)
        else:
            where = f"{self.location}: "
            items = []
            for i in self._walk():
                if i.collection_id not in wanted:
                    continue
                box = _item_bbox(i, where)
                if box is not None and _bbox_intersects(box, bbox):
                    if start <= _item_time(i, where) < stop:
                        items.append(i)
        return sorted(items, key=lambda i: (_item_time(i, where), str(i.id)))

    def _search_api(
        self, collections: list[str], bbox: Sequence[float], start: datetime, stop: datetime
    ) -> list[pystac.Item]:
        from pystac_client.exceptions import APIError

        client = self._client()
        try:
            search = client.search(
                collections=collections,
                bbox=list(bbox),
                datetime=[start, stop],
                limit=self.page_size,
            )
            items = list(search.items())
        except (APIError, OSError, pystac.STACError) as err:
            raise SourceError(
                f"STAC API {self.location}: search of {', '.join(collections)} failed: {err}"
            ) from err
        return [i for i in items if _item_time(i, f"STAC API {self.location}: ") < stop]


def open_catalog(
    location: str | Path,
    *,
    retry: RetryPolicy | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Catalog:
    """A :class:`Catalog` for a STAC API URL or the path of a static ``catalog.json``.

    ``retry`` and ``page_size`` apply to a STAC API (see :class:`Catalog`).

    Raises
    ------
    SourceError
        When the path does not exist or is not a STAC catalog.
    """
    text = str(location)
    if _is_url(text):
        return Catalog(text, retry=retry, page_size=page_size)
    path = Path(text)
    if path.is_dir():
        path = path / "catalog.json"
    if not path.is_file():
        raise SourceError(f"catalog {text} does not exist (give a catalog.json or a STAC API URL)")
    catalog = Catalog(str(path.resolve()))
    catalog._walk()
    return catalog
