"""Product-months kept between runs, so that a run computes only the months that changed.

A scheduled run reads its whole window (12 months) again every few days, though most
of its months have the same STAC items as in the last run; over HTTP that is a year of
Sentinel-2 read for one new scene. A product-month's layers (a Sentinel-2 month's
``builtup_prob``, ``true_colour`` and counts; a Landsat or night-light month) depend
only on what it was made from, so each is kept, as made, under a key of exactly that:

    sha256(product, month, its item ids, the city's grid (manifest), the payesh
           source code (a hash of every module), the versions of the libraries that
           decode and resample, and for Sentinel-2 the built-up model file)

The next run that plans the same key opens the kept month instead of reading and
compositing it again; a month whose items changed (a new scene, a reprocessed file), or
any change of code, model, libraries or city, gets a new key and is computed. What
comes after the months (indicators over the window, the commit) runs as always, so a
run's outputs are those of a run without the cache — the months are the same arrays
(``tests/integration/test_month_cache.py`` compares the stores).

Kept months are staged folders (:mod:`payesh.staging`: plain ``.npy`` blocks and a
``meta.json``) under ``$PAYESH_MONTH_CACHE`` (default ``data/cache/months``), one folder
per city: ``<product>-<YYYY-MM>-<key>.stage``, written under a temporary name and renamed
when complete, so a crash never leaves a half month that looks whole. After a committed
run, a city's months that the run did not use and that no run used for a day are deleted
(:func:`prune`): the cache holds about one window per city (9 bytes a pixel-month of
Sentinel-2: 39 MB for the 6 km benchmark city-year, measured; ~620 MB at 24 km).
``PAYESH_MONTH_CACHE=off`` turns it off.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from payesh import runkeys
from payesh.city import City
from payesh.errors import PayeshError
from payesh.runkeys import code_fingerprint, source_fingerprint
from payesh.staging import block_pixels, open_staged, stage_dataset

__all__ = [
    "CACHE_ENV",
    "DEFAULT_DIR",
    "cache_dir",
    "code_fingerprint",
    "get",
    "month_key",
    "prune",
    "put",
    "source_fingerprint",
    "writable",
]

CACHE_ENV = "PAYESH_MONTH_CACHE"
DEFAULT_DIR = "data/cache/months"
OFF = ("off", "0", "false", "no")
#: A month no run used for this long is deleted by :func:`prune` (unless in use now).
KEEP_UNUSED_S = 24 * 3600.0
_SUFFIX = ".stage"


def cache_dir(environ: Any = None) -> Path | None:
    """The cache's root (``$PAYESH_MONTH_CACHE``, default ``data/cache/months``), or
    ``None`` when it is turned off."""
    env = os.environ if environ is None else environ
    value = str(env.get(CACHE_ENV, "")).strip()
    if value.lower() in OFF:
        return None
    return Path(value or DEFAULT_DIR)


def writable(root: Path) -> Path:
    """``root``, made if missing, once a file could be written there.

    Raises
    ------
    PayeshError
        It cannot be made or written to: the message names it and ``PAYESH_MONTH_CACHE``.
    """
    probe = root / f".probe-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PayeshError(
            f"month cache {root}: cannot write there ({err.strerror or err}); set "
            f"{CACHE_ENV} to a writable local folder, or to 'off'"
        ) from err
    return root


def _city_text(city: City) -> str:
    """The city's definition as the months see it: grid, tiles, options."""
    fields = city.model_dump(exclude={"permits", "consumption", "title", "source"})
    return json.dumps(fields, sort_keys=True, default=str)


def month_key(
    product: str,
    month: pd.Timestamp,
    *,
    city: City,
    item_ids: Iterable[str],
    model_version: str = "",
) -> str:
    """The key a product-month is kept under: :func:`payesh.runkeys.month_key` without a
    run period, with the code's fingerprint and the city's grid as inputs (24 hex
    digits; see the module doc)."""
    key = runkeys.month_key(
        product,
        month,
        period=None,
        item_ids=item_ids,
        code_version=code_fingerprint(),
        model_version=model_version,
        inputs=f"city={_city_text(city)}",
    )
    return key[:24]


def _folder(root: Path, city: City) -> Path:
    return root / city.name


def _name(product: str, month: pd.Timestamp, key: str) -> str:
    return f"{product}-{month:%Y-%m}-{key}"


def get(root: Path, city: City, product: str, month: pd.Timestamp, key: str) -> xr.Dataset | None:
    """The kept month of ``key`` (opened lazily, as staged), or ``None``. Marks it used."""
    path = _folder(root, city) / f"{_name(product, month, key)}{_SUFFIX}"
    if not (path / "meta.json").is_file():
        return None
    try:
        ds = open_staged(path)
    except PayeshError:  # unreadable: computed again, and replaced
        return None
    os.utime(path)
    return ds


def put(
    root: Path, city: City, product: str, month: pd.Timestamp, key: str, ds: xr.Dataset, *,
    tile_pixels: int,
) -> xr.Dataset:  # fmt: skip
    """Keep the computed month ``ds`` under ``key``; returns it as kept (opened lazily).

    Written under a temporary name in the same folder, then renamed: a reader sees the
    whole month or none. A month already kept under ``key`` (made meanwhile by another
    run of the city, which may be reading it) is left as it is and returned: a key
    stands for its inputs, so both are the same month.
    """
    folder = _folder(root, city)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{_name(product, month, key)}{_SUFFIX}"
    tmp = stage_dataset(ds, folder, f"tmp-{uuid.uuid4().hex}", block=block_pixels(tile_pixels))
    if not (final / "meta.json").is_file():
        shutil.rmtree(final, ignore_errors=True)  # a half-written one, left by a crash
        try:
            tmp.rename(final)
        except OSError:  # another run renamed its copy first
            if not (final / "meta.json").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return open_staged(final)


def prune(
    root: Path, city: City, used: Iterable[str], *, keep_unused_s: float = KEEP_UNUSED_S
) -> list[Path]:
    """Delete ``city``'s kept months whose key is not in ``used`` and that no run used for
    ``keep_unused_s`` seconds (another run of the city may be reading them), and
    temporary folders left by crashed writes as old; the paths deleted."""
    folder = _folder(root, city)
    if not folder.is_dir():
        return []
    keep = set(used)
    now = time.time()
    removed = []
    for path in folder.iterdir():
        key = path.name.removesuffix(_SUFFIX).rsplit("-", 1)[-1]
        if key in keep or now - path.stat().st_mtime < keep_unused_s:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
