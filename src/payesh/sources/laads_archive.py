"""The LAADS DAAC archive of Black Marble files: where it is, and what it holds.

The server (:func:`laads_url`, ``PAYESH_LAADS_URL``), the NASA Earthdata token
(:func:`earthdata_token`), the archive folder of a product-period
(:func:`laads_directory_url`) and where downloads are kept (:func:`cache_dir`); an
authenticated, retried GET (:func:`get`), a folder's JSON listing (:func:`listing`) and
what an entry says of its file (:func:`latest`, :func:`listed_md5`); and
:func:`search_granules`, the files over a city for a run's months as STAC items.
Downloading them is :mod:`payesh.sources.laads_download`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import requests
from pystac_client.exceptions import APIError
from shapely.geometry import box as shapely_box
from shapely.geometry import mapping

from payesh.errors import SourceError
from payesh.sources.blackmarble import BLACK_MARBLE_PRODUCTS, LAYER, tile_geobox, tiles_over
from payesh.sources.http import DEFAULT_POLICY, RetryPolicy, check_response, with_retries

__all__ = [
    "CACHE_ENV",
    "DEFAULT_COLLECTION",
    "LAADS_ENV",
    "LAADS_URL",
    "cache_dir",
    "day_of_year",
    "earthdata_token",
    "get",
    "laads_directory_url",
    "laads_url",
    "latest",
    "listed_md5",
    "listing",
    "search_granules",
]

LAADS_URL = "https://ladsweb.modaps.eosdis.nasa.gov"
DEFAULT_COLLECTION = "5200"  # LAADS collection of Black Marble v2
#: Environment: the LAADS server to use, and where downloaded tiles are kept.
LAADS_ENV = "PAYESH_LAADS_URL"
CACHE_ENV = "PAYESH_BLACKMARBLE_DIR"


def earthdata_token(environ: Mapping[str, str] = os.environ) -> str:
    """The NASA Earthdata bearer token from ``EARTHDATA_TOKEN``.

    Raises
    ------
    SourceError
        The variable is unset or empty.
    """
    token = environ.get("EARTHDATA_TOKEN", "").strip()
    if not token:
        raise SourceError(
            "EARTHDATA_TOKEN is not set: Black Marble downloads from LAADS DAAC need a NASA "
            "Earthdata token (create one at https://urs.earthdata.nasa.gov/profile)"
        )
    return token


def day_of_year(product: str, when: date) -> date:
    if product not in BLACK_MARBLE_PRODUCTS:
        raise SourceError(
            f"unknown Black Marble product {product!r} (payesh reads: "
            f"{', '.join(BLACK_MARBLE_PRODUCTS)})"
        )
    return date(when.year, 1, 1) if product == "VNP46A4" else date(when.year, when.month, 1)


def laads_directory_url(
    product: str, when: date, *, collection: str = DEFAULT_COLLECTION, base: str = LAADS_URL
) -> str:
    """The LAADS DAAC archive folder holding ``product``'s tiles for the period of ``when``.

    VNP46A3 files are dated the first day of their month, VNP46A4 the first of the year:
    ``{base}/archive/allData/5200/VNP46A3/2025/060`` holds March 2025.
    """
    day = day_of_year(product, when)
    doy = day.timetuple().tm_yday
    return f"{base.rstrip('/')}/archive/allData/{collection}/{product}/{day.year}/{doy:03d}"


def laads_url(environ: Mapping[str, str] = os.environ) -> str:
    """The LAADS DAAC server: ``PAYESH_LAADS_URL`` if set (a mirror, or a test server),
    else :data:`LAADS_URL`."""
    return environ.get(LAADS_ENV, "").strip() or LAADS_URL


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where downloaded tiles are kept and reused: ``PAYESH_BLACKMARBLE_DIR``, else
    ``data/blackmarble``."""
    return Path(environ.get(CACHE_ENV, "").strip() or "data/blackmarble")


def get(
    url: str, token: str, policy: RetryPolicy, *, stream: bool = False, missing_ok: bool = False
) -> requests.Response | None:
    """GET ``url`` with the bearer token, retried on 429/5xx/timeouts; ``None`` for a 404
    when ``missing_ok`` (a period LAADS has not published yet)."""

    def once() -> requests.Response:
        resp = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=policy.timeout, stream=stream
        )
        try:
            check_response(resp)
        except Exception:
            resp.close()
            raise
        if "text/html" in resp.headers.get("Content-Type", ""):
            resp.close()
            raise SourceError(
                f"{url}: answered with an HTML page, not data — the Earthdata token is likely "
                f"invalid or expired"
            )
        return resp

    try:
        return with_retries(once, url=f"GET {url}", policy=policy)
    except APIError as err:
        status = getattr(err, "status_code", None)
        if status == 404 and missing_ok:
            return None
        hint = " — check EARTHDATA_TOKEN" if status in (401, 403) else ""
        raise SourceError(f"{url}: download failed: {err}{hint}") from err
    except requests.RequestException as err:
        raise SourceError(f"{url}: download failed: {err}") from err


