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

The package is a small facade over focused modules: :mod:`payesh.store.repo` (where
stores live, how they are opened, the city lock), :mod:`payesh.store.layout` (groups,
CF-conventional rasters, chunks and codecs, merging months), :mod:`payesh.store.write`
(a run's writes and its commit), :mod:`payesh.store.read` (groups, trees and sites of a
snapshot) and :mod:`payesh.store.versions` (history and expiry).
"""

from __future__ import annotations

from payesh.sites_io import SITE_COLUMNS, sites_from_dataset, sites_to_dataset
from payesh.store.layout import GROUPS
from payesh.store.layout import RASTER_GROUPS as RASTER_GROUPS
from payesh.store.layout import SNAPSHOT_ATTR as SNAPSHOT_ATTR
from payesh.store.layout import STORE_FORMAT_VERSION as STORE_FORMAT_VERSION
from payesh.store.read import open_indicators, open_sites, open_tree
from payesh.store.repo import BRANCH as BRANCH
from payesh.store.repo import DEFAULT_STORE_ROOT, STORE_ENV, S3Settings, store_path
from payesh.store.versions import expire, history
from payesh.store.write import RunWriter, open_run, write_run

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
