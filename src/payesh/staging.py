"""Month layers staged on local disk while a run is in flight: memory bounded by a month.

A run classifies each Sentinel-2 month as soon as its composite exists
(:func:`payesh.pipeline.s2_month_layers`) and keeps ``builtup_prob``, ``true_colour`` and
the counts: 11 bytes a pixel a month. Kept in memory until the indicators, a year of them
grows with the city (about 760 MB at 24 km). Instead, each month is written to a Zarr in a
staging folder the moment it is made, and what comes after — persistence, sites, tile
indicators, the commit, the evidence chips — reads the months back block by block
(Dask, chunks of whole tiles), so the memory a run needs is that of one month and one
block of the year, whatever the size of the city.

The staging folder is on the machine of the flow (``PAYESH_STAGING_DIR``, default the
system's temporary folder) and is deleted when the run ends, failed or not. A run that
was killed leaves its folder behind (its name carries the process id); the next run on
the machine deletes the folders of processes no longer alive.

Values round-trip exactly: float32 NaN stays NaN, integers keep their dtype, attributes
(``units``, ``source_items``, …) are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from payesh.errors import PayeshError

__all__ = [
    "STAGING_ENV",
    "block_pixels",
    "open_staged",
    "run_stage",
    "stage_dataset",
    "sweep_stale",
]

STAGING_ENV = "PAYESH_STAGING_DIR"
"""Where runs stage their month layers (default: :func:`tempfile.gettempdir`)."""

_PREFIX = "payesh-stage-"
_NAME = re.compile(rf"^{_PREFIX}(\d+)-")
_BLOCK_PX = 512
"""Wanted side of a staged chunk, pixels (rounded to whole tiles)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_stale(base: str | os.PathLike[str]) -> list[Path]:
    """Delete the staging folders under ``base`` left by processes no longer running."""
    removed = []
    for path in Path(base).glob(f"{_PREFIX}*"):
        m = _NAME.match(path.name)
        if m is None or not path.is_dir() or _alive(int(m.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def run_stage(base: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A fresh staging folder for one run, deleted when the ``with`` block ends.

    Parameters
    ----------
    base
        Parent folder; default ``$PAYESH_STAGING_DIR`` or the system's temporary folder.
    """
    parent = Path(base or os.environ.get(STAGING_ENV) or tempfile.gettempdir())
    try:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(parent)
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
    except OSError as err:
        raise PayeshError(
            f"cannot make a staging folder under {parent} ({err.strerror or err}); "
            f"set {STAGING_ENV} to a writable local folder"
        ) from err
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def block_pixels(tile_pixels: int, wanted: int = _BLOCK_PX) -> int:
    """Side of a staged chunk: whole tiles of ``tile_pixels``, close to ``wanted``."""
    return int(tile_pixels * max(1, round(wanted / tile_pixels)))


def stage_dataset(ds: xr.Dataset, stage: str | os.PathLike[str], key: str, *, block: int) -> Path:
    """Write ``ds`` (computed, one month) to ``stage/<key>.zarr``; returns the path.

    Spatial chunks are ``block`` pixels (whole tiles, so tile sums never straddle chunks);
    written again by a retried task, it replaces what was there.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        raise PayeshError(f"staging key {key!r}: letters, digits, '_', '.', '-' only")
    path = Path(stage) / f"{key}.zarr"
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        chunks = tuple(
            block if d in ("y", "x") else (1 if d == "time" else int(n))
            for d, n in zip(var.dims, var.shape, strict=True)
        )
        encoding[str(name)] = {
            "chunks": tuple(max(1, min(c, n)) for c, n in zip(chunks, var.shape, strict=True))
        }
        if var.dtype.kind == "f":
            encoding[str(name)]["_FillValue"] = np.nan
    out = ds.copy()
    for name in [*out.data_vars, *out.coords]:
        if out[name].dtype.kind == "U":  # e.g. the band names of true_colour
            out[name] = out[name].astype(object)
    try:
        out.to_zarr(path, mode="w", zarr_format=2, consolidated=True, encoding=encoding)
    except OSError as err:  # a full or read-only disk: one clear error, not a traceback
        shutil.rmtree(path, ignore_errors=True)
        raise PayeshError(
            f"cannot stage {key} in {stage} ({err.strerror or err}); free space there or set "
            f"{STAGING_ENV} to another local folder"
        ) from err
    return path


def open_staged(path: str | os.PathLike[str]) -> xr.Dataset:
    """A staged month, lazily (Dask, the chunks it was written with)."""
    ds = xr.open_zarr(path, consolidated=True, chunks={})
    if "spatial_ref" in ds.data_vars:  # the CRS: a coordinate, as written
        ds = ds.set_coords("spatial_ref")
    for name in list(ds.coords):
        if ds[name].dtype.kind in "OT":
            values = np.array([str(v) for v in np.asarray(ds[name].values).ravel()]).reshape(
                ds[name].shape
            )
            ds = ds.assign_coords({name: (ds[name].dims, values, ds[name].attrs)})
    return ds
