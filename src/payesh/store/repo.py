"""Where a city's store lives and how it is opened; the lock serialising its commits.

The store root is a local directory or an ``s3://bucket/prefix`` URI (any S3-compatible
service; credentials and endpoint from the environment, see :class:`S3Settings`); a
city's store is the Icechunk repository ``<store_root>/<city>``. A location that is not
a store (a file, a non-empty directory without a repository) is refused before anything
is written. Concurrent runs of one city never interleave:

* on a local directory, commits are serialized by an exclusive ``flock`` on
  ``<store_root>/<city>.lock`` (the lock dies with its process, so a killed run never
  leaves a stale lock behind);
* on S3 there is no lock: Icechunk moves the branch with a conditional write, so of two
  runs that started from the same snapshot the first to commit wins and the other fails
  with a :class:`~payesh.errors.StoreError` ("another run ... committed first; re-run").
  It is not rebased: its months were merged with the snapshot it started from.
"""

from __future__ import annotations

import fcntl
import os
import re
import time as _time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import icechunk
import zarr
from zarr.errors import GroupNotFoundError

from payesh.errors import StoreError

# Icechunk warns on every open that the local-filesystem backend is not safe for
# concurrent commits. payesh serializes a city's commits with a file lock (see
# ``_city_lock``), so the warning is noise here; ICECHUNK_LOG, if set, still wins.
if "ICECHUNK_LOG" not in os.environ:
    icechunk.set_logs_filter("error")

DEFAULT_STORE_ROOT = "./data/store"
STORE_ENV = "PAYESH_STORE"
BRANCH = "main"
_CITY_RE = re.compile(r"^[a-z0-9_-]+$")


# --------------------------------------------------------------------------- paths


def _store_root(store: str | os.PathLike[str] | None) -> str:
    if store is None:
        store = os.environ.get(STORE_ENV) or DEFAULT_STORE_ROOT
    return os.fspath(store)


def is_uri(path: str) -> bool:
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
    if is_uri(root):
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


def icechunk_storage(path: str) -> icechunk.Storage:
    if not is_uri(path):
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


def check_local(path: str, *, writing: bool) -> None:
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
    if not icechunk.Repository.exists(icechunk_storage(path)):
        what = "writes nothing into it" if writing else "cannot read it"
        raise StoreError(
            f"{city_dir} is not a payesh store: the directory exists but holds no Icechunk "
            f"repository (payesh {what}); give another --store"
        )


def open_repo(city_name: str, store: str | os.PathLike[str] | None) -> icechunk.Repository:
    path = store_path(city_name, store)
    missing = StoreError(
        f"no store for city {city_name} at {path} — run `payesh run {city_name}` first"
    )
    if not is_uri(path):
        check_local(path, writing=False)
        if not Path(path).is_dir() or not any(Path(path).iterdir()):
            root = Path(path).parent
            if root.is_dir() and icechunk.Repository.exists(icechunk_storage(str(root))):
                raise StoreError(
                    f"no store for city {city_name} at {path}: {root} is itself a city's "
                    f"store — give its parent ({root.parent}) as the store root"
                )
            raise missing
    try:
        storage = icechunk_storage(path)
        if is_uri(path) and not icechunk.Repository.exists(storage):
            raise missing
        return icechunk.Repository.open(storage)
    except icechunk.IcechunkError as err:
        raise StoreError(
            f"cannot open the store of {city_name} at {path}: {first_line(err)}"
        ) from err


def first_line(err: BaseException) -> str:
    """Icechunk's errors span many lines (a span trace); a message needs the first."""
    lines = [ln.strip(" x|`-") for ln in str(err).splitlines()]
    return next((ln for ln in lines if ln), type(err).__name__)


def readonly_session(repo: icechunk.Repository, city_name: str, version: str | None) -> Any:
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


def group_names(zstore: Any) -> list[str]:
    try:
        return sorted(zarr.open_group(zstore, mode="r").group_keys())
    except GroupNotFoundError:  # a new, empty repository has no root group yet
        return []


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
def writer_lock(path: str, city_name: str, timeout: float) -> Iterator[None]:
    """The city lock for a local store; nothing for an object store (see the module doc)."""
    if is_uri(path):
        yield
        return
    root = Path(path).parent
    root.mkdir(parents=True, exist_ok=True)
    with _city_lock(str(root), city_name, timeout):
        yield
