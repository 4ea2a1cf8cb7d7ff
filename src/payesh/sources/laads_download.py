"""Black Marble files downloaded from LAADS DAAC and checked against the archive's listing.

* :func:`fetch` / :func:`fetch_item` — one file, downloaded once into a folder
  (``$PAYESH_BLACKMARBLE_DIR``), checked against the listing's size and MD5;
* :func:`download_tile` — one tile-period by product, tile id and date.

The archive itself (token, URLs, requests, listings, search) is
:mod:`payesh.sources.laads_archive`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date
from pathlib import Path

import pystac
import requests

from payesh.errors import SourceError
from payesh.sources.blackmarble import tile_geobox
from payesh.sources.http import DEFAULT_POLICY, RetryPolicy
from payesh.sources.laads_archive import (
    DEFAULT_COLLECTION,
    LAADS_URL,
    day_of_year,
    earthdata_token,
    get,
    laads_directory_url,
    latest,
    listed_md5,
    listing,
)

__all__ = ["download_tile", "fetch", "fetch_item"]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        resp = get(url, token, policy, stream=True)
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
    md5 = listed_md5(asset.extra_fields)
    cached = Path(dest) / href.rsplit("/", 1)[-1]
    if cached.is_file() and _intact(cached, size, md5) is None:
        return cached
    try:
        return fetch(
            href, dest, token=token or earthdata_token(), size=size, md5=md5, policy=policy
        )
    except SourceError as err:
        raise SourceError(f"Black Marble item {item.id!r}: {err}") from err


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
    day = day_of_year(product, when)
    prefix = f"{product}.A{day.year}{day.timetuple().tm_yday:03d}.{tile}."
    entries = listing(folder, token, policy)
    entry = latest(entries or [], prefix)
    if entry is None:
        why = " (the folder does not exist)" if entries is None else ""
        raise SourceError(f"{folder}: no {prefix}*.h5 file for tile {tile} ({product}, {day}){why}")
    size = entry.get("size")
    return fetch(
        f"{folder}/{entry['name']}",
        dest,
        token=token,
        size=size if isinstance(size, int) else None,
        md5=listed_md5(entry),
        policy=policy,
    )
