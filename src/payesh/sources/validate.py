"""Bad items, found in one place: skipped with a :class:`~payesh.errors.BadItemWarning`.

Two kinds of check, both naming the item and the asset at fault:

* :func:`metadata_problem` — what the STAC item itself says: an asset a band needs is
  missing, or the item gives no CRS (``proj:code`` / ``proj:epsg``, on the asset or
  the item). Planning (:func:`payesh.plan.plan_run`) applies it to every search result.
* :func:`file_problem` — what reading finds, at read time: the bytes fail their
  ``file:checksum``, the file cannot be opened, its CRS differs from the item's, or it
  is truncated (its last block in file order, the bottom-right one of a COG, is not all
  in the file: from a local TIFF's tile table, else by reading it). The loaders apply
  it, through :func:`usable_items`, to the items of a month.

A skipped item leaves the others of its month to be read; :func:`skipped_ids` tells
which were left out so that the month's dataset can say so (``attrs["skipped_items"]``).
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pystac
import rasterio
import requests
import xarray as xr
from pystac_client.exceptions import APIError
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.windows import Window

from payesh.errors import BadItemWarning, NoReadableItemsError, SourceError
from payesh.parallel import io_threads, map_all, shared_pool
from payesh.sources.checksum import ChecksumMismatch, readable_href, verify_asset
from payesh.sources.http import RetryPolicy, SourceUnavailable, current_policy, looks_transient
from payesh.sources.inflight import request_slot
from payesh.sources.profiles import Product
from payesh.sources.rio_retry import is_remote

__all__ = [
    "any_remote",
    "declared_crs",
    "file_problem",
    "metadata_problem",
    "open_checked",
    "open_verified",
    "skip_bad_items",
    "skipped_ids",
    "with_skipped",
]

log = logging.getLogger(__name__)
#: What GDAL/curl say when a server refuses a read (HTTP 401/403, S3's AccessDenied).
_DENIED = re.compile(
    r"Access ?Denied|response code:? ?40[13]\b|\bForbidden\b|\bUnauthorized\b", re.IGNORECASE
)


def declared_crs(item: pystac.Item, key: str) -> str | None:
    """The CRS an item declares for asset ``key`` (``EPSG:32638`` style), if any."""
    for where in (item.assets[key].extra_fields, item.properties):
        code = where.get("proj:code")
        if code:
            return str(code)
        epsg = where.get("proj:epsg")
        if epsg:
            if isinstance(epsg, bool) or not isinstance(epsg, int | float | str):
                return None  # not a code (a list, a mapping): as good as none
            try:
                return f"EPSG:{int(epsg)}"
            except ValueError:
                return None
    if item.properties.get("proj:wkt2") or item.assets[key].extra_fields.get("proj:wkt2"):
        return str(item.assets[key].extra_fields.get("proj:wkt2") or item.properties["proj:wkt2"])
    return None


def metadata_problem(item: pystac.Item, product: Product, bands: Sequence[str]) -> str | None:
    """Why ``item`` cannot be read for ``bands`` from its metadata alone, or ``None``."""
    available = frozenset(item.assets)
    for band in bands:
        key = product.asset_key(band, available)
        if key is None:
            return (
                f"item {item.id!r} has no asset for band {band!r} "
                f"(looked for {', '.join(product.bands[band])})"
            )
        if declared_crs(item, key) is None:
            return (
                f"item {item.id!r} asset {key!r} declares no CRS "
                f"(no usable proj:code or proj:epsg, on the asset or the item)"
            )
    return None


def _same_crs(declared: str, found: CRS) -> bool:
    try:
        want = CRS.from_user_input(declared)
    except CRSError:
        return False
    return bool(want == found) or (want.to_epsg() is not None and want.to_epsg() == found.to_epsg())


def file_problem(
    item: pystac.Item,
    key: str,
    *,
    env: Mapping[str, str],
    policy: RetryPolicy | None = None,
) -> str | None:
    """Why the file behind ``item.assets[key]`` cannot be read, or ``None`` if it can.

    Verifies the ``file:checksum`` (when given), opens the file under GDAL options
    ``env``, compares its CRS with the one the item declares, and checks its last block
    (a local TIFF: that the tile table puts it inside the file; else: read).
    A remote file that fails its checksum or cannot be opened or decoded is fetched
    again, up to ``policy.attempts`` times in all (default: the process-wide policy),
    before it is called bad: the bytes may have been damaged on the way.

    Raises
    ------
    SourceUnavailable
        The server kept failing (after every retry): a network fault is never a bad item.
    """
    problem, src = open_verified(item, key, env=env, policy=policy)
    if src is not None:
        src.close()
    return problem


def open_verified(
    item: pystac.Item,
    key: str,
    *,
    env: Mapping[str, str],
    policy: RetryPolicy | None = None,
) -> tuple[str | None, Any]:
    """:func:`file_problem`'s checks and retries, the file left open when it passed:
    ``(None, dataset)`` or ``(problem, None)``. The caller reads the dataset, then closes
    it: a remote file is not opened (its header fetched) a second time to be read."""
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    if not is_remote(href):
        found, _, src = open_checked(item, key, href, env=env)
        return found, src
    policy = policy or current_policy()
    problem: str | None = None
    seen: set[str] = set()
    for attempt in range(1, policy.attempts + 1):
        with request_slot():  # its requests one after another: one in flight at a time
            problem, again, src = open_checked(item, key, href, env=env)
        if problem is None or not again:
            return problem, src
        seen.add(problem)
        if attempt < policy.attempts:
            wait = policy.delay(attempt)
            log.info("%s; fetching it again in %.2f s", problem, wait)
            time.sleep(wait)
    assert problem is not None
    n = policy.attempts
    if looks_transient(problem) or len(seen) > 1:  # a corrupt file fails the same way each time
        raise SourceUnavailable(f"{problem} (gave up after {n} attempts)")
    return f"{problem} (the same after {n} attempts)", None


def open_checked(
    item: pystac.Item, key: str, href: str, *, env: Mapping[str, str]
) -> tuple[str | None, bool, Any]:
    """The checks of one try of :func:`file_problem` (checksum, CRS, last block), from one
    opening of the file: ``(problem, worth fetching again, dataset)``.

    The dataset is returned open when the file passed (the caller reads it, then closes
    it), ``None`` when it did not. The aligned reader keeps it for its reads, so a local
    file is opened once a month, not once to check and again to read.
    """
    shown = href.split("?", 1)[0]  # never a signed URL's token in a message
    where = f"item {item.id!r} asset {key!r} ({shown})"
    try:
        verify_asset(item, key)
    except SourceUnavailable:
        raise
    except ChecksumMismatch as err:
        return str(err), True, None
    except SourceError as err:
        return str(err), False, None
    src = None
    try:
        with rasterio.Env(**env):
            src = rasterio.open(readable_href(href))
            problem = _open_file_problem(item, key, src, where)
    except (RasterioError, CPLE_BaseError, OSError, requests.RequestException, APIError) as err:
        if src is not None:
            src.close()
        if _DENIED.search(str(err)):  # the server refuses: not a damaged file
            why = "access denied (credentials, an expired signed URL, a requester-pays bucket?)"
            return f"{where}: cannot be read: {why}: {err}", True, None
        return f"{where}: cannot be read (truncated or corrupt?): {err}", True, None
    except BaseException:
        if src is not None:
            src.close()
        raise
    if problem is not None:
        src.close()
        return problem, False, None
    return None, False, src


def _open_file_problem(item: pystac.Item, key: str, src: Any, where: str) -> str | None:
    """The file's CRS against the item's, and whether its last block is all there (a
    local TIFF: from its tile table; anything else: the block read, which fails on a
    truncated file); raises what rasterio raises for a file it cannot decode."""
    if src.crs is None:
        return f"{where}: the file has no CRS"
    declared = declared_crs(item, key)
    if declared is not None and not _same_crs(declared, src.crs):
        return (
            f"{where}: the item says its CRS is {declared} but the file's is {src.crs.to_string()}"
        )
    bh, bw = src.block_shapes[0]
    row = (src.height - 1) // bh * bh
    col = (src.width - 1) // bw * bw
    found = _last_block_end(src, row // bh, col // bw)
    if found is None:  # not a local TIFF: its last block decoded
        src.read(1, window=Window(col, row, min(bw, src.width - col), min(bh, src.height - row)))
    elif found[0] > found[1]:
        return (
            f"{where}: cannot be read (truncated or corrupt?): its last block ends at byte "
            f"{found[0]} but the file has {found[1]} bytes"
        )
    return None


def _last_block_end(src: Any, block_row: int, block_col: int) -> tuple[int, int] | None:
    """For a local TIFF, where its block (``block_row``, ``block_col``) ends in the file
    (the TIFF's tile table) and the file's size, in bytes; ``None`` for anything else
    (a remote file, another format, a table GDAL does not give).

    The same truncation the read of the last block finds, without decoding the block:
    the month's read decodes it again anyway, after GDAL's cache has let it go (2.4 ms
    a file on the 24 km bench city, 1.2 CPU-s a year at any size of city).
    """
    if src.driver not in ("GTiff", "COG") or not os.path.isfile(src.name):
        return None
    offset = src.get_tag_item(f"BLOCK_OFFSET_{block_col}_{block_row}", "TIFF", bidx=1)
    size = src.get_tag_item(f"BLOCK_SIZE_{block_col}_{block_row}", "TIFF", bidx=1)
    try:
        end = int(offset) + int(size)
    except (TypeError, ValueError):  # no such tag (not tiled as GDAL says), or not a number
        return None
    return end, os.path.getsize(src.name)


def skip_bad_items(
    items: Sequence[pystac.Item],
    product: Product,
    bands: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    all_bad_is_error: bool = False,
    stacklevel: int = 3,
) -> list[pystac.Item]:
    """The items of ``items`` that pass the metadata checks (and, given GDAL options
    ``env``, the file checks); each other one gets a :class:`BadItemWarning`.

    With ``all_bad_is_error``, a batch in which no item is good raises one
    :class:`SourceError` listing every problem instead (nothing would be read).
    """
    found = [metadata_problem(item, product, bands) for item in items]
    if env is not None:
        files = []  # (item's index, item, asset key) of the items whose metadata passed
        for i, item in enumerate(items):
            for band in bands if found[i] is None else ():
                key = product.asset_key(band, frozenset(item.assets))
                assert key is not None  # metadata_problem found every band's asset
                files.append((i, item, key))

        def check(job: tuple[int, pystac.Item, str]) -> str | None:
            return file_problem(job[1], job[2], env=env)

        if any_remote(items):  # a few round trips a file: io_threads() of them at once
            checked = map_all(shared_pool("file-check", io_threads()), check, files)
            for (i, _, _), problem in zip(files, checked, strict=True):
                found[i] = found[i] or problem  # an item's first problem, in band order
        else:  # local: one after another, an item's files up to its first problem
            for job in files:
                found[job[0]] = found[job[0]] or check(job)
    good, problems = [], []
    for item, problem in zip(items, found, strict=True):
        if problem is None:
            good.append(item)
        else:
            problems.append(problem)
    if problems and not good and all_bad_is_error:
        raise NoReadableItemsError(
            f"no readable {product.key} item: " + "; ".join(problems),
            problems=problems,
            remote=any_remote(items),
        )
    for problem in problems:
        warnings.warn(f"{problem}; item skipped", BadItemWarning, stacklevel=stacklevel)
    return good


def any_remote(items: Sequence[pystac.Item]) -> bool:
    """Whether any asset of ``items`` is read over a network (http, s3, GDAL /vsi)."""
    return any(is_remote(a.href or "") for i in items for a in i.assets.values())


def skipped_ids(items: Sequence[pystac.Item], read: Sequence[str]) -> list[str]:
    """Ids of ``items`` that are not among the ``read`` item ids, in order."""
    kept = set(read)
    return [i.id for i in items if i.id not in kept]


def with_skipped(ds: xr.Dataset, items: Sequence[pystac.Item]) -> xr.Dataset:
    """``ds`` with ``attrs["skipped_items"]``: the ids of ``items`` not in its
    ``attrs["source_items"]`` (each reported by a :class:`BadItemWarning` when skipped)."""
    ds.attrs["skipped_items"] = skipped_ids(items, ds.attrs.get("source_items", []))
    return ds
