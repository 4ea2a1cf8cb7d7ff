"""Fuzzing the inputs payesh parses, with Hypothesis (atheris is not installed).

Three parsers meet files written by people and other programs: city manifests
(:func:`payesh.city.load_city`), permits files (:func:`payesh.records.read_permits`)
and STAC item JSON (a static catalog, through :func:`payesh.plan.plan_run`: pystac's
parsing, the search filters, the metadata checks, the night-light grid origin). Each is
fed random text and bytes and, more usefully, documents *shaped like* good input with
random wrong parts: keys of the wrong type, broken geometries, odd ``proj:`` and
``raster:bands`` fields.

The property, for every input: the parser returns a valid object, or raises one
:class:`payesh.errors.PayeshError` whose message names the file (or, for STAC, the
catalog or the item) — never any other exception, and no warning but payesh's own.
Time is bounded by ``max_examples`` (``figures.scale``: short in ``make test``, long
under ``make reliability``).
"""

from __future__ import annotations

import json
import math
import string
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payesh.city import City, load_city
from payesh.errors import PayeshError, PayeshWarning
from payesh.period import Period
from payesh.plan import RunPlan, plan_run
from payesh.records import read_permits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "reliability"))
import figures

# Hypothesis warns when the global `random` state changes while it draws an example. No
# strategy here uses `random`; the state changes when another thread of the test process
# (left by an earlier test in the same xdist worker: a Prefect client, a pool) draws from
# it meanwhile, which made one CI run fail as "flaky" with nothing wrong in the test.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

