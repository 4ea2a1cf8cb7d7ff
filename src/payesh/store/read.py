"""Reading a city's store: one group, every group as a tree, the construction sites.

Readers take no lock: :func:`open_indicators` / :func:`open_tree` read one snapshot
(its id in ``attrs["snapshot_id"]``), lazily.
"""

from __future__ import annotations

import os

import geopandas as gpd
import xarray as xr
import zarr

from payesh.errors import StoreError
from payesh.sites_io import sites_from_dataset
from payesh.store.layout import GROUPS, SNAPSHOT_ATTR
from payesh.store.repo import group_names, open_repo, readonly_session

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
    repo = open_repo(city_name, store)
    session = readonly_session(repo, city_name, version)
    present = group_names(session.store)
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
    repo = open_repo(city_name, store)
    session = readonly_session(repo, city_name, version)
    if not group_names(session.store):
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
