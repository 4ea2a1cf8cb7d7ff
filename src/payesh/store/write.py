"""Writing a run: its groups into one Icechunk session, made visible by ONE commit.

A run is written by :func:`write_run` (or a group at a time through :func:`open_run`'s
:class:`RunWriter`) as ONE commit: readers see either the previous snapshot or the new
one, never a half-written month, and a crash before the commit leaves the last committed
snapshot intact. Each commit's metadata holds the provenance of its own run. Concurrent
runs of one city never interleave (see :mod:`payesh.store.repo`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import dask
import dask.threaded
import geopandas as gpd
import icechunk
import xarray as xr
import zarr

from payesh.errors import StoreError
from payesh.parallel import distributed_client_active
from payesh.store.layout import (
    GROUPS,
    RASTER_GROUPS,
    attr_value,
    chunked,
    merge_months,
    prepare,
    root_attrs,
)
from payesh.store.repo import (
    BRANCH,
    check_local,
    first_line,
    group_names,
    icechunk_storage,
    is_uri,
    store_path,
    writer_lock,
)

# --------------------------------------------------------------------------- writing


def _write_group(session: Any, name: str, ds: xr.Dataset, mode: Literal["w", "a"] = "w") -> None:
    ds, encoding = chunked(ds)
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
        self._stored = group_names(base.store)
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
        ds = prepare(name, obj)
        if distributed_client_active():
            # computed on the cluster; the chunks are then written from this process,
            # since a writable Icechunk session does not travel to workers
            ds = ds.compute()
        first = self._written.get(name)
        if first is None:
            given = {str(v) for v in ds.data_vars}
            if name in RASTER_GROUPS and name in self._stored:
                old = xr.open_zarr(self._base.store, group=name, consolidated=False, chunks={})
                ds = merge_months(name, old, ds)
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
        zarr.open_group(session.store, mode="a").attrs.put(root_attrs(self.city_name, provenance))
        metadata = {
            "city": self.city_name,
            "groups": sorted(self._written),
            "provenance": {str(k): attr_value(v) for k, v in provenance.items()},
        }
        try:
            self._committed = str(session.commit(message, metadata=metadata))
        except icechunk.ConflictError as err:
            # Only an object store gets here (a local store is locked): another run moved
            # the branch since this one started. Its months were merged with the snapshot
            # this run started from, so rebasing could drop the other run's months.
            raise StoreError(
                f"another run of {self.city_name} committed to {self.path} first; nothing "
                f"of this run was stored — re-run it ({first_line(err)})"
            ) from err
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"commit to the store of {self.city_name} failed: {first_line(err)}"
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
    if not is_uri(path):
        check_local(path, writing=True)
    storage = icechunk_storage(path)
    with writer_lock(path, city_name, lock_timeout):
        try:
            repo = icechunk.Repository.open_or_create(storage)
            session = repo.writable_session(BRANCH)
            base = repo.readonly_session(snapshot_id=session.snapshot_id)
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"cannot open the store of {city_name} at {path}: {first_line(err)}"
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
    prepared = {name: prepare(name, obj) for name, obj in groups.items()}
    if distributed_client_active():
        # computed on the cluster now, outside the lock (see RunWriter.write)
        prepared = {name: ds.compute() for name, ds in prepared.items()}
    with open_run(city_name, store=store, lock_timeout=lock_timeout) as run:
        for name, ds in prepared.items():
            run.write(name, ds)
        return run.commit(message, provenance)