FUZZ = settings(
    max_examples=figures.scale(60, 3000),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# inputs tried and exceptions that were not payesh's, per test (for the reliability page)
TRIED: dict[str, int] = {}
CRASHES: dict[str, int] = {}
# crashes the fuzzer found, all fixed in src (both tables of
# docs/reliability-properties.md): while these tests were written, then by the first
# long campaign (a tiny resolution; a malformed proj:transform; a list as proj:epsg);
# recorded as ``fixed`` per test — counted by hand, not measured by the run
FIXED = {
    "test_fuzz_manifests_parse_or_fail_clearly": 2 + 1,
    "test_fuzz_permits_parse_or_fail_clearly": 1,
    "test_fuzz_stac_items_parse_or_fail_clearly": 3 + 2,
}


@pytest.fixture(scope="module", autouse=True)
def _record_figures() -> object:
    yield
    for test, n in TRIED.items():
        figures.record(
            "fuzz",
            f"tests/unit/test_fuzz_inputs.py::{test}",
            inputs_tried=n,
            crashes_found=CRASHES.get(test, 0),
            fixed=FIXED.get(test, 0),
        )


def _expect(test: str, call: Callable[[], Any], names: tuple[str, ...]) -> Any:
    """Run a parser: its value, or None after a PayeshError naming one of ``names``."""
    TRIED[test] = TRIED.get(test, 0) + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = call()
        except PayeshError as err:
            msg = str(err)
            assert any(n in msg for n in names), f"message names none of {names}: {msg}"
            assert "\n" not in msg.strip() or "Traceback" not in msg
            value = None
        except Exception:
            CRASHES[test] = CRASHES.get(test, 0) + 1
            raise
    foreign = [
        w
        for w in caught
        if not issubclass(w.category, PayeshWarning)
        and not any(str(w.message).startswith(ok) for ok in HARMLESS_WARNINGS)
    ]
    assert not foreign, [f"{w.category.__name__}: {w.message}" for w in foreign]
    return value


# Third-party warnings that say nothing is lost: pyogrio keeps a GeoJSON property that
# holds a list or an object in some features as its JSON text.
HARMLESS_WARNINGS = ("Could not parse column",)

# --------------------------------------------------------------------------- values

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
numbers = st.one_of(
    st.floats(-1e3, 1e3),
    st.integers(-500, 500),
    st.sampled_from([0, -1, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
)


# --------------------------------------------------------------------------- manifests

GOOD_MANIFEST: dict[str, Any] = {
    "name": "fuzzcity",
    "title": "Fuzz City",
    "bbox": [44.9, 38.5, 45.0, 38.58],
    "crs": "EPSG:32638",
    "resolution": 10,
    "tile_size": 1000,
}
WRONG = {
    "name": st.one_of(json_values, st.text(alphabet=string.printable, max_size=12)),
    "title": json_values,
    "bbox": st.one_of(json_values, st.lists(numbers, min_size=0, max_size=6)),
    "crs": st.one_of(
        json_values,
        st.sampled_from(
            ["EPSG:4326", "EPSG:32639", "EPSG:999999", "+proj=utm +zone=38", "", "utm"]
        ),
    ),
    "resolution": st.one_of(json_values, numbers),
    "tile_size": st.one_of(json_values, numbers),
    "permits": st.one_of(
        json_values, st.sampled_from(["", ".", "..", "/", "x\x00y", "a" * 300, "p.geojson"])
    ),
    "consumption": st.one_of(json_values, st.sampled_from(["", "/dev/null", "c.csv"])),
}


@st.composite
def manifest_texts(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["structured", "structured", "structured", "text", "bytes"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    data = dict(GOOD_MANIFEST)
    for key in draw(st.lists(st.sampled_from(sorted(WRONG)), max_size=3, unique=True)):
        data[key] = draw(WRONG[key])
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=1)):
        del data[key]
    if draw(st.booleans()):
        data[draw(st.text(max_size=6))] = draw(json_values)  # an unknown (or odd) key
    as_json = draw(st.booleans())  # JSON is YAML too
    try:
        return json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True)
    except ValueError:  # NaN in JSON: let YAML write it
        return yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(text=manifest_texts())
def test_fuzz_manifests_parse_or_fail_clearly(tmp_path: Path, text: str | bytes) -> None:
    folder = tmp_path / "cities"
    folder.mkdir(exist_ok=True)
    (tmp_path / "p.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "c.csv").write_text("month,mwh\n2025-01,10\n")
    path = folder / "fuzzcity.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    city = _expect(
        "test_fuzz_manifests_parse_or_fail_clearly", lambda: load_city(path), (str(path),)
    )
    if city is not None:
        assert isinstance(city, City) and city.name == "fuzzcity"
        w, s, e, n = city.bbox
        assert w < e and s < n and city.resolution > 0 and city.tile_pixels >= 1


# --------------------------------------------------------------------------- permits

positions = st.lists(numbers, min_size=0, max_size=3)
rings = st.one_of(
    st.lists(positions, min_size=0, max_size=6),
    # closed squares, sometimes a bow-tie: valid-looking input
    st.tuples(st.floats(44.9, 45.0), st.floats(38.5, 38.6), st.floats(1e-5, 1e-3)).map(
        lambda p: [
            [p[0], p[1]],
            [p[0] + p[2], p[1]],
            [p[0] + p[2], p[1] + p[2]],
            [p[0], p[1] + p[2]],
            [p[0], p[1]],
        ]
    ),
    st.just([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]),
)
geometries = st.one_of(
    st.none(),
    st.fixed_dictionaries({"type": st.just("Polygon"), "coordinates": st.lists(rings, max_size=2)}),
    st.fixed_dictionaries(
        {
            "type": st.just("MultiPolygon"),
            "coordinates": st.lists(st.lists(rings, max_size=2), max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Point", "LineString", "GeometryCollection", "Bogus", ""]),
            "coordinates": st.one_of(positions, st.lists(positions, max_size=3)),
        }
    ),
    json_values,
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "permit_id": st.one_of(st.text(max_size=8), st.integers(), st.none(), json_values),
        "issued": st.one_of(
            st.sampled_from(["2024-05-01", "2024-13-45", "yesterday", "", "1e400"]),
            st.dates().map(str),
            json_values,
        ),
        "kind": json_values,
        "surprise": json_values,
    },
)
features = st.fixed_dictionaries(
    {"type": st.just("Feature"), "geometry": geometries, "properties": properties}
)


@st.composite
def permit_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["collection", "collection", "collection", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    doc: dict[str, Any] = {
        "type": draw(st.sampled_from(["FeatureCollection", "FeatureCollection", "Feature", "x"])),
        "features": draw(st.lists(features, max_size=4)),
    }
    if draw(st.booleans()):
        doc["crs"] = draw(
            st.one_of(
                st.just({"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32638"}}),
                json_values,
            )
        )
    return json.dumps(doc).encode()


@FUZZ
@given(raw=permit_files())
def test_fuzz_permits_parse_or_fail_clearly(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "permits.geojson"
    path.write_bytes(raw)
    gdf = _expect(
        "test_fuzz_permits_parse_or_fail_clearly", lambda: read_permits(path), (str(path),)
    )
    if gdf is not None:
        assert isinstance(gdf, gpd.GeoDataFrame) and gdf.crs is not None
        assert list(gdf.columns[:2]) == ["permit_id", "issued"]
        # planar area in the file's own CRS units (geographic or not): only its sign matters
        assert bool((shapely.area(gdf.geometry.values) > 0).all())


# --------------------------------------------------------------------------- STAC items

CITY = City.model_validate(GOOD_MANIFEST)
PERIOD = Period.parse("2025-01", "2025-03")
COLLECTIONS = ["sentinel-2-l2a", "landsat-c2-l2", "viirs-ntl-monthly"]
ASSET_KEYS = {
    "sentinel-2-l2a": ["red", "nir", "scl", "B04", "blue", "green", "swir16", "swir22"],
    "landsat-c2-l2": ["lwir11", "qa_pixel"],
    "viirs-ntl-monthly": ["radiance", "cf_cvg"],
}
datetimes = st.one_of(
    st.sampled_from(
        [
            "2025-02-03T07:30:00Z",
            "2025-02-03T07:30:00",  # no time zone
            "2025-02-03",
            "2025-02-30T00:00:00Z",
            "not a date",
            "",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    json_values,
)
transforms = st.one_of(
    st.lists(numbers, min_size=0, max_size=9),
    st.just([1 / 240, 0.0, 44.0, 0.0, -1 / 240, 39.0]),
    st.just([0, 0, 0, 0, 0, 0]),
    json_values,
)
band_info = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "scale": st.one_of(numbers, json_values),
            "offset": st.one_of(numbers, json_values),
            "nodata": st.one_of(numbers, json_values),
            "data_type": st.sampled_from(["uint16", "float32", "x"]),
        },
    ),
    max_size=2,
)


@st.composite
def assets(draw: st.DrawFn, collection: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(ASSET_KEYS[collection]), max_size=5, unique=True)):
        asset: dict[str, Any] = {
            "href": draw(st.sampled_from([f"./{key}.tif", "", "http://127.0.0.1:9/x.tif"]))
        }
        extra = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "proj:epsg": st.one_of(st.sampled_from([32638, 4326, 0, -1]), json_values),
                    "proj:code": st.one_of(st.sampled_from(["EPSG:32638", "EPSG:x"]), json_values),
                    "proj:transform": transforms,
                    "proj:shape": json_values,
                    "raster:bands": st.one_of(band_info, json_values),
                    "bands": st.one_of(band_info, json_values),
                    "file:checksum": st.one_of(st.text(max_size=12), json_values),
                    "type": st.one_of(st.just("image/tiff; application=geotiff"), json_values),
                },
            )
        )
        asset.update(extra)
        out[key] = asset
    if draw(st.booleans()):
        out[draw(st.text(max_size=5))] = draw(json_values)  # an asset that is not one
    return out


