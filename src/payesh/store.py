"""The indicator store: one versioned Zarr v3 (Icechunk) repository per city.

Layout: ``<store_root>/<city>`` is an Icechunk repository whose branch ``main`` holds
the groups ``tiles`` (time, tile_y, tile_x), ``pixels`` (time, y, x on the city grid),
``ntl`` (time, y, x on the night-light grid) and ``sites`` (site). Every raster group
carries a CF grid-mapping variable ``spatial_ref`` (``crs_wkt`` + ``GeoTransform``)
that rioxarray and GDAL read; every array is written with a Zstandard compressor
followed by a ``crc32c`` checksum codec. Root attributes hold the provenance of the
latest run; each commit's metadata holds the provenance of its own run.

The store root is a local directory or an ``s3://bucket/prefix`` URI (any S3-compatible
service; credentials and endpoint from the environment, see :class:`S3Settings`).

A run is written by :func:`write_run` as ONE commit: readers see either the previous
snapshot or the new one, never a half-written month, and a crash before the commit
leaves the last committed snapshot intact. Concurrent runs of one city never interleave:

* on a local directory, commits are serialized by an exclusive ``flock`` on
  ``<store_root>/<city>.lock`` (the lock dies with its process, so a killed run never
  leaves a stale lock behind);
* on S3 there is no lock: Icechunk moves the branch with a conditional write, so of two
  runs that started from the same snapshot the first to commit wins and the other fails
  with a :class:`~payesh.errors.StoreError` ("another run ... committed first; re-run").
  It is not rebased: its months were merged with the snapshot it started from.

Readers take no lock: :func:`open_indicators` / :func:`open_tree` read one snapshot
(its id in ``attrs["snapshot_id"]``), lazily. :func:`expire` forgets old versions and
garbage-collects the chunks only they referenced. A location that is not a store (a
file, a non-empty directory without a repository) is refused before anything is written.
See ``docs/store.md``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time as _time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dask
import dask.threaded
import geopandas as gpd
import icechunk
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from pyproj import CRS
from xarray.coding.times import infer_calendar_name, infer_datetime_units
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import GroupNotFoundError

from payesh.errors import StoreError
from payesh.parallel import distributed_client_active
from payesh.sites_io import SITE_COLUMNS, prepare_sites, sites_from_dataset, sites_to_dataset

__all__ = [
    "DEFAULT_STORE_ROOT",
    "GROUPS",
    "SITE_COLUMNS",
    "STORE_ENV",
    "RunWriter",
    "S3Settings",
    "expire",
    "history",
    "open_indicators",
    "open_run",
    "open_sites",
    "open_tree",
    "sites_from_dataset",
    "sites_to_dataset",
    "store_path",
    "write_run",
]

# Icechunk warns on every open that the local-filesystem backend is not safe for
# concurrent commits. payesh serializes a city's commits with a file lock (see
# ``_city_lock``), so the warning is noise here; ICECHUNK_LOG, if set, still wins.
if "ICECHUNK_LOG" not in os.environ:
    icechunk.set_logs_filter("error")

DEFAULT_STORE_ROOT = "./data/store"
STORE_ENV = "PAYESH_STORE"
BRANCH = "main"
STORE_FORMAT_VERSION = 1
#: Attribute :func:`open_indicators` sets to the id of the snapshot it read.
SNAPSHOT_ATTR = "snapshot_id"

#: Spatial dimensions (y, x) of each raster group.
RASTER_GROUPS: dict[str, tuple[str, str]] = {
    "tiles": ("tile_y", "tile_x"),
    "pixels": ("y", "x"),
    "ntl": ("y", "x"),
}
GROUPS = (*RASTER_GROUPS, "sites")
_SPATIAL_CHUNK = 1024
_ZSTD_LEVEL = 3
_ZSTD_LEVEL_INT = 1
"""Integer arrays (``true_colour``, counts) compress as well at Zstandard level 1
as at 3 (true colour: 1.31 against 1.32 on the 24 km bench city) at 3.5 times the speed;
floats (``builtup_prob``) gain a third in size from level 3, so they keep it."""
_CITY_RE = re.compile(r"^[a-z0-9_-]+$")


# --------------------------------------------------------------------------- paths


def _store_root(store: str | os.PathLike[str] | None) -> str:
    if store is None:
        store = os.environ.get(STORE_ENV) or DEFAULT_STORE_ROOT
    return os.fspath(store)


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def store_path(city_name: str, store: str | os.PathLike[str] | None = None) -> str:
    """Location of a city's store.

    Parameters
    ----------
    city_name
        The city's id (``[a-z0-9_-]+``).
    store
        Store root: a local directory or an ``s3://bucket/prefix`` URI.
        Default: ``$PAYESH_STORE`` or ``./data/store``.

    Returns
    -------
    str
        ``<store_root>/<city_name>``.
    """
    if not _CITY_RE.match(city_name):
        raise StoreError(f"invalid city name {city_name!r}: use lowercase letters, digits, _ and -")
    root = _store_root(store)
    if _is_uri(root):
        return f"{root.rstrip('/')}/{city_name}"
    return str(Path(root.removeprefix("file://")) / city_name)


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach an S3-compatible service; read once from the environment.

    Attributes
    ----------
    endpoint_url
        ``$PAYESH_S3_ENDPOINT``, else ``$AWS_ENDPOINT_URL_S3``, else ``$AWS_ENDPOINT_URL``;
        None for AWS itself. With an endpoint, buckets are addressed path-style
        (``http://host/bucket/key``), as MinIO, Ceph and moto expect; ``http://``
        endpoints are allowed.
    region
        ``$AWS_REGION``, else ``$AWS_DEFAULT_REGION``; ``us-east-1`` when an endpoint is
        set without a region.
    access_key_id, secret_access_key, session_token
        ``$AWS_ACCESS_KEY_ID``, ``$AWS_SECRET_ACCESS_KEY``, ``$AWS_SESSION_TOKEN``. When
        the key pair is unset, the usual AWS credential chain (profile, instance role)
        is used.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """The settings named in the class docstring, from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ

        def get(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        endpoint = get("PAYESH_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        region = get("AWS_REGION", "AWS_DEFAULT_REGION")
        return cls(
            endpoint_url=endpoint,
            region=region or ("us-east-1" if endpoint else None),
            access_key_id=get("AWS_ACCESS_KEY_ID"),
            secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
        )

    def storage(self, bucket: str, prefix: str) -> icechunk.Storage:
        """An Icechunk storage for ``s3://bucket/prefix``."""
        keys = bool(self.access_key_id and self.secret_access_key)
        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            allow_http=bool(self.endpoint_url and self.endpoint_url.startswith("http://")),
            force_path_style=self.endpoint_url is not None,
            access_key_id=self.access_key_id if keys else None,
            secret_access_key=self.secret_access_key if keys else None,
            session_token=self.session_token if keys else None,
            from_env=None if keys else True,
        )


def _storage(path: str) -> icechunk.Storage:
    if not _is_uri(path):
        return icechunk.local_filesystem_storage(str(Path(path).resolve()))
    parts = urlsplit(path)
    if parts.scheme != "s3":
        raise StoreError(
            f"store {path!r}: unsupported scheme {parts.scheme!r}; use a local directory "
            "or s3://bucket/prefix"
        )
    if not parts.netloc:
        raise StoreError(f"store {path!r} names no bucket; use s3://bucket/prefix")
    return S3Settings.from_env().storage(parts.netloc, parts.path.strip("/"))


def _check_local(path: str, *, writing: bool) -> None:
    """Refuse a local location that is not (and cannot become) a city's store.

    A store root that is a file, a city path that is a file, or a non-empty directory
    without an Icechunk repository in it: one clear error, and nothing is written there.
    """
    city_dir = Path(path)
    root = city_dir.parent
    if root.exists() and not root.is_dir():
        raise StoreError(f"store root {root} is a file, not a directory; give a directory")
    if city_dir.exists() and not city_dir.is_dir():
        raise StoreError(f"{city_dir} is a file, not a payesh store (an Icechunk repository)")
    if not city_dir.is_dir() or not any(city_dir.iterdir()):
        return
    if not icechunk.Repository.exists(_storage(path)):
        what = "writes nothing into it" if writing else "cannot read it"
        raise StoreError(
            f"{city_dir} is not a payesh store: the directory exists but holds no Icechunk "
            f"repository (payesh {what}); give another --store"
        )


def _open_repo(city_name: str, store: str | os.PathLike[str] | None) -> icechunk.Repository:
    path = store_path(city_name, store)
    missing = StoreError(
        f"no store for city {city_name} at {path} — run `payesh run {city_name}` first"
    )
    if not _is_uri(path):
        _check_local(path, writing=False)
        if not Path(path).is_dir() or not any(Path(path).iterdir()):
            root = Path(path).parent
            if root.is_dir() and icechunk.Repository.exists(_storage(str(root))):
                raise StoreError(
                    f"no store for city {city_name} at {path}: {root} is itself a city's "
                    f"store — give its parent ({root.parent}) as the store root"
                )
            raise missing
    try:
        storage = _storage(path)
        if _is_uri(path) and not icechunk.Repository.exists(storage):
            raise missing
        return icechunk.Repository.open(storage)
    except icechunk.IcechunkError as err:
        raise StoreError(
            f"cannot open the store of {city_name} at {path}: {_first_line(err)}"
        ) from err


def _first_line(err: BaseException) -> str:
    """Icechunk's errors span many lines (a span trace); a message needs the first."""
    lines = [ln.strip(" x|`-") for ln in str(err).splitlines()]
    return next((ln for ln in lines if ln), type(err).__name__)


def _readonly_session(repo: icechunk.Repository, city_name: str, version: str | None) -> Any:
    """A read-only session on ``main``'s latest snapshot or on ``version``.

    ``version`` must be in ``main``'s history (:func:`history`): an expired version is
    refused with the same error as an unknown one. Its snapshot file can outlive
    :func:`expire` while the manifests it pointed to are already deleted (seen once by
    the stateful store test), and reading it would then fail half-way with a raw
    Icechunk error.
    """
    try:
        if version is None:
            return repo.readonly_session(branch=BRANCH)
        if version not in {snap.id for snap in repo.ancestry(branch=BRANCH)}:
            raise ValueError(f"{version!r} is not in the history of {BRANCH!r}")
        return repo.readonly_session(snapshot_id=version)
    except (icechunk.IcechunkError, ValueError) as err:
        what = f"version {version!r}" if version else f"branch {BRANCH!r}"
        raise StoreError(
            f"store of {city_name} has no {what}; list versions with payesh.store.history"
        ) from err


# --------------------------------------------------------------------------- lock


@contextmanager
def _city_lock(root: str, city_name: str, timeout: float) -> Iterator[None]:
    """Exclusive ``flock`` on ``<root>/<city>.lock``, waiting at most ``timeout`` seconds.

    The lock file's existence means nothing: the lock is the kernel's, held by an open
    file descriptor, and is released when the holder exits or is killed.
    """
    lock_path = Path(root) / f"{city_name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = _time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - _time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"store of {city_name} is locked by another writer ({lock_path}); "
                        f"waited {timeout:g} s — retry when that run has finished"
                    ) from None
                _time.sleep(min(0.05, left))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _writer_lock(path: str, city_name: str, timeout: float) -> Iterator[None]:
    """The city lock for a local store; nothing for an object store (see the module doc)."""
    if _is_uri(path):
        yield
        return
    root = Path(path).parent
    root.mkdir(parents=True, exist_ok=True)
    with _city_lock(str(root), city_name, timeout):
        yield


