"""Landsat in a requester-pays S3 bucket, as Earth Search serves it (``s3://usgs-landsat``).

A real S3 server (``moto_server``) holds the tiny city's Landsat COGs; in front of it, a
proxy on loopback answers 403 AccessDenied to any request without
``x-amz-request-payer: requester``, as S3 does for a requester-pays bucket. The items are
the city's own, their hrefs moved to ``s3://`` and flagged ``storage:requester_pays`` as
Earth Search's are; the month read through S3 must equal the month read from disk.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import pytest
import xarray as xr
from s3server import ACCESS_KEY, REGION, SECRET_KEY, moto_s3
from servers import serve_proxy

from payesh.city import load_city
from payesh.errors import SourceError
from payesh.grid import aligned_geobox
from payesh.monthly import landsat_month
from payesh.sources.aws import check_credentials, credentials_found, read_options, requester_pays
from payesh.sources.http import RetryPolicy
from payesh.sources.load import gdal_remote_env
from payesh.sources.validate import file_problem

pytestmark = pytest.mark.integration

BUCKET = "usgs-landsat"
KEYS = ("lwir11", "qa_pixel")
PAYER = {"x-amz-request-payer": "requester"}


def _landsat(tiny_city: Any, month: pd.Timestamp) -> list[pystac.Item]:
    cat = pystac.Catalog.from_file(str(tiny_city.catalog))
    items = [
        i for i in cat.get_items(recursive=True)
        if i.collection_id == "landsat-c2-l2" and i.datetime is not None
        and (i.datetime.year, i.datetime.month) == (month.year, month.month)
    ]  # fmt: skip
    for i in items:
        i.make_asset_hrefs_absolute()
    return items


def _in_bucket(items: list[pystac.Item], client: Any) -> list[pystac.Item]:
    """Copies of ``items`` whose assets are objects of :data:`BUCKET`, flagged as Earth
    Search flags them."""
    out = []
    for item in items:
        copy = item.clone()
        for key in KEYS:
            path = Path(item.assets[key].get_absolute_href() or "")
            object_key = f"collection02/level-2/{item.id}/{path.name}"
            client.upload_file(str(path), BUCKET, object_key)
            copy.assets[key].href = f"s3://{BUCKET}/{object_key}"
            copy.assets[key].extra_fields.update(
                {
                    "storage:platform": "AWS",
                    "storage:region": REGION,
                    "storage:requester_pays": True,
                }
            )
        out.append(copy)
    return out


def test_landsat_from_a_requester_pays_bucket_equals_landsat_from_disk(
    tiny_city: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = pd.Timestamp("2025-06-01")
    local = _landsat(tiny_city, month)
    assert local, "the tiny city has Landsat in June"
    gbox = aligned_geobox(load_city(tiny_city.manifest), 30.0)
    with moto_s3() as s3, serve_proxy(s3.endpoint) as proxy:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        remote = _in_bucket(local, client)
        proxy.required_headers = dict(PAYER)
        # the gate is real: a plain GET is refused
        url = f"{proxy.url}/{BUCKET}/{remote[0].assets['lwir11'].href.split('/', 3)[3]}"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(url, timeout=10)
        proxy.take_hits()

        assert all(requester_pays(i, k) for i in remote for k in KEYS)
        assert read_options(remote, KEYS) == {"AWS_REQUEST_PAYER": "requester"}
        assert read_options(local, KEYS) == {}
        for var, value in {
            "AWS_S3_ENDPOINT": f"127.0.0.1:{proxy.port}", "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
        }.items():  # fmt: skip
            monkeypatch.setenv(var, value)
        check_credentials(remote, KEYS, what="landsat")  # credentials set: no error

        from_s3 = landsat_month(remote, gbox, month).compute()

        hits = proxy.take_hits()
        # unflagged, the same objects are refused: said as such, not as a damaged file
        unflagged = remote[0].clone()
        del unflagged.assets["lwir11"].extra_fields["storage:requester_pays"]
        fresh = "unpaid/" + unflagged.assets["lwir11"].href.split("/", 3)[3]  # GDAL caches
        client.upload_file(  # type: ignore[attr-defined]
            local[0].assets["lwir11"].get_absolute_href(), BUCKET, fresh
        )
        unflagged.assets["lwir11"].href = f"s3://{BUCKET}/{fresh}"
        env = gdal_remote_env() | read_options([unflagged], ["lwir11"])
        found = file_problem(unflagged, "lwir11", env=env, policy=RetryPolicy(attempts=1))
        assert found is not None and "cannot be read: access denied" in found, found
        assert "corrupt" not in found
    from_disk = landsat_month(local, gbox, month).compute()
    xr.testing.assert_identical(from_s3.drop_attrs(), from_disk.drop_attrs())
    assert from_s3.attrs["source_items"] == from_disk.attrs["source_items"]
    assert int(from_s3["lst_count"].sum()) > 0
    assert hits and all(h.status in (200, 206) for h in hits), hits  # every one signed, paid
    assert {h.path.split("/")[1] for h in hits} == {BUCKET}


def test_requester_pays_items_without_aws_credentials_are_one_clear_error(
    tiny_city: Any, tmp_path: Path
) -> None:
    items = _landsat(tiny_city, pd.Timestamp("2025-06-01"))
    for item in items:
        for key in KEYS:
            item.assets[key].href = f"s3://{BUCKET}/x/{item.id}_{key}.TIF"
            item.assets[key].extra_fields["storage:requester_pays"] = True
    bare = {"HOME": str(tmp_path), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    assert not credentials_found(bare)
    with pytest.raises(
        SourceError, match=r"requester-pays bucket s3://usgs-landsat.*AWS_ACCESS_KEY_ID"
    ):
        check_credentials(items, KEYS, what="landsat", environ=bare)
    for given in (
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
        {"AWS_PROFILE": "payesh"},
    ):
        assert credentials_found(bare | given)
        check_credentials(items, KEYS, what="landsat", environ=bare | given)
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id = k\naws_secret_access_key = s\n")
    assert credentials_found(bare | {"AWS_SHARED_CREDENTIALS_FILE": str(shared)})

    # the storage extension's v2 form: the asset refers to an item-level scheme
    item = items[0].clone()
    for key in KEYS:
        del item.assets[key].extra_fields["storage:requester_pays"]
        item.assets[key].extra_fields["storage:refs"] = ["aws"]
    item.properties["storage:schemes"] = {"aws": {"type": "aws-s3", "requester_pays": True}}
    assert requester_pays(item, "lwir11")
    item.properties["storage:schemes"]["aws"]["requester_pays"] = False
    assert not requester_pays(item, "lwir11")
