"""The versions of a city's store: its history of runs, and their expiry.

:func:`history` lists the committed runs; :func:`expire` forgets old versions and
garbage-collects the chunks only they referenced.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import icechunk

from payesh.errors import StoreError
from payesh.store.repo import BRANCH, first_line, open_repo, store_path, writer_lock


def history(city_name: str, *, store: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The committed runs of a city's store, newest first.

    Returns
    -------
    list of dict
        ``snapshot_id``, ``time`` (UTC datetime), ``message`` and ``metadata`` of each
        commit (the repository's empty initial snapshot is left out).
    """
    repo = open_repo(city_name, store)
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
    repo = open_repo(city_name, store)
    path = store_path(city_name, store)
    with writer_lock(path, city_name, lock_timeout):
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
                f"cleaning the store of {city_name} at {path} failed: {first_line(err)}"
            ) from err
        for key in ("chunks_deleted", "manifests_deleted", "snapshots_deleted", "bytes_deleted"):
            result[key] = int(getattr(summary, key))
        return result