# --------------------------------------------------------------------------- CRS


def _find_crs(ds: xr.Dataset) -> CRS | None:
    if "spatial_ref" in ds.variables:
        attrs = ds["spatial_ref"].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if key in attrs:
                return CRS.from_user_input(attrs[key])
    if "crs" in ds.attrs:
        return CRS.from_user_input(ds.attrs["crs"])
    try:
        import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

        crs = ds.odc.crs
    except Exception:  # any failure means "no CRS found"
        return None
    return None if crs is None else CRS.from_user_input(crs.to_wkt())


def _geotransform(y: np.ndarray, x: np.ndarray) -> str | None:
    if len(x) < 2 or len(y) < 2:
        return None
    dx = float(x[1] - x[0])
    dy = float(y[1] - y[0])
    return f"{float(x[0]) - dx / 2!r} {dx!r} 0.0 {float(y[0]) - dy / 2!r} 0.0 {dy!r}"


def _grid_mapping(crs: CRS, y: np.ndarray, x: np.ndarray, old: Mapping[str, Any]) -> xr.DataArray:
    attrs: dict[str, Any] = dict(crs.to_cf())
    attrs["crs_wkt"] = crs.to_wkt()
    attrs["spatial_ref"] = attrs["crs_wkt"]  # GDAL's and rioxarray's legacy key
    gt = _geotransform(y, x) or old.get("GeoTransform")
    if gt is not None:
        attrs["GeoTransform"] = gt
    return xr.DataArray(np.int64(0), attrs=attrs)


