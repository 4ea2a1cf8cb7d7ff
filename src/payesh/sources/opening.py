"""A month's Sentinel-2 files checked and opened on the city grid, now or ahead of time.

Each file is checked as :func:`~payesh.sources.validate.file_problem` checks it (its
checksum, that it opens, its CRS, its last block) and mapped onto the city grid
(:func:`~payesh.sources.citygrid.grid_of`) from one opening, a job per file; it stays
open for the month's reads. :func:`open_month` does it for the month being read;
:func:`open_ahead` starts it for the remote files of a month to come, whose opening
then takes no time on that month's path. :func:`plan_aligned` is the same for a list of
items and asset keys given by the caller. On any error every file opened is closed.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from functools import partial
from typing import Any, NamedTuple, TypeVar

import pystac
import rasterio
from odc.geo.geobox import GeoBox

from payesh.errors import BadItemWarning, NoReadableItemsError, SourceError
from payesh.parallel import io_threads, shared_pool
from payesh.sources.citygrid import AssetGrid, ItemPlan, grid_of, item_time
from payesh.sources.rio_retry import is_remote

__all__ = [
    "AHEAD_MONTHS",
    "OpenedMonth",
    "close_ahead",
    "open_ahead",
    "open_month",
    "plan_aligned",
]

R = TypeVar("R")


def plan_aligned(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    asset_keys: Mapping[str, str],
    scale_offset: Mapping[str, Mapping[str, tuple[float, float]]],
    nodata: Mapping[str, Mapping[str, float]],
    *,
    threads: int = 4,
    env: Mapping[str, str] | None = None,
) -> list[ItemPlan] | None:
    """Per-item read plans, or ``None`` when any asset is not aligned with ``geobox``.

    ``scale_offset[item_id][band]`` and ``nodata[item_id][band]`` come from the items'
    ``raster:bands`` (see :mod:`payesh.sources.load`). Each (item, asset) is checked and
    opened as :func:`open_month` does it, a job of its own on ``threads`` threads;
    a file that fails its checks is a :class:`~payesh.errors.SourceError` naming it. On
    an error or a grid that is not aligned, every file opened here is closed again.
    """
    pool = shared_pool("aligned-plan", max(1, threads))
    jobs = [(item, band, key) for item in items for band, key in asset_keys.items()]
    opens = [partial(_checked_grid, *job, geobox, dict(env or {})) for job in jobs]
    checked = _open_all(pool, opens, grid=lambda found: found[1])
    opened = [grid for _, grid in checked if grid is not None]
    problem = next((p for p, _ in checked if p is not None), None)
    if problem is not None or len(opened) < len(jobs):
        for grid in opened:
            grid.dataset.close()
        if problem is not None:
            raise SourceError(problem)
        return None
    grids: dict[str, dict[str, AssetGrid]] = {}
    for (item, band, _), grid in zip(jobs, opened, strict=True):
        grids.setdefault(item.id, {})[band] = grid
    return [
        ItemPlan(
            item_id=item.id,
            time=item_time(item),
            grids=grids[item.id],
            scale_offset=scale_offset[item.id],
            nodata=nodata[item.id],
        )
        for item in items
    ]


def _open_all(pool: Any, opens: Sequence[Callable[[], R]], grid: Callable[[R], Any]) -> list[R]:
    """The results of ``opens`` (calls that open files), each a job on ``pool``; when one
    raises, the :class:`AssetGrid` (``grid(result)``, or ``None``) of each other one is
    closed, then it is raised: no file is left open."""
    futures = [pool.submit(fn) for fn in opens]
    wait(futures)
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        for f in futures:
            opened = grid(f.result()) if f.exception() is None else None
            if opened is not None:
                opened.dataset.close()
        raise failed
    return [f.result() for f in futures]


def _checked_grid(
    item: pystac.Item, band: str, key: str, geobox: GeoBox, env: Mapping[str, str]
) -> tuple[str | None, AssetGrid | None]:
    """One file checked as :func:`~payesh.sources.validate.file_problem` checks it (a
    remote one with its retries) and mapped on the city grid, from one opening:
    ``(problem, None)`` for a bad file, ``(None, None)`` when it is not aligned (closed,
    either way), else ``(None, grid)`` with the file open for the reads."""
    from payesh.sources.validate import open_verified

    href = item.assets[key].get_absolute_href() or item.assets[key].href
    problem, src = open_verified(item, key, env=env)
    if src is None:
        return problem, None
    where = f"item {item.id!r} asset {key!r} ({href.split('?', 1)[0]})"
    try:
        with rasterio.Env(**env):
            grid = grid_of(src, href, geobox, halo=band == "scl", where=where, env=env)
    except BaseException:
        src.close()
        raise
    if grid is None:
        src.close()
    return None, grid


#: Files of months to come checked and opened ahead (:func:`open_ahead`), a group per
#: month (file key -> the future of its :func:`_checked_grid`); at most
#: :data:`AHEAD_MONTHS` groups are kept, the oldest one's files closed when a new one comes.
AHEAD_MONTHS = 2
_ahead: list[dict[tuple[Any, ...], Future[tuple[str | None, AssetGrid | None]]]] = []
_ahead_lock = threading.Lock()


def _file_key(
    item: pystac.Item, band: str, key: str, geobox: GeoBox, env: Mapping[str, str]
) -> tuple[Any, ...]:
    """What makes two openings of a file the same: the item, band and asset, its href (a
    signed URL included), the grid and the GDAL options."""
    g = geobox.affine
    return (
        item.id,
        band,
        key,
        item.assets[key].href,
        tuple(geobox.shape),
        (g.a, g.b, g.c, g.d, g.e, g.f),
        str(geobox.crs),
        tuple(sorted(env.items())),
    )


def _close_checked(future: Future[tuple[str | None, AssetGrid | None]]) -> None:
    """Close the file a :func:`_checked_grid` job opened, once it is done."""
    if future.cancelled() or future.exception() is not None:
        return
    grid = future.result()[1]
    if grid is not None:
        grid.dataset.close()


def _month_files(
    items: Sequence[pystac.Item], bands: Sequence[str], *, warn: bool = True
) -> tuple[list[pystac.Item], dict[str, str], dict[str, str], bool]:
    """``(items, asset keys, GDAL options, remote)`` of a month's Sentinel-2 read: the
    items whose metadata passed the checks (each other one warned about, with ``warn``),
    signed; the asset key of each band and SCL."""
    from payesh.sources import load
    from payesh.sources.aws import read_options
    from payesh.sources.profiles import S2
    from payesh.sources.signing import sign_items
    from payesh.sources.validate import metadata_problem, skip_bad_items

    wanted = (*bands, "scl")
    if warn:
        passed = skip_bad_items(items, S2, wanted, stacklevel=6)
    else:
        passed = [i for i in items if metadata_problem(i, S2, wanted) is None]
    ready = sign_items(passed)
    keys = load._asset_keys(ready, S2, wanted) if ready else {}
    hrefs = [ready[0].assets[k].href for k in keys.values()] if ready else []
    remote = any(is_remote(h) for h in hrefs)
    env = load.gdal_remote_env() if remote else dict(load.GDAL_LOCAL)
    env |= read_options(ready, keys.values())  # requester-pays buckets
    return ready, keys, env, remote


def open_ahead(items: Sequence[pystac.Item], geobox: GeoBox, *, bands: Sequence[str]) -> int:
    """Start checking and opening the remote files of a month to come, in the background
    (:func:`open_month` of those items then takes them instead of opening them:
    four round trips a file in turn, ~0.55 s of a 6 km month at 100 ms, no longer on its
    path). Local
    files are not opened ahead (it would only move CPU). Returns the files started.

    A file whose check raised (the network) is opened again by the month itself; a
    group of files no month took is closed when :data:`AHEAD_MONTHS` newer ones came.
    """
    try:
        ready, keys, env, remote = _month_files(items, bands, warn=False)
    except SourceError:  # a signer out of reach: the month itself will say so
        return 0
    if not remote or not ready:
        return 0
    pool = shared_pool("aligned-check", io_threads())
    group = {
        _file_key(item, band, key, geobox, env): pool.submit(
            _checked_grid, item, band, key, geobox, env
        )
        for item in ready
        for band, key in keys.items()
    }
    with _ahead_lock:
        _ahead.append(group)
        dropped = _ahead[:-AHEAD_MONTHS]
        del _ahead[:-AHEAD_MONTHS]
    for old in dropped:
        for future in old.values():
            future.add_done_callback(_close_checked)
    return len(group)


def close_ahead(items: Sequence[pystac.Item]) -> int:
    """Close the files opened ahead (:func:`open_ahead`) for ``items`` that no month took,
    and forget them: a run that stopped (failed, say) before the month they were opened
    for. Files of other items or other hrefs are left as they are. Returns how many."""

    def file(item_id: str, href: str) -> tuple[str, str]:
        return item_id, href.split("?", 1)[0]  # a signed URL: its file

    files = {file(item.id, a.href) for item in items for a in item.assets.values()}
    with _ahead_lock:
        dropped = [
            group.pop(k)
            for group in _ahead
            for k in [k for k in group if file(k[0], k[3]) in files]
        ]
        _ahead[:] = [group for group in _ahead if group]
    for future in dropped:  # one still opening is closed once it is open
        future.add_done_callback(_close_checked)
    return len(dropped)


def _checked_files(
    pool: Any, files: Sequence[tuple[pystac.Item, str, str]], geobox: GeoBox, env: dict[str, str]
) -> list[tuple[str | None, AssetGrid | None]]:
    """:func:`_checked_grid` of every file, each a job on ``pool`` unless it was opened
    ahead (:func:`open_ahead`) without an error; on an error every file opened is closed."""
    with _ahead_lock:
        ahead = []
        for job in files:
            k = _file_key(*job, geobox, env)
            ahead.append(next((group.pop(k) for group in _ahead if k in group), None))
    found: list[tuple[str | None, AssetGrid | None] | None] = []
    for future in ahead:
        try:
            found.append(future.result() if future is not None else None)
        except Exception:  # the network, say: the month opens it again below
            found.append(None)
    todo = [i for i, got in enumerate(found) if got is None]
    try:
        fresh = _open_all(
            pool,
            [partial(_checked_grid, *files[i], geobox, env) for i in todo],
            grid=lambda checked: checked[1],
        )
    except BaseException:
        for got in found:
            if got is not None and got[1] is not None:
                got[1].dataset.close()
        raise
    for i, got in zip(todo, fresh, strict=True):
        found[i] = got
    return [got for got in found if got is not None]


class OpenedMonth(NamedTuple):
    """A month's Sentinel-2 files, checked and open on the city grid (:func:`open_month`)."""

    items: list[pystac.Item]  # the items read, in order (each other one warned about)
    plans: list[ItemPlan] | None  # None: some file not aligned (every file closed again)
    env: dict[str, str]  # the GDAL options the files were opened with
    remote: bool  # files over the network


