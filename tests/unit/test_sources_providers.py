"""Provider profiles on real STAC responses (shared/realdata/stac): Planetary Computer
and Earth Search items map to payesh's bands, and only PC's are signed at read time."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest

from payesh.errors import SourceError
from payesh.sources.load import _asset_keys
from payesh.sources.profiles import PROVIDERS, S2, Provider, provider_for_href
from payesh.sources.signing import item_provider, sign_items

STAC = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "stac" / "pystac-client"
PC_S2 = STAC / "planetarycomputer_search_sentinel-2-l2a_2019-01-01T000001-10.json"
ES_S2 = STAC / "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_longmontCO_2023-10-08.json"


def items_of(path: Path, collection: str) -> list[pystac.Item]:
    features = json.loads(path.read_text())["features"]
    return [pystac.Item.from_dict(f) for f in features if f["collection"] == collection]


def test_planetary_computer_response_maps_to_bands() -> None:
    items = items_of(PC_S2, "sentinel-2-l2a")
    assert len(items) == 33
    keys = _asset_keys(items, S2, tuple(S2.bands))
    assert keys == {
        "blue": "B02",
        "green": "B03",
        "red": "B04",
        "nir": "B08",
        "swir16": "B11",
        "swir22": "B12",
        "scl": "SCL",
    }
    assert {item_provider(i) for i in items} == {PROVIDERS["planetary-computer"]}
    assert PROVIDERS["planetary-computer"].sign == "planetary-computer"
    href = items[0].assets["B04"].href
    assert href.startswith("https://sentinel2l2a01.blob.core.windows.net/") and "?" not in href


def test_earth_search_response_maps_to_bands_and_is_not_signed() -> None:
    items = items_of(ES_S2, "sentinel-2-l2a")
    assert [i.id for i in items] == ["S2A_13TDE_20231008_0_L2A"]
    keys = _asset_keys(items, S2, tuple(S2.bands))
    assert keys == {b: b for b in S2.bands}  # Earth Search v1 uses payesh's names
    provider = item_provider(items[0])
    assert provider is not None and provider.name == "earth-search" and provider.sign is None
    assert sign_items(items)[0] is items[0]  # nothing to sign: the same object


def test_provider_matching_by_host_and_catalog() -> None:
    pc = PROVIDERS["planetary-computer"]
    assert provider_for_href("https://planetarycomputer.microsoft.com/api/stac/v1/") is pc
    assert provider_for_href("https://x.blob.core.windows.net.evil.example/a.tif") is None
    assert provider_for_href("/data/local/B04.tif") is None


def test_an_unknown_signer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    item = items_of(PC_S2, "sentinel-2-l2a")[0]
    odd = Provider(name="odd", asset_hosts=(".blob.core.windows.net",), sign="nope")
    monkeypatch.setattr("payesh.sources.signing.provider_for_href", lambda href: odd)
    with pytest.raises(SourceError, match="signer 'nope'"):
        sign_items([item])