def _axis_attrs(crs: CRS, axis: str) -> dict[str, str]:
    if crs.is_geographic:
        if axis == "x":
            return {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}
        return {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    units = "m" if unit in ("metre", "meter") else unit
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "units": units,
        "axis": axis.upper(),
    }


# --------------------------------------------------------------------------- preparing


def _is_datetime(var: xr.DataArray) -> bool:
    return np.issubdtype(var.dtype, np.datetime64)


def _check_times(name: str, ds: xr.Dataset) -> None:
    if "time" not in ds.dims:
        return
    times = pd.DatetimeIndex(ds["time"].values)
    if not times.is_unique:
        raise StoreError(
            f"group {name!r}: duplicate months in time: {list(times[times.duplicated()])}"
        )
    bad = times[(times != times.normalize()) | (times.day != 1)]
    if len(bad):
        raise StoreError(
            f"group {name!r}: time must hold month starts (YYYY-MM-01), got {[str(t) for t in bad]}"
        )


def _prepare_raster(name: str, ds: xr.Dataset) -> xr.Dataset:
    ydim, xdim = RASTER_GROUPS[name]
    missing = [d for d in (ydim, xdim) if d not in ds.dims]
    if missing:
        raise StoreError(f"group {name!r} lacks dimension(s) {missing}; it needs {(ydim, xdim)}")
    for d in (ydim, xdim):
        if d not in ds.coords:
            raise StoreError(f"group {name!r} lacks the coordinate {d!r} (pixel or tile centres)")
    crs = _find_crs(ds)
    if crs is None:
        raise StoreError(
            f"group {name!r} has no CRS: add a `spatial_ref` variable with `crs_wkt` "
            "(e.g. ds.odc.assign_crs(...)) or a `crs` attribute"
        )
    _check_times(name, ds)
    for v, var in ds.data_vars.items():
        if not _is_datetime(var) and "units" not in var.attrs and v != "spatial_ref":
            raise StoreError(f"group {name!r}: variable {v!r} has no `units` attribute")
    old_gm = dict(ds["spatial_ref"].attrs) if "spatial_ref" in ds.variables else {}
    ds = ds.drop_encoding()
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != SNAPSHOT_ATTR}  # read back, not data
    if "spatial_ref" in ds.variables:
        ds = ds.drop_vars("spatial_ref")
    ds = ds.assign_coords(spatial_ref=_grid_mapping(crs, ds[ydim].values, ds[xdim].values, old_gm))
    ds[xdim].attrs.update(_axis_attrs(crs, "x"))
    ds[ydim].attrs.update(_axis_attrs(crs, "y"))
    if "lon" in ds.coords:
        ds["lon"].attrs.update(
            {"standard_name": "longitude", "units": "degrees_east", "long_name": "tile centre"}
        )
    if "lat" in ds.coords:
        ds["lat"].attrs.update(
            {"standard_name": "latitude", "units": "degrees_north", "long_name": "tile centre"}
        )
    for var in ds.data_vars.values():
        if ydim in var.dims and xdim in var.dims:
            var.attrs["grid_mapping"] = "spatial_ref"
    if "time" in ds.coords:
        ds["time"].attrs.setdefault("standard_name", "time")
        ds["time"].attrs.setdefault("long_name", "month (start)")
    return ds


