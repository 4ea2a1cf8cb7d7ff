"""Month layers staged on local disk while a run is in flight: memory bounded by a month.

A run classifies each Sentinel-2 month as soon as its composite exists
(:func:`payesh.s2months.s2_month_layers`) and keeps ``builtup_prob``, ``true_colour`` and
``clear_count``: 9 bytes a pixel a month. Kept in memory until the indicators, a year of
them grows with the city (about 620 MB at 24 km). Instead, each month is written to a staging
folder the moment it is made, and what comes after — persistence, sites, tile
indicators, the commit, the evidence chips — reads the months back block by block
(Dask, chunks of whole tiles), so the memory a run needs is that of one month and one
block of the year, whatever the size of the city.

A staged month is a folder of plain ``.npy`` arrays (uncompressed: one per spatial block
of each variable, one per other variable) and a ``meta.json`` of dims, attributes and
chunks, written last. The files live for one run on one machine and are read back by the
process that wrote them: they need none of what the store's Zarr offers (compression,
checksums, an async engine) and would pay for it a round-trip per array per month
(measured: ~90 ms a month at 6 km to write a Zarr, ~10 ms these files). A block is one
file read whole with one call: nothing stays mapped, and there is no page fault per row
of the block as when blocks were copied out of a mapping of the whole month (reading a
24 km year of ``builtup_prob`` back: 1.14 s that way).

The staging folder is on the machine of the flow (``PAYESH_STAGING_DIR``, default the
system's temporary folder) and is deleted when the run ends, failed or not. A run that
was killed leaves its folder behind (its name carries the process id); the next run on
the machine deletes the folders of processes no longer alive.

Values round-trip exactly: float32 NaN stays NaN, integers keep their dtype, attributes
(``units``, ``source_items``, …) are kept.
"""

from __future__ import annotations

import contextlib
import itertools
import json
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
from payesh.parallel import map_all, shared_pool

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
_SUFFIX = ".stage"
_META = "meta.json"
_SPATIAL = ("y", "x")


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


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not JSON")


