"""NASA's LAADS DAAC archive: finding, downloading and checking Black Marble files.

LAADS keeps each period's files in a folder, ``<base>/archive/allData/5200/VNP46A3/
<year>/<day of year>/`` (:func:`laads_directory_url`), with a JSON listing next to it
(``<folder>.json``: name, size and MD5 of each file). Every request carries the NASA
Earthdata token (``Authorization: Bearer``; :func:`earthdata_token` reads
``EARTHDATA_TOKEN``) and is retried on 429, 5xx and timeouts
(:func:`payesh.sources.retry.with_retries`).

* :func:`search_granules` — the files over a city for a run's months, as STAC items (id:
  the file name, which carries its production time stamp), and what is not published;
* :func:`fetch` / :func:`fetch_item` — one file, downloaded once into a folder
  (``$PAYESH_BLACKMARBLE_DIR``), checked against the listing's size and MD5;
* :func:`items_month` — a month of night lights from such items
  (:func:`payesh.sources.blackmarble.mosaic` of the tiles read once);
* :func:`download_tile` — one tile-period by product, tile id and date.

``PAYESH_LAADS_URL`` points at another server with LAADS's layout (a mirror, or the
tests' server on loopback).

The archive (token, URLs, listings, :func:`search_granules`) is
:mod:`payesh.sources.laads_archive`; the downloads and their checks (:func:`fetch`,
:func:`fetch_item`, :func:`download_tile`) are :mod:`payesh.sources.laads_download`.
This module holds :func:`items_month` and re-exports the public names of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from payesh.errors import SourceError
from payesh.sources.blackmarble import mosaic, read_tile
from payesh.sources.http import DEFAULT_POLICY, RetryPolicy
from payesh.sources.laads_archive import (
    CACHE_ENV,
    DEFAULT_COLLECTION,
    LAADS_ENV,
    LAADS_URL,
    cache_dir,
    earthdata_token,
    laads_directory_url,
    laads_url,
    search_granules,
)
from payesh.sources.laads_download import download_tile, fetch, fetch_item

__all__ = [
    "CACHE_ENV",
    "DEFAULT_COLLECTION",
    "LAADS_ENV",
    "LAADS_URL",
    "cache_dir",
    "download_tile",
    "earthdata_token",
    "fetch",
    "fetch_item",
    "items_month",
    "laads_directory_url",
    "laads_url",
    "search_granules",
]


def items_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    month: pd.Timestamp,
    *,
    dest: Path | str | None = None,
    token: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> xr.Dataset:
    """The month of night lights from Black Marble items (:func:`search_granules`):
    each file downloaded into ``dest`` (default :func:`cache_dir`) unless already there,
    then :func:`blackmarble_month` on ``geobox``.

    Files are checked against the listing's size and MD5 where it gives them (a kept
    copy that no longer matches is downloaded again). A file that does not read as a
    Black Marble tile is deleted and downloaded once more; if it still does not read,
    the error names the item and its URL — never an empty month.

    Raises
    ------
    SourceError
        A download fails or a file stays unreadable.
    """
    dest = cache_dir() if dest is None else Path(dest)
    tiles = []
    for item in items:
        path = fetch_item(item, dest, token=token, policy=policy)
        try:
            tile = read_tile(path)
        except SourceError as err:
            href = item.assets["radiance"].href
            if "://" not in href or href.startswith("file://"):
                raise SourceError(f"Black Marble item {item.id!r}: {err}") from err
            # a kept copy spoilt after its download (no MD5 listed to tell): once more
            path.unlink(missing_ok=True)
            path = fetch_item(item, dest, token=token, policy=policy)
            try:
                tile = read_tile(path)
            except SourceError as again:
                path.unlink(missing_ok=True)
                raise SourceError(
                    f"Black Marble item {item.id!r} ({href}): downloaded twice, unreadable "
                    f"both times: {again}"
                ) from again
        tiles.append((item.id, tile))
    return mosaic(tiles, geobox, month)
