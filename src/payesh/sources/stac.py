"""STAC search through one interface for static catalogs on disk and STAC APIs.

A static catalog is walked once and filtered locally by collection, bbox and time; a
STAC API is searched with pystac-client. Either way the result is a list of
``pystac.Item``, sorted by time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pystac

from payesh.errors import SourceError
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


@dataclass
class Catalog:
    """A place to find imagery: a static catalog's ``catalog.json`` or a STAC API URL."""

    location: str
    _static_items: list[pystac.Item] | None = field(default=None, repr=False)

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
            client = self._client()
            return {c.id for c in client.get_collections()}
        return {i.collection_id for i in self._walk() if i.collection_id}

    def _client(self):  # type: ignore[no-untyped-def]
        from pystac_client import Client
        from pystac_client.exceptions import APIError

        try:
            return Client.open(self.location)
        except (APIError, OSError, ValueError) as err:
            raise SourceError(f"{self.location}: cannot open the STAC API: {err}") from err

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
            )
            items = list(search.items())
        except (APIError, OSError) as err:
            raise SourceError(f"{self.location}: search failed: {err}") from err
        return [i for i in items if _item_time(i) < stop]


def open_catalog(location: str | Path) -> Catalog:
    """A :class:`Catalog` for a STAC API URL or the path of a static ``catalog.json``.

    Raises
    ------
    SourceError
        When the path does not exist or is not a STAC catalog.
    """
    text = str(location)
    if _is_url(text):
        return Catalog(text)
    path = Path(text)
    if path.is_dir():
        path = path / "catalog.json"
    if not path.is_file():
        raise SourceError(f"catalog {text} does not exist (give a catalog.json or a STAC API URL)")
    catalog = Catalog(str(path.resolve()))
    catalog._walk()
    return catalog