def listing(folder: str, token: str, policy: RetryPolicy) -> list[dict[str, Any]] | None:
    """The entries of a LAADS archive folder (``<folder>.json``); ``None`` if it does not
    exist (404: not published yet)."""
    resp = get(folder + ".json", token, policy, missing_ok=True)
    if resp is None:
        return None
    with resp:
        try:
            listing = resp.json()
        except ValueError as err:
            raise SourceError(f"{folder}.json: not a JSON listing: {err}") from err
    entries = listing.get("content", []) if isinstance(listing, dict) else listing
    if not isinstance(entries, list):
        raise SourceError(f"{folder}.json: no list of files (got {type(entries).__name__})")
    return [e for e in entries if isinstance(e, dict)]


def latest(entries: Sequence[Mapping[str, Any]], prefix: str) -> Mapping[str, Any] | None:
    """The entry of the latest production of a tile-period (names sort by production time)."""
    found = sorted(
        (e for e in entries if str(e.get("name", "")).startswith(prefix)),
        key=lambda e: str(e["name"]),
    )
    return found[-1] if found else None


def _granule_item(
    product: str, tile: str, day: date, folder: str, entry: Mapping[str, Any]
) -> pystac.Item:
    """A STAC item for one Black Marble file: id the file name without ``.h5``, the
    ``radiance`` asset its LAADS URL (with the tile's grid as ``proj:transform`` and the
    listed size), dated the first day of its period."""
    name = str(entry["name"])
    box = tile_geobox(tile)
    west, south, east, north = box.boundingbox
    a = box.affine
    end = (pd.Timestamp(day) + pd.DateOffset(months=1 if product == "VNP46A3" else 12)).date()
    item = pystac.Item(
        id=name.removesuffix(".h5"),
        geometry=mapping(shapely_box(west, south, east, north)),
        bbox=[west, south, east, north],
        datetime=datetime(day.year, day.month, day.day, tzinfo=UTC),
        properties={
            "start_datetime": f"{day.isoformat()}T00:00:00Z",
            "end_datetime": f"{end.isoformat()}T00:00:00Z",
            "blackmarble:tile": tile,
            "proj:code": "EPSG:4326",
        },
        collection=product,
    )
    extra: dict[str, Any] = {"proj:transform": [a.a, a.b, a.c, a.d, a.e, a.f]}
    if isinstance(entry.get("size"), int):
        extra["file:size"] = entry["size"]
    if (md5 := listed_md5(entry)) is not None:
        extra["file:checksum"] = "d50110" + md5  # multihash: MD5, 16 bytes
    item.add_asset(
        "radiance",
        pystac.Asset(
            href=f"{folder}/{name}",
            media_type="application/x-hdf5",
            roles=["data"],
            title=f"{LAYER} and its quality layers",
            extra_fields=extra,
        ),
    )
    return item


def search_granules(
    bbox: Sequence[float],
    months: Sequence[pd.Timestamp],
    *,
    token: str,
    product: str = "VNP46A3",
    base: str = LAADS_URL,
    collection: str = DEFAULT_COLLECTION,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> tuple[list[pystac.Item], list[str]]:
    """The Black Marble files over ``bbox`` for ``months``, as STAC items; and what is missing.

    One archive listing per period (month for VNP46A3, year for VNP46A4); for each tile
    over ``bbox`` the latest production. A period whose folder does not exist yet, or
    lacks a tile, is named in the second list (``2025-11 (not published)``,
    ``2025-03 h22v05``) rather than failing the run.

    Raises
    ------
    SourceError
        The server refuses the token, stays down through the retries, or answers with
        something that is not a listing.
    """
    tiles = tiles_over(bbox)
    items: list[pystac.Item] = []
    missing: list[str] = []
    seen: set[date] = set()
    for month in months:
        day = day_of_year(product, month.date())
        if day in seen:
            continue
        seen.add(day)
        folder = laads_directory_url(product, day, collection=collection, base=base)
        entries = listing(folder, token, policy)
        label = f"{day:%Y-%m}" if product == "VNP46A3" else f"{day:%Y}"
        if entries is None:
            missing.append(f"{label} (not published)")
            continue
        for tile in tiles:
            prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
            entry = latest(entries, prefix)
            if entry is None:
                missing.append(f"{label} {tile}")
            else:
                items.append(_granule_item(product, tile, day, folder, entry))
    return items, missing


def listed_md5(entry_or_asset: Mapping[str, Any]) -> str | None:
    """The MD5 (hex) a listing entry (``md5sum``) or an item's asset (``file:checksum``,
    multihash ``d50110…``) gives, if any."""
    text = entry_or_asset.get("md5sum")
    if isinstance(text, str) and re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    multihash = entry_or_asset.get("file:checksum")
    if isinstance(multihash, str) and re.fullmatch(r"d50110[0-9a-fA-F]{32}", multihash):
        return multihash[6:].lower()
    return None
