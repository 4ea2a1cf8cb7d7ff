"""Requester-pays S3 assets, read off Earth Search's real answer (its Landsat items)."""

from __future__ import annotations

import json
from pathlib import Path

import pystac

from payesh.sources.aws import read_options, requester_pays

ES = (
    Path(__file__).resolve().parents[3]
    / "shared/realdata/stac/pystac-client"
    / "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_longmontCO_2023-10-08.json"
)


def test_earth_search_landsat_is_requester_pays_and_its_sentinel_2_is_not() -> None:
    features = json.loads(ES.read_text())["features"]
    items = [pystac.Item.from_dict(f) for f in features]
    landsat = [i for i in items if i.collection_id == "landsat-c2-l2"]
    s2 = [i for i in items if i.collection_id == "sentinel-2-l2a"]
    assert landsat and s2
    for item in landsat:
        assert item.assets["lwir11"].href.startswith("s3://usgs-landsat/")
        assert requester_pays(item, "lwir11") and requester_pays(item, "qa_pixel")
    assert read_options(landsat, ["lwir11", "qa_pixel"]) == {"AWS_REQUEST_PAYER": "requester"}
    for item in s2:
        assert item.assets["red"].href.startswith("https://")
        assert not requester_pays(item, "red") and not requester_pays(item, "scl")
    assert read_options(s2, ["red", "scl"]) == {}
    assert not requester_pays(landsat[0], "no-such-asset")
