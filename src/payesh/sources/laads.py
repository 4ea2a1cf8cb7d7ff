"""NASA's LAADS DAAC archive: finding, downloading and checking Black Marble files.

LAADS keeps each period's files in a folder, ``<base>/archive/allData/5200/VNP46A3/
<year>/<day of year>/`` (:func:`laads_directory_url`), with a JSON listing next to it
(``<folder>.json``: name, size and MD5 of each file). Every request carries the NASA
Earthdata token (``Authorization: Bearer``; :func:`earthdata_token` reads
``EARTHDATA_TOKEN``) and is retried on 429, 5xx and timeouts
(:func:`payesh.sources.http.with_retries`).

* :func:`search_granules` — the files over a city for a run's months, as STAC items (id:
  the file name, which carries its production time stamp), and what is not published;
* :func:`fetch` / :func:`fetch_item` — one file, downloaded once into a folder
  (``$PAYESH_BLACKMARBLE_DIR``), checked against the listing's size and MD5;
* :func:`items_month` — a month of night lights from such items
  (:func:`payesh.sources.blackmarble.mosaic` of the tiles read once);
* :func:`download_tile` — one tile-period by product, tile id and date.

``PAYESH_LAADS_URL`` points at another server with LAADS's layout (a mirror, or the
tests' server on loopback).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import requests
import xarray as xr
from odc.geo.geobox import GeoBox
from pystac_client.exceptions import APIError
from shapely.geometry import box as shapely_box
from shapely.geometry import mapping

from payesh.errors import SourceError
from payesh.sources.blackmarble import (
    BLACK_MARBLE_PRODUCTS,
    LAYER,
    mosaic,
    read_tile,
    tile_geobox,
    tiles_over,
)
from payesh.sources.http import DEFAULT_POLICY, RetryPolicy, check_response, with_retries

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


def _day_of_year(product: str, when: date) -> date:
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
    day = _day_of_year(product, when)
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


def _get(
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


def _listing(folder: str, token: str, policy: RetryPolicy) -> list[dict[str, Any]] | None:
    """The entries of a LAADS archive folder (``<folder>.json``); ``None`` if it does not
    exist (404: not published yet)."""
    resp = _get(folder + ".json", token, policy, missing_ok=True)
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


def _latest(entries: Sequence[Mapping[str, Any]], prefix: str) -> Mapping[str, Any] | None:
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
    if (md5 := _listed_md5(entry)) is not None:
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
        day = _day_of_year(product, month.date())
        if day in seen:
            continue
        seen.add(day)
        folder = laads_directory_url(product, day, collection=collection, base=base)
        entries = _listing(folder, token, policy)
        label = f"{day:%Y-%m}" if product == "VNP46A3" else f"{day:%Y}"
        if entries is None:
            missing.append(f"{label} (not published)")
            continue
        for tile in tiles:
            prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
            entry = _latest(entries, prefix)
            if entry is None:
                missing.append(f"{label} {tile}")
            else:
                items.append(_granule_item(product, tile, day, folder, entry))
    return items, missing


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed_md5(entry_or_asset: Mapping[str, Any]) -> str | None:
    """The MD5 (hex) a listing entry (``md5sum``) or an item's asset (``file:checksum``,
    multihash ``d50110…``) gives, if any."""
    text = entry_or_asset.get("md5sum")
    if isinstance(text, str) and re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return text.lower()
    multihash = entry_or_asset.get("file:checksum")
    if isinstance(multihash, str) and re.fullmatch(r"d50110[0-9a-fA-F]{32}", multihash):
        return multihash[6:].lower()
    return None


def _intact(path: Path, size: int | None, md5: str | None) -> str | None:
    """Why the file at ``path`` is not the one listed (``None``: it is)."""
    got = path.stat().st_size
    if size is not None and got != size:
        return f"{got} bytes, the archive lists {size}"
    if md5 is not None and (found := _md5(path)) != md5:
        return f"MD5 {found}, the archive lists {md5}"
    return None


def fetch(
    url: str,
    dest: Path | str,
    *,
    token: str,
    size: int | None = None,
    md5: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """Download ``url`` into folder ``dest`` (kept under its own name); its path.

    An existing file of that name (of ``size`` bytes and MD5 ``md5``, when given) is
    reused. The bytes go to ``<name>.part`` first and are renamed when complete and
    checked, so an interrupted or damaged download never looks like a finished one; a
    download that does not match the listing is tried once more, then reported.

    Raises
    ------
    SourceError
        The server refuses the token, the file is not there, the download fails, or
        twice its bytes do not match the listing.
    """
    out = Path(dest) / url.rsplit("/", 1)[-1]
    if out.is_file() and _intact(out, size, md5) is None:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{uuid.uuid4().hex[:8]}.part")  # runs side by side
    why = None
    for _ in range(2):
        resp = _get(url, token, policy, stream=True)
        assert resp is not None
        try:
            with resp, part.open("wb") as f:
                for block in resp.iter_content(1 << 20):
                    f.write(block)
        except requests.RequestException as err:
            part.unlink(missing_ok=True)
            raise SourceError(f"{url}: download failed: {err}") from err
        why = _intact(part, size, md5)
        if why is None:
            part.replace(out)
            return out
    part.unlink(missing_ok=True)
    raise SourceError(f"{url}: downloaded twice, {why} both times; not kept")


def fetch_item(
    item: pystac.Item,
    dest: Path | str,
    *,
    token: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """The local file of a Black Marble item (:func:`search_granules`), downloaded once
    into ``dest`` and checked against the listing's size and MD5 (``file:size``,
    ``file:checksum``); a local href is used where it is. ``token``: default
    :func:`earthdata_token`, asked for only when a download is needed."""
    asset = item.assets["radiance"]
    href = asset.get_absolute_href() or asset.href
    if "://" not in href or href.startswith("file://"):
        return Path(href.removeprefix("file://"))
    size = asset.extra_fields.get("file:size")
    size = size if isinstance(size, int) else None
    md5 = _listed_md5(asset.extra_fields)
    cached = Path(dest) / href.rsplit("/", 1)[-1]
    if cached.is_file() and _intact(cached, size, md5) is None:
        return cached
    try:
        return fetch(
            href, dest, token=token or earthdata_token(), size=size, md5=md5, policy=policy
        )
    except SourceError as err:
        raise SourceError(f"Black Marble item {item.id!r}: {err}") from err


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


def download_tile(
    product: str,
    tile: str,
    when: date,
    dest: Path | str,
    *,
    token: str,
    base: str = LAADS_URL,
    collection: str = DEFAULT_COLLECTION,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Path:
    """Download one Black Marble tile-period to ``dest`` (a folder); its path.

    The archive folder's listing (``<folder>.json``) gives the file name (it carries a
    production time stamp), then the file is fetched; both with ``Authorization: Bearer
    <token>``, retried on 429/5xx. An existing file of that name is reused.

    Raises
    ------
    SourceError
        No such file in the archive, the server refuses the token, or the download fails.
    """
    tile_geobox(tile)  # a valid tile id, or one clear error
    folder = laads_directory_url(product, when, collection=collection, base=base)
    day = _day_of_year(product, when)
    prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
    entries = _listing(folder, token, policy)
    entry = _latest(entries or [], prefix)
    if entry is None:
        why = " (the folder does not exist)" if entries is None else ""
        raise SourceError(f"{folder}: no {prefix}*.h5 file for tile {tile} ({product}, {day}){why}")
    size = entry.get("size")
    return fetch(
        f"{folder}/{entry['name']}",
        dest,
        token=token,
        size=size if isinstance(size, int) else None,
        md5=_listed_md5(entry),
        policy=policy,
    )