def open_month(
    items: Sequence[pystac.Item],
    geobox: GeoBox,
    *,
    bands: Sequence[str],
    threads: int,
    ahead: Sequence[pystac.Item] | None = None,
) -> OpenedMonth:
    """The month's items checked as :func:`payesh.sources.load.load_s2` checks them (a bad
    item is skipped with a :class:`~payesh.errors.BadItemWarning`), their files checked
    and opened, a job per file on ``threads`` threads (remote files:
    :func:`~payesh.parallel.io_threads` at a time), and scale/offset taken per item exactly
    as it takes them. ``ahead``: the next month's items, whose remote files are checked
    and opened (:func:`open_ahead`) while this month is read.

    Raises
    ------
    NoReadableItemsError
        No item is readable (listing every problem); every file opened is closed.
    """
    from payesh.sources import load
    from payesh.sources.profiles import S2

    ready, keys, env, remote = _month_files(items, bands)  # metadata checks
    pool = shared_pool("aligned-check", io_threads() if remote else threads)
    # checksum, open, CRS, last block, the grid: a job per file (a remote one with its
    # retries), each file opened once and kept open for the reads
    files = [(item, band, key) for item in ready for band, key in keys.items()]
    checked = _checked_files(pool, files, geobox, env)
    if ahead is not None:
        open_ahead(ahead, geobox, bands=bands)
    problems: list[str | None] = []
    opened: dict[str, dict[str, AssetGrid] | None] = {}  # None: not aligned
    for k, item in enumerate(ready):
        part = list(zip(keys, checked[k * len(keys) : (k + 1) * len(keys)], strict=True))
        problem = next((p for _, (p, _) in part if p is not None), None)
        grids = {band: grid for band, (_, grid) in part if grid is not None}
        problems.append(problem)
        if problem is None and len(grids) == len(keys):
            opened[item.id] = grids
            continue
        for grid in grids.values():  # a bad item's good files, or an item not aligned
            grid.dataset.close()
        if problem is None:
            opened[item.id] = None

    def close_opened() -> None:
        for item_grids in opened.values():
            for grid in (item_grids or {}).values():
                grid.dataset.close()

    try:  # the files stay open for the reads: closed on any error before them
        if ready and all(problems):  # nothing would be read: one error listing every problem
            raise NoReadableItemsError(
                "no readable s2 item: " + "; ".join(str(p) for p in problems),
                problems=[str(p) for p in problems],
                remote=remote,
            )
        usable = []
        for item, found in zip(ready, problems, strict=True):
            if found is None:
                usable.append(item)
            else:  # warned here, in the caller's thread, not in a pool thread
                warnings.warn(f"{found}; item skipped", BadItemWarning, stacklevel=4)
        if not usable:  # every item failed its metadata checks (each already warned)
            raise NoReadableItemsError(
                "no usable Sentinel-2 items to load", problems=[], remote=False
            )
        scale_offset: dict[str, dict[str, tuple[float, float]]] = {}
        nodata: dict[str, dict[str, float]] = {}
        first_nodata = {
            b: load._raster_band(usable[0].assets[keys[b]]).get("nodata", 0) for b in bands
        }
        for item in usable:
            scale_offset[item.id], nodata[item.id] = {}, {}
            for band in bands:
                rb = load._raster_band(item.assets[keys[band]])
                scale = float(rb.get("scale", load._S2_SCALE))
                offset = float(rb.get("offset", load._S2_BOA_OFFSET))
                if item.collection_id in S2.collections:
                    offset = load._s2_offset(item, float(rb["offset"]) if "offset" in rb else None)
                scale_offset[item.id][band] = (scale, offset)
                if first_nodata[band] is not None:
                    nodata[item.id][band] = float(first_nodata[band])
    except BaseException:
        close_opened()
        raise
    if any(item_grids is None for item_grids in opened.values()):  # not aligned: odc-stac's
        close_opened()
        plans = None
    else:
        plans = [
            ItemPlan(
                item_id=item.id,
                time=item_time(item),
                grids=opened[item.id] or {},
                scale_offset=scale_offset[item.id],
                nodata=nodata[item.id],
            )
            for item in usable
        ]
    return OpenedMonth(usable, plans, env, remote)
