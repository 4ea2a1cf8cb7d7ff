"""City manifests: the bundled ones are valid, broken ones fail naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from payesh.city import City, list_cities, load_city
from payesh.errors import ManifestError

GOOD = {
    "name": "testcity",
    "title": "Test city",
    "bbox": [44.92, 38.52, 45.00, 38.58],
    "crs": "EPSG:32638",
    "resolution": 10,
    "tile_size": 1000,
}


def write(tmp_path: Path, data: object, name: str = "testcity") -> Path:
    folder = tmp_path / "cities"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_bundled_manifests_are_valid_and_in_their_utm_zone() -> None:
    cities = {c.name: c for c in list_cities()}
    assert {"khorramabad", "khoy", "urmia", "maku", "demo"} <= set(cities)
    for city in cities.values():
        west, _, east, _ = city.bbox
        zone = int(((west + east) / 2 + 180) // 6) + 1
        assert city.crs == f"EPSG:{32600 + zone}", city.name
    assert cities["khorramabad"].crs == "EPSG:32639"


def test_load_by_path_resolves_records_against_datasets_root(tmp_path: Path) -> None:
    (tmp_path / "permits").mkdir()
    (tmp_path / "permits" / "p.geojson").write_text('{"type":"FeatureCollection","features":[]}')
    path = write(tmp_path, {**GOOD, "permits": "permits/p.geojson"})
    city = load_city(path)
    assert city.permits == (tmp_path / "permits" / "p.geojson").resolve()
    assert city.tile_pixels == 100
    with pytest.raises(Exception):  # noqa: B017 - frozen pydantic model
        city.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"bbox": [45.0, 38.5, 44.9, 38.6]}, "bbox", "west < east"),
        ({"bbox": [44.9, 95.0, 45.0, 96.0]}, "bbox", "south < north"),
        ({"bbox": [40.0, 30.0, 45.0, 38.0]}, "bbox", "more than 2 degrees"),
        ({"crs": "EPSG:4326"}, "crs", "not projected"),
        ({"crs": "EPSG:999999"}, "crs", "not a CRS"),
        ({"tile_size": 1005}, "tile_size", "not a whole multiple of resolution 10"),
        ({"resolution": -10}, "resolution", "greater than 0"),
        ({"name": "Khoy City"}, "name", "must match"),
        ({"permits": "permits/none.geojson"}, "permits", "does not exist"),
        ({"consumption": "consumption/none.csv"}, "consumption", "does not exist"),
    ],
)
def test_invalid_manifest_names_file_and_key(
    tmp_path: Path, change: dict[str, object], key: str, text: str
) -> None:
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ManifestError) as info:
        load_city(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"'{key}'" in msg
    assert text in msg


def test_missing_key_and_bad_yaml_and_non_utf8(tmp_path: Path) -> None:
    data = dict(GOOD)
    del data["crs"]
    with pytest.raises(ManifestError, match=r"key 'crs': required key is missing"):
        load_city(write(tmp_path, data))
    with pytest.raises(ManifestError, match=r"not valid YAML at line \d+: expected ',' or ']'"):
        load_city(write(tmp_path, "name: x\nbbox: [1, 2\n"))
    bad = tmp_path / "cities" / "testcity.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_city(bad)
    with pytest.raises(ManifestError, match="a YAML mapping"):
        load_city(write(tmp_path, "- a\n- b\n"))


def test_unknown_city_name_lists_known_ones() -> None:
    with pytest.raises(ManifestError, match=r"unknown city 'atlantis'.*khoy"):
        load_city("atlantis")


def test_name_must_match_file_in_cities_folder(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, name="othername")
    with pytest.raises(ManifestError, match="differs from the file name"):
        load_city(path)


def test_city_is_hashable_value() -> None:
    a = City.model_validate(GOOD)
    b = City.model_validate(GOOD)
    assert a == b