@st.composite
def stac_items(draw: st.DrawFn) -> dict[str, Any]:
    collection = draw(st.sampled_from(COLLECTIONS))
    bbox = draw(
        st.one_of(
            st.just([44.0, 38.0, 46.0, 39.0]),
            st.lists(numbers, min_size=0, max_size=6),
            json_values,
        )
    )
    props: dict[str, Any] = {"datetime": draw(datetimes)}
    props.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "start_datetime": datetimes,
                    "proj:epsg": st.one_of(st.just(32638), json_values),
                    "proj:transform": transforms,
                    "s2:processing_baseline": st.one_of(st.just("05.10"), json_values),
                    "earthsearch:boa_offset_applied": json_values,
                    "eo:cloud_cover": st.one_of(numbers, json_values),
                },
            )
        )
    )
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": draw(st.sampled_from(["1.0.0", "1.1.0", "0.8.0", "9.9"])),
        "stac_extensions": [],
        "id": draw(st.one_of(st.just("fuzz-item"), st.text(min_size=1, max_size=10), json_values)),
        "collection": collection,
        "bbox": bbox,
        "geometry": draw(
            st.one_of(
                st.just(
                    {
                        "type": "Polygon",
                        "coordinates": [[[44, 38], [46, 38], [46, 39], [44, 39], [44, 38]]],
                    }
                ),
                st.none(),
                json_values,
            )
        ),
        "properties": props,
        "assets": draw(assets(collection)),
        "links": [],
    }
    for key in draw(st.lists(st.sampled_from(sorted(item)), max_size=1)):
        if key != "type":
            del item[key]
    return item


def _write_catalog(folder: Path, items: list[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for i, item in enumerate(items):
        (folder / f"item{i}.json").write_text(json.dumps(item), encoding="utf-8")
        links.append({"rel": "item", "href": f"./item{i}.json", "type": "application/json"})
    catalog = {
        "type": "Catalog",
        "id": "fuzz",
        "stac_version": "1.0.0",
        "description": "fuzzed items",
        "links": links,
    }
    path = folder / "catalog.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    return path


def _plan(catalog: Path) -> RunPlan:
    plan = plan_run(CITY, str(catalog), PERIOD)
    if "viirs" in plan.items:
        plan.ntl_grid()  # reads proj:transform (or the file) for the grid origin
    return plan


@FUZZ
@given(items=st.lists(stac_items(), min_size=1, max_size=3), n=st.integers(0, 10**9))
def test_fuzz_stac_items_parse_or_fail_clearly(
    tmp_path: Path, items: list[dict[str, Any]], n: int
) -> None:
    catalog = _write_catalog(tmp_path / f"cat{n}", items)
    ids = tuple(str(i.get("id")) for i in items if isinstance(i.get("id"), str))
    plan = _expect(
        "test_fuzz_stac_items_parse_or_fail_clearly",
        lambda: _plan(catalog),
        (str(catalog), str(catalog.parent), *ids),
    )
    if plan is not None:
        for product, found in plan.items.items():
            assert found, product
            for item in found:
                assert item.datetime is not None


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_stac_item_files_raw(tmp_path: Path, raw: bytes) -> None:
    """A catalog whose one item file holds random bytes, text or JSON (not an item)."""
    folder = tmp_path / "raw"
    catalog = _write_catalog(folder, [{}])
    (folder / "item0.json").write_bytes(raw)
    _expect(
        "test_fuzz_stac_item_files_raw",
        lambda: _plan(catalog),
        (str(catalog), str(folder)),
    )