def stage_dataset(ds: xr.Dataset, stage: str | os.PathLike[str], key: str, *, block: int) -> Path:
    """Write ``ds`` (computed, one month) to ``stage/<key>.stage``; returns the path.

    Spatial chunks are ``block`` pixels (whole tiles, so tile sums never straddle chunks);
    written again by a retried task, it replaces what was there.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        raise PayeshError(f"staging key {key!r}: letters, digits, '_', '.', '-' only")
    path = Path(stage) / f"{key}{_SUFFIX}"
    meta: dict[str, Any] = {
        "attrs": dict(ds.attrs),
        "coords": list(map(str, ds.coords)),
        "vars": {},
    }
    try:
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        writes: list[tuple[Path, np.ndarray, tuple[slice, ...] | None]] = []
        for i, (name, var) in enumerate(ds.variables.items()):
            values = np.asarray(var.values)
            if values.dtype.kind == "O":  # strings held as objects: fixed width for .npy
                values = values.astype(str)
            chunks = [
                max(1, min(block if d in _SPATIAL else (1 if d == "time" else n), n))
                for d, n in zip(var.dims, var.shape, strict=True)
            ]
            spatial = bool(set(var.dims) & set(_SPATIAL)) and var.ndim > 1
            if spatial:
                for index, part in _blocks(tuple(map(str, var.dims)), values.shape, block):
                    writes.append((path / f"{i}-{'-'.join(map(str, index))}.npy", values, part))
            else:
                writes.append((path / f"{i}.npy", values, None))
            meta["vars"][str(name)] = {
                "file": f"{i}.npy",
                "dims": list(map(str, var.dims)),
                "attrs": dict(var.attrs),
                "chunks": chunks,
                "shape": list(values.shape),
                "dtype": values.dtype.str,
                "block": block if spatial else None,
            }
        # on a pool: a month is ~100 files at 24 km, written at ~250 MB/s by one thread
        map_all(shared_pool("staging"), lambda w: _save(*w), writes)
        # written last: a folder without it is a month whose staging did not finish
        (path / _META).write_text(json.dumps(meta, default=_json_value))
    except OSError as err:  # a full or read-only disk: one clear error, not a traceback
        shutil.rmtree(path, ignore_errors=True)
        raise PayeshError(
            f"cannot stage {key} in {stage} ({err.strerror or err}); free space there or set "
            f"{STAGING_ENV} to another local folder"
        ) from err
    return path


def stage_whole(ds: xr.Dataset, stage: str | os.PathLike[str], key: str) -> xr.Dataset:
    """Stage ``ds`` (computed, one month) with each variable in one chunk; returned lazily.

    For the months of a product whose indicators take a month whole (Landsat's LST: the
    month's city median): a year of them held in memory grows with the city (44 MB at
    24 km, while the Sentinel-2 months are read), one read back at a time does not.
    """
    side = max((int(n) for d, n in ds.sizes.items() if d in _SPATIAL), default=1)
    return open_staged(stage_dataset(ds, stage, key, block=side))


def _save(file: Path, values: np.ndarray, part: tuple[slice, ...] | None) -> None:
    data = values if part is None else np.ascontiguousarray(values[part])
    np.save(file, data, allow_pickle=False)


def _blocks(
    dims: tuple[str, ...], shape: tuple[int, ...], block: int
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """``(block index, slices)`` of every spatial block of an array: ``block`` pixels a
    side along ``y``/``x``, whole along the other dims."""
    axes = [i for i, d in enumerate(dims) if d in _SPATIAL]
    ranges = [range(0, shape[a], block) for a in axes]
    for starts in itertools.product(*ranges):
        part = [slice(None)] * len(shape)
        for a, lo in zip(axes, starts, strict=True):
            part[a] = slice(lo, min(shape[a], lo + block))
        yield tuple(lo // block for lo in starts), tuple(part)


class _StagedBlocks:
    """A staged variable, one ``.npy`` file per spatial block, as Dask slices it: a key
    that is one whole block (Dask's chunks are the blocks) is that file, read whole;
    any other key is put together from the blocks it meets."""

    def __init__(
        self,
        folder: Path,
        stem: str,
        dims: tuple[str, ...],
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        block: int,
    ) -> None:
        self.folder, self.stem, self.dims, self.block = folder, stem, dims, block
        self.shape, self.dtype = shape, dtype
        self.ndim = len(shape)
        self._axes = [i for i, d in enumerate(dims) if d in _SPATIAL]

    def _file(self, index: tuple[int, ...]) -> np.ndarray:
        return np.load(self.folder / f"{self.stem}-{'-'.join(map(str, index))}.npy")

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        if not all(isinstance(k, slice) for k in key):  # not what Dask asks: read, then index
            whole = self[tuple(slice(None) for _ in self.shape)]
            return np.asarray(whole[key])
        spans = [k.indices(n) for k, n in zip(key, self.shape, strict=True)]
        if any(step != 1 for _, _, step in spans):
            whole = self[tuple(slice(lo, hi) for lo, hi, _ in spans)]
            return np.asarray(whole[tuple(slice(None, None, st) for _, _, st in spans)])
        out = np.empty([max(0, hi - lo) for lo, hi, _ in spans], dtype=self.dtype)
        if out.size == 0:
            return out
        b = self.block
        per_axis = [range(spans[a][0] // b, (spans[a][1] - 1) // b + 1) for a in self._axes]
        for index in itertools.product(*per_axis):
            data = self._file(index)
            src: list[slice] = []
            dst: list[slice] = []
            for axis, (lo, hi, _) in enumerate(spans):
                if axis in self._axes:
                    origin = index[self._axes.index(axis)] * b
                    a0, a1 = max(lo, origin), min(hi, origin + data.shape[axis])
                    src.append(slice(a0 - origin, a1 - origin))
                    dst.append(slice(a0 - lo, a1 - lo))
                else:
                    src.append(slice(lo, hi))
                    dst.append(slice(None))
            if (
                len(per_axis)
                and all(len(r) == 1 for r in per_axis)
                and data[tuple(src)].shape == out.shape
            ):
                return np.ascontiguousarray(data[tuple(src)])  # the block itself: no copy
            out[tuple(dst)] = data[tuple(src)]
        return out


def open_staged(path: str | os.PathLike[str]) -> xr.Dataset:
    """A staged month: its spatial variables lazily (Dask, the chunks it was written
    with), its coordinates in memory."""
    import dask.array as da

    folder = Path(path)
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError) as err:
        raise PayeshError(f"staged month {folder} is incomplete or unreadable ({err})") from err
    coords: dict[str, xr.Variable] = {}
    data_vars: dict[str, xr.Variable] = {}
    for name, v in meta["vars"].items():
        file = folder / v["file"]
        dims = tuple(v["dims"])
        if v.get("block"):
            blocks = _StagedBlocks(
                folder, file.stem, dims, tuple(v["shape"]), np.dtype(v["dtype"]), v["block"]
            )
            token = f"staged-{name}-{file}-{(folder / _META).stat().st_mtime_ns}"
            data: Any = da.from_array(
                blocks,
                chunks=tuple(v["chunks"]),
                name=token,
                lock=False,
                asarray=False,
                meta=np.empty((0,) * len(dims), dtype=blocks.dtype),
            )
        else:
            data = np.load(file, allow_pickle=False)
        var = xr.Variable(dims, data, v["attrs"])
        (coords if name in meta["coords"] else data_vars)[name] = var
    return xr.Dataset(data_vars, coords=coords, attrs=meta["attrs"])
