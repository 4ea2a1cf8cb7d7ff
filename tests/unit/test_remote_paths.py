"""Which hrefs payesh reads over the network (one rule for every reader)."""

from __future__ import annotations

import pystac
import pytest

from payesh.sources.rio_retry import is_remote
from payesh.sources.validate import any_remote


@pytest.mark.parametrize(
    "href",
    [
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif",
        "http://127.0.0.1:8080/B04.tif",
        "s3://usgs-landsat/collection02/x_ST_B10.TIF",
        "/vsicurl/https://example.org/B04.tif",
        "/vsis3/bucket/B04.tif",
        "/vsigs/bucket/B04.tif",
        "/vsiaz/container/B04.tif",
        "/vsizip//vsicurl/https://example.org/a.zip/B04.tif",
    ],
)
def test_network_hrefs_are_remote(href: str) -> None:
    assert is_remote(href)


@pytest.mark.parametrize(
    "href",
    [
        "/data/city/B04.tif",
        "data/city/B04.tif",
        "file:///data/city/B04.tif",
        "/vsizip//data/city/a.zip/B04.tif",  # a local archive
        "/vsimem/B04.tif",
    ],
)
def test_local_hrefs_are_not(href: str) -> None:
    assert not is_remote(href)


def test_an_item_is_remote_when_any_asset_is() -> None:
    item = pystac.Item("i", None, None, pystac.utils.str_to_datetime("2025-01-01T00:00:00Z"), {})
    item.add_asset("red", pystac.Asset("/data/B04.tif"))
    assert not any_remote([item])
    item.add_asset("scl", pystac.Asset("/vsizip//vsicurl/https://example.org/a.zip/SCL.tif"))
    assert any_remote([item])
