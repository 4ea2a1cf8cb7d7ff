"""STAC search through one interface for static catalogs on disk and STAC APIs.

A static catalog is walked once and filtered locally by collection, bbox and time; a
STAC API is searched with pystac-client, page by page, every request retried with
backoff on 429/5xx answers, timeouts and dropped connections (see
:mod:`payesh.sources.http`) before one :class:`~payesh.errors.SourceError` reports it.
Either way the result is a list of ``pystac.Item``, sorted by time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pystac

from payesh.errors import SourceError
from payesh.sources.http import DEFAULT_POLICY, RetryingStacApiIO, RetryPolicy
from payesh.sources.profiles import product_for_collection

__all__ = ["Catalog", "open_catalog"]


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _item_time(item: pystac.Item) -> datetime:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise SourceError(f"item {item.id!r} has no datetime")
    return dt


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
        How requests to a STAC API are retried (unused for a static catalog).
    page_size
        Items per page of an API search (the ``limit`` sent; the server may give fewer).
    """

    location: str
    retry: RetryPolicy = DEFAULT_POLICY
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
            except (OSError, ValueError, KeyError, pystac.STACError) as err:
                raise SourceError(f"{self.location}: cannot read the STAC catalog: {err}") from err
        return self._static_items

    def collections(self) -> set[str]:
        """Collection ids of the items the catalog holds (static) or offers (API)."""
        if self.is_api:
            from pystac_client.exceptions import APIError

            client = self._client()
            try:
                return {c.id for c in client.get_collections()}
            except APIError as err:
                raise SourceError(
                    f"STAC API {self.location}: cannot list its collections: {err}"
                ) from err
        return {i.collection_id for i in self._walk() if i.collection_id}

    def _client(self) -> Any:
        if self._api is None:
            from pystac_client import Client
            from pystac_client.exceptions import APIError

            io = RetryingStacApiIO(self.retry)
            try:
                self._api = Client.open(self.location, stac_io=io, timeout=self.retry.timeout)
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
            items = self._search_api(wanted, bbox, start, stop)
        else:
            items = [
                i
                for i in self._walk()
                if i.collection_id in wanted
                and i.bbox is not None
                and _bbox_intersects(i.bbox, bbox)
                and start <= _item_time(i) < stop
            ]
        return sorted(items, key=lambda i: (_item_time(i), i.id))

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
        return [i for i in items if _item_time(i) < stop]


def open_catalog(
    location: str | Path,
    *,
    retry: RetryPolicy = DEFAULT_POLICY,
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
