"""Assets in requester-pays S3 buckets: Earth Search's Landsat (``s3://usgs-landsat``).

Earth Search v1 serves Sentinel-2 COGs over public HTTPS, but its ``landsat-c2-l2`` items
point at USGS's bucket, ``s3://usgs-landsat/collection02/…``, which charges the reader:
every request must say ``x-amz-request-payer: requester`` and be signed with the reader's
AWS credentials, or S3 answers 403. The items say so with the STAC storage extension —
``storage:requester_pays: true`` on the asset (v1), or a ``storage:refs`` entry naming an
item-level ``storage:schemes`` entry with ``requester_pays: true`` (v2).

:func:`read_options` gives GDAL ``AWS_REQUEST_PAYER=requester`` for reads of such assets
(payesh's readers add it to their GDAL options), and :func:`check_credentials`, called
when a run is planned, turns missing credentials into one clear error before anything is
read, rather than a 403 per file after every retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pystac

from payesh.errors import SourceError

__all__ = ["check_credentials", "credentials_found", "read_options", "requester_pays"]

#: Environment variables any of which means the AWS credential chain has something.
CREDENTIAL_VARS = (
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def _is_s3(href: str) -> bool:
    return href.startswith(("s3://", "/vsis3/"))


def requester_pays(item: pystac.Item, key: str) -> bool:
    """Whether ``item``'s asset ``key`` lies in a requester-pays S3 bucket."""
    asset = item.assets.get(key)
    if asset is None or not _is_s3(asset.href):
        return False
    flag = asset.extra_fields.get(
        "storage:requester_pays", item.properties.get("storage:requester_pays")
    )
    if flag is not None:
        return bool(flag)
    schemes = item.properties.get("storage:schemes") or {}
    refs = asset.extra_fields.get("storage:refs") or []
    return any(
        isinstance(schemes.get(ref), Mapping) and bool(schemes[ref].get("requester_pays"))
        for ref in refs
    )


def read_options(items: Iterable[pystac.Item], keys: Iterable[str]) -> dict[str, str]:
    """GDAL options for reading ``keys`` of ``items``: ``AWS_REQUEST_PAYER=requester``
    where any of them is in a requester-pays bucket (for other buckets S3 ignores it)."""
    keys = list(keys)
    if any(requester_pays(i, k) for i in items for k in keys):
        return {"AWS_REQUEST_PAYER": "requester"}
    return {}


def credentials_found(environ: Mapping[str, str] | None = None) -> bool:
    """Whether AWS credentials are configured: a key pair or one of
    :data:`CREDENTIAL_VARS` in the environment, or a shared credentials file
    (``AWS_SHARED_CREDENTIALS_FILE``, default ``~/.aws/credentials``)."""
    env = os.environ if environ is None else environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(env.get(v) for v in CREDENTIAL_VARS):
        return True
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" / "credentials")
    return Path(shared).is_file()


def check_credentials(
    items: Iterable[pystac.Item],
    keys: Iterable[str],
    *,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise if ``items`` (of product ``what``) need requester-pays reads and no AWS
    credentials are configured.

    Raises
    ------
    SourceError
        Names an item and its bucket, what to set, and how to leave the product out.
    """
    keys = list(keys)
    for item in items:
        for key in keys:
            if requester_pays(item, key) and not credentials_found(environ):
                href = item.assets[key].href
                bucket = href.removeprefix("/vsis3/").removeprefix("s3://").split("/", 1)[0]
                raise SourceError(
                    f"{what} item {item.id!r} ({key}) is in the requester-pays bucket "
                    f"s3://{bucket}: reading it needs AWS credentials (AWS_ACCESS_KEY_ID and "
                    f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), and the transfer is billed to "
                    f"that account; or leave the product out with --collections"
                )