# --------------------------------------------------------------------------- merging


def _merge_months(name: str, old: xr.Dataset, new: xr.Dataset) -> xr.Dataset:
    """``new`` plus the months of ``old`` that ``new`` does not hold."""
    ydim, xdim = RASTER_GROUPS[name]
    for d in (ydim, xdim):
        if old.sizes[d] != new.sizes[d] or not np.allclose(old[d].values, new[d].values):
            raise StoreError(
                f"group {name!r}: the grid ({d}) differs from the stored one; the city grid "
                "changed — write to a new store or delete the old one"
            )
    if "time" not in old.dims or "time" not in new.dims:
        return new
    old = old.drop_encoding()
    keep = old.isel(time=~old["time"].isin(new["time"].values).values)
    old_timeless = [v for v in old.data_vars if "time" not in old[v].dims and v not in new]
    if keep.sizes["time"] == 0:
        return new.assign({v: old[v] for v in old_timeless})
    new_t = [v for v in new.data_vars if "time" in new[v].dims]
    old_t = [v for v in keep.data_vars if "time" in keep[v].dims]
    spatial = {c: new[c] for c in new.coords if "time" not in new[c].dims}
    parts = []
    for part, names in ((keep, old_t), (new, new_t)):
        part = part[names].drop_vars([c for c in part.coords if "time" not in part[c].dims])
        for v in names:
            if part[v].dtype.kind in "OTU":
                # text (e.g. load_suspect_reason) is small: concatenated as Python strings,
                # since Dask cannot concatenate a stored StringDType with a numpy '<U' array
                part[v] = part[v].copy(data=np.asarray(part[v].values).astype(object))
        parts.append(part.assign_coords(spatial))
    merged = xr.concat(
        parts, dim="time", data_vars="all", coords="minimal", compat="override", join="override"
    )
    merged = merged.sortby("time")
    for v in new_t:
        merged[v].attrs = dict(new[v].attrs)
        if new[v].dtype.kind in "iub" and merged[v].dtype != new[v].dtype:
            merged[v].attrs.setdefault("comment", "missing months stored as NaN")
    timeless = {v: new[v] for v in new.data_vars if "time" not in new[v].dims}
    timeless.update({v: old[v] for v in old_timeless})
    merged = merged.assign(timeless)
    merged.attrs = dict(new.attrs)
    return merged


# --------------------------------------------------------------------------- writing


def _group_names(zstore: Any) -> list[str]:
    try:
        return sorted(zarr.open_group(zstore, mode="r").group_keys())
    except GroupNotFoundError:  # a new, empty repository has no root group yet
        return []


def _chunked(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Regular chunks (one month per chunk) and the checksummed codec pipeline."""
    sizes = {d: int(n) for d, n in ds.sizes.items()}
    chunk = {d: (1 if d == "time" else max(1, min(n, _SPATIAL_CHUNK))) for d, n in sizes.items()}
    encoding: dict[str, dict[str, Any]] = {}
    for v, var in ds.variables.items():
        level = _ZSTD_LEVEL_INT if var.dtype.kind in "biu" else _ZSTD_LEVEL
        enc: dict[str, Any] = {"compressors": [ZstdCodec(level=level), Crc32cCodec()]}
        if var.ndim:
            enc["chunks"] = tuple(chunk[d] for d in var.dims)
        encoding[str(v)] = enc
    ds = ds.copy()
    for v, var in list(ds.variables.items()):
        if var.dtype.kind == "U":
            # fixed-width unicode has no Zarr v3 spec yet; variable-length UTF-8 does
            values = (var.dims, np.asarray(var.values).astype(object), var.attrs)
            if v in ds.coords:
                ds = ds.assign_coords({v: values})
            else:
                ds[v] = values
    for v in list(ds.data_vars):
        raster = ds[v]
        if raster.chunks is None and _is_datetime(raster) and raster.ndim >= 2:
            # a raster of dates (first_seen) encoded chunk by chunk: xarray's encoding of
            # a whole numpy array of dates holds ~3 times its size in temporaries (140 MB
            # for a 24 km city). The units are those it would infer from all the values
            # (it drops NaT first, so the valid ones give the same), so the stored
            # numbers and attributes are the same.
            dates = np.asarray(raster.values)
            valid = dates[~np.isnat(dates)]
            encoding[str(v)].update(
                units=infer_datetime_units(valid),
                calendar=infer_calendar_name(valid),
                dtype=np.dtype("int64"),
            )
            ds[v] = raster.chunk({d: chunk[d] for d in raster.dims if sizes[d] > 0})
    for v, var in ds.variables.items():
        if var.chunks is None:
            continue  # numpy: written eagerly, chunked by the encoding
        if var.dtype.kind in "OTU":
            ds[v] = var.load()  # strings are small; their dtype must be known to encode them
        else:
            ds[v] = var.chunk({d: chunk[d] for d in var.dims if sizes[d] > 0})
    return ds, encoding


def _write_group(session: Any, name: str, ds: xr.Dataset, mode: Literal["w", "a"] = "w") -> None:
    ds, encoding = _chunked(ds)
    if mode == "a":  # an array already in the group keeps its chunks and codecs
        there = set(zarr.open_group(session.store, path=name, mode="r").array_keys())
        encoding = {v: enc for v, enc in encoding.items() if v not in there}
    # Chunks are written from threads of this process into the session's store; a
    # distributed scheduler would need icechunk's fork/merge of sessions.
    with dask.config.set(scheduler=dask.threaded.get):  # by function: no `distributed` import
        ds.to_zarr(
            session.store,
            group=name,
            mode=mode,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
            # every chunk is stored: Zarr's test of a chunk against the fill value (for
            # floats, NaN-aware: whole-chunk temporaries) cost a third of the write, and a
            # chunk of nothing but fill values compresses to a few bytes anyway
            write_empty_chunks=True,
        )


def _attr_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _root_attrs(city_name: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.10",
        "title": f"payesh indicators for {city_name}",
        "city": city_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "payesh_store_format": STORE_FORMAT_VERSION,
    }
    attrs.update({str(k): _attr_value(v) for k, v in provenance.items()})
    attrs["city"] = city_name
    return attrs


def _prepare(name: str, obj: xr.Dataset | gpd.GeoDataFrame) -> xr.Dataset:
    if name not in GROUPS:
        raise StoreError(f"unknown group(s) {[name]}; valid groups are {list(GROUPS)}")
    if name == "sites":
        return prepare_sites(obj)
    if isinstance(obj, xr.Dataset):
        return _prepare_raster(name, obj)
    raise StoreError(f"group {name!r} must be an xarray.Dataset, got {type(obj).__name__}")


class RunWriter:
    """One run's writes to a city's store, made visible together by :meth:`commit`.

    Made by :func:`open_run`, which holds the city's lock (local stores) and one Icechunk
    session for it. Groups are written into the session as they are ready — one may be
    written while the run computes the next (``payesh.pipeline.write_pixel_months``) —
    and nothing is visible to readers before :meth:`commit`. Not for concurrent use
    from several threads.
    """

    def __init__(self, city_name: str, path: str, session: Any, base: Any) -> None:
        self.city_name = city_name
        self.path = path
        self._session = session
        self._stored = _group_names(base.store)
        self._base = base
        self._written: dict[str, xr.Dataset] = {}  # group -> the part(s) written so far
        self._given: dict[str, set[str]] = {}  # group -> the variables this run gave it
        self._committed: str | None = None

    def written(self, name: str) -> set[str]:
        """Variables of group ``name`` this run has written so far (not those of the stored
        group it kept)."""
        return set(self._given.get(name, ()))

    def write(self, name: str, obj: xr.Dataset | gpd.GeoDataFrame) -> None:
        """Write group ``name`` (as :func:`write_run` takes it) into this run.

        The first write of a raster group replaces the stored group, keeping the stored
        months the run does not hold. A group may be written in parts: a later part adds
        (or replaces) variables without a ``time`` dimension — e.g. ``first_seen`` after
        the months of ``pixels``.

        Raises
        ------
        StoreError
            On bad input (as :func:`write_run`), a later part with a ``time`` variable,
            or a write after the commit.
        """
        if self._committed is not None:
            raise StoreError(f"the run on {self.city_name} is committed; open a new one")
        ds = _prepare(name, obj)
        if distributed_client_active():
            # computed on the cluster; the chunks are then written from this process,
            # since a writable Icechunk session does not travel to workers
            ds = ds.compute()
        first = self._written.get(name)
        if first is None:
            given = {str(v) for v in ds.data_vars}
            if name in RASTER_GROUPS and name in self._stored:
                old = xr.open_zarr(self._base.store, group=name, consolidated=False, chunks={})
                ds = _merge_months(name, old, ds)
            _write_group(self._session, name, ds)
            self._written[name], self._given[name] = ds, given
            return
        monthly = sorted(str(v) for v in ds.data_vars if "time" in ds[v].dims)
        if name not in RASTER_GROUPS or monthly:
            raise StoreError(
                f"group {name!r} was already written in this run; a later part may only "
                f"add time-less variables of a raster group, got {monthly or 'sites'}"
            )
        ds.attrs = {**first.attrs, **ds.attrs}
        _write_group(self._session, name, ds, mode="a")
        self._written[name] = first.assign(ds.data_vars)
        self._given[name] |= {str(v) for v in ds.data_vars}

    def commit(self, message: str, provenance: Mapping[str, Any]) -> str:
        """Make every group written visible as ONE new snapshot; returns its id.

        ``provenance`` becomes the root attributes (see :func:`write_run`).

        Raises
        ------
        StoreError
            When nothing was written, on an object store when another run of the city
            committed after this one started (nothing of this run is visible; re-run it),
            or when the commit fails.
        """
        if not self._written:
            raise StoreError(f"the run on {self.city_name} wrote no groups: nothing to commit")
        if self._committed is not None:
            raise StoreError(f"the run on {self.city_name} is committed already")
        session = self._session
        zarr.open_group(session.store, mode="a").attrs.put(_root_attrs(self.city_name, provenance))
        metadata = {
            "city": self.city_name,
            "groups": sorted(self._written),
            "provenance": {str(k): _attr_value(v) for k, v in provenance.items()},
        }
        try:
            self._committed = str(session.commit(message, metadata=metadata))
        except icechunk.ConflictError as err:
            # Only an object store gets here (a local store is locked): another run moved
            # the branch since this one started. Its months were merged with the snapshot
            # this run started from, so rebasing could drop the other run's months.
            raise StoreError(
                f"another run of {self.city_name} committed to {self.path} first; nothing "
                f"of this run was stored — re-run it ({_first_line(err)})"
            ) from err
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"commit to the store of {self.city_name} failed: {_first_line(err)}"
            ) from err
        return self._committed


@contextmanager
def open_run(
    city_name: str,
    *,
    store: str | os.PathLike[str] | None = None,
    lock_timeout: float = 600.0,
) -> Iterator[RunWriter]:
    """Open one run's writes to a city's store (see :class:`RunWriter`).

    A local store's city lock is held until the block ends; leaving the block without
    :meth:`RunWriter.commit` (an error, say) discards what was written, and the store
    stays as it was.

    Raises
    ------
    StoreError
        When the store cannot be opened, or another writer holds a local store's lock
        past ``lock_timeout``.
    """
    path = store_path(city_name, store)
    if not _is_uri(path):
        _check_local(path, writing=True)
    storage = _storage(path)
    with _writer_lock(path, city_name, lock_timeout):
        try:
            repo = icechunk.Repository.open_or_create(storage)
            session = repo.writable_session(BRANCH)
            base = repo.readonly_session(snapshot_id=session.snapshot_id)
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"cannot open the store of {city_name} at {path}: {_first_line(err)}"
            ) from err
        yield RunWriter(city_name, path, session, base)


def write_run(
    city_name: str,
    groups: Mapping[str, xr.Dataset | gpd.GeoDataFrame],
    *,
    store: str | os.PathLike[str] | None = None,
    message: str,
    provenance: Mapping[str, Any],
    lock_timeout: float = 600.0,
) -> str:
    """Write the results of one run as ONE commit of the city's store.

    For the time-dimensioned groups, the months in ``groups`` replace the stored ones and
    every other stored month is kept; time-less variables and ``sites`` are replaced whole.
    Nothing is visible to readers before the commit; an error before it leaves the store
    as it was. (:func:`open_run` does the same a group at a time.)

    Parameters
    ----------
    city_name
        The city's id.
    groups
        ``{"tiles" | "pixels" | "ntl": Dataset, "sites": Dataset | GeoDataFrame}``, any
        subset. Rasters may be dask-backed; they are computed while being written.
        Raster groups need a CRS (``spatial_ref`` with ``crs_wkt``, a ``crs`` attribute,
        or odc-geo's), month-start ``time`` values and ``units`` on every data variable.
    store
        Store root (see :func:`store_path`).
    message
        Commit message.
    provenance
        Root attributes: ``code_version``, ``source_items`` (per product),
        ``model_versions``, … Non-scalar values are stored as JSON strings.
    lock_timeout
        Seconds to wait for another writer of the same city before giving up (local
        stores; an object store has no lock, see below).

    Returns
    -------
    str
        The id of the new snapshot.

    Raises
    ------
    StoreError
        On bad input (nothing is written); when the store cannot be opened; when another
        writer holds a local store's lock past ``lock_timeout``; when, on an object
        store, another run of the city committed after this one started (nothing of
        this run is visible; re-run it).
    """
    if not groups:
        raise StoreError("write_run got no groups to write")
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise StoreError(f"unknown group(s) {unknown}; valid groups are {list(GROUPS)}")
    # every group checked before the store is opened
    prepared = {name: _prepare(name, obj) for name, obj in groups.items()}
    if distributed_client_active():
        # computed on the cluster now, outside the lock (see RunWriter.write)
        prepared = {name: ds.compute() for name, ds in prepared.items()}
    with open_run(city_name, store=store, lock_timeout=lock_timeout) as run:
        for name, ds in prepared.items():
            run.write(name, ds)
        return run.commit(message, provenance)


# --------------------------------------------------------------------------- reading


def open_indicators(
    city_name: str,
    *,
    store: str | os.PathLike[str] | None = None,
    group: str = "tiles",
    version: str | None = None,
) -> xr.Dataset:
    """Open one group of a city's store, lazily (Dask-backed).

    Parameters
    ----------
    city_name
        The city's id.
    store
        Store root (see :func:`store_path`).
    group
        ``tiles``, ``pixels``, ``ntl`` or ``sites``.
    version
        A snapshot id from :func:`history`; default the latest snapshot of ``main``.

    Returns
    -------
    xarray.Dataset
        The group, with the store's root attributes (provenance) merged under its own,
        and ``attrs["snapshot_id"]``: the snapshot read. Opening another group with
        ``version=ds.attrs["snapshot_id"]`` reads the same version even if a run
        committed in between (without ``version``, each call reads the latest).
    """
    if group not in GROUPS:
        raise StoreError(f"unknown group {group!r}; valid groups are {list(GROUPS)}")
    repo = _open_repo(city_name, store)
    session = _readonly_session(repo, city_name, version)
    present = _group_names(session.store)
    if group not in present:
        raise StoreError(
            f"the store of {city_name} has no group {group!r} (it has {present}) — "
            f"run `payesh run {city_name}` to compute it"
        )
    ds = xr.open_zarr(session.store, group=group, consolidated=False, chunks={})
    # the store lists a group's arrays in no fixed order: sort them, so that the same
    # snapshot always gives the same dataset (CSV columns, layer lists, notebooks)
    ds = ds[sorted(map(str, ds.data_vars))]
    root_attrs = dict(zarr.open_group(session.store, mode="r").attrs)
    ds.attrs = {**root_attrs, **ds.attrs, SNAPSHOT_ATTR: str(session.snapshot_id)}
    return ds


def open_tree(
    city_name: str,
    *,
    store: str | os.PathLike[str] | None = None,
    version: str | None = None,
) -> xr.DataTree:
    """Every group of one snapshot of a city's store, lazily, as an ``xarray.DataTree``.

    All groups come from the same snapshot (``/tiles``, ``/pixels``, ``/ntl``,
    ``/sites``, whichever the store holds); the root node's attributes are the store's
    provenance plus ``snapshot_id``. Parameters as in :func:`open_indicators`.
    """
    repo = _open_repo(city_name, store)
    session = _readonly_session(repo, city_name, version)
    if not _group_names(session.store):
        raise StoreError(f"the store of {city_name} holds no group yet")
    tree = xr.open_datatree(
        session.store, engine="zarr", consolidated=False, chunks={}, zarr_format=3
    )
    tree.attrs = {**tree.attrs, SNAPSHOT_ATTR: str(session.snapshot_id)}
    return tree


def open_sites(
    city_name: str,
    *,
    store: str | os.PathLike[str] | None = None,
    version: str | None = None,
) -> gpd.GeoDataFrame:
    """The construction sites of a city as a GeoDataFrame (in the city's CRS).

    Columns are :data:`SITE_COLUMNS`; ``permit_id`` is None where no permit overlaps.
    """
    ds = open_indicators(city_name, store=store, group="sites", version=version)
    return sites_from_dataset(ds)


def history(city_name: str, *, store: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The committed runs of a city's store, newest first.

    Returns
    -------
    list of dict
        ``snapshot_id``, ``time`` (UTC datetime), ``message`` and ``metadata`` of each
        commit (the repository's empty initial snapshot is left out).
    """
    repo = _open_repo(city_name, store)
    out = []
    for snap in repo.ancestry(branch=BRANCH):
        if snap.parent_id is None:
            continue
        out.append(
            {
                "snapshot_id": snap.id,
                "time": snap.written_at,
                "message": snap.message,
                "metadata": dict(snap.metadata),
            }
        )
    return out


# --------------------------------------------------------------------------- housekeeping


def _as_utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def expire(
    city_name: str,
    *,
    store: str | os.PathLike[str] | None = None,
    keep: int = 10,
    older_than: datetime | timedelta | None = None,
    dry_run: bool = False,
    lock_timeout: float = 600.0,
) -> dict[str, Any]:
    """Forget old versions of a city's store and delete the data only they referenced.

    A version is expired when it is older than ``older_than`` AND is not one of the
    ``keep`` newest; the latest version is never expired, and the newest ``keep`` stay
    readable with ``version=``. Then the objects no version references any more
    (chunks, manifests, snapshots, transaction logs) are deleted, but only those written
    before the oldest kept version: chunks of a run still writing are never touched.

    Parameters
    ----------
    city_name
        The city's id.
    store
        Store root (see :func:`store_path`).
    keep
        How many of the newest versions to keep (at least 1).
    older_than
        Expire only versions committed before this time (a ``datetime``; naive means
        UTC) or older than this age (a ``timedelta``). Default: every version but the
        ``keep`` newest.
    dry_run
        Only report which versions would be expired (deletion counts stay 0); change
        nothing.
    lock_timeout
        Seconds to wait for a running writer of a local store (see :func:`write_run`).

    Returns
    -------
    dict
        ``expired`` (snapshot ids), ``kept`` (number of versions left in the history),
        ``cutoff`` (UTC datetime), and the deletion counts ``chunks_deleted``,
        ``manifests_deleted``, ``snapshots_deleted``, ``bytes_deleted``.

    Raises
    ------
    StoreError
        No store, ``keep`` < 1, or the store could not be cleaned.
    """
    if keep < 1:
        raise StoreError(f"keep={keep!r}: at least the latest version must be kept (keep >= 1)")
    repo = _open_repo(city_name, store)
    path = store_path(city_name, store)
    with _writer_lock(path, city_name, lock_timeout):
        versions = history(city_name, store=store)
        if len(versions) <= keep:
            cutoff = None
        else:
            cutoff = _as_utc(versions[keep - 1]["time"])  # the oldest version kept
            if older_than is not None:
                limit = (
                    datetime.now(UTC) - older_than
                    if isinstance(older_than, timedelta)
                    else _as_utc(older_than)
                )
                cutoff = min(cutoff, limit)
        doomed = [v["snapshot_id"] for v in versions if cutoff and _as_utc(v["time"]) < cutoff]
        result: dict[str, Any] = {
            "expired": doomed,
            "kept": len(versions) - len(doomed),
            "cutoff": cutoff,
            "chunks_deleted": 0,
            "manifests_deleted": 0,
            "snapshots_deleted": 0,
            "bytes_deleted": 0,
        }
        if cutoff is None or not doomed or dry_run:
            return result
        try:
            repo.expire_snapshots(cutoff)
            summary = repo.garbage_collect(cutoff)
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"cleaning the store of {city_name} at {path} failed: {_first_line(err)}"
            ) from err
        for key in ("chunks_deleted", "manifests_deleted", "snapshots_deleted", "bytes_deleted"):
            result[key] = int(getattr(summary, key))
        return result
