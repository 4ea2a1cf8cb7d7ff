"""Tests of :mod:`payesh.synthetic`, the offline demo-city generator.

One small city (2 km, January–July, a Sentinel-2 scene every 10 days) is generated once
per module; the determinism test generates two more one-month cities.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from shapely.geometry import box, shape

from payesh.synthetic import DemoSpec, GeneratedCity, city_grids, generate_city, load_truth

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
EARTH_SEARCH = (
    REALDATA
    / "stac"
    / "pystac-client"
    / "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_longmontCO_2023-10-08.json"
)
SPEC = DemoSpec(
    name="tiny",
    size_km=2,
    start="2025-01",
    end="2025-07",
    s2_revisit_days=10,
    landsat_revisit_days=16,
    seed=3,
)
REFLECTANCE = ("blue", "green", "red", "nir", "swir16", "swir22")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCity:
    calls: list[tuple[str, int, int]] = []
    out = generate_city(
        tmp_path_factory.mktemp("tiny"), SPEC, progress=lambda s, i, n: calls.append((s, i, n))
    )
    stages = {s for s, _, _ in calls}
    assert stages == {"sentinel-2-l2a", "landsat-c2-l2", "viirs-ntl-monthly", "truth"}
    return out


@pytest.fixture(scope="module")
def catalog(city: GeneratedCity) -> pystac.Catalog:
    return pystac.Catalog.from_file(str(city.catalog))


def _items(catalog: pystac.Catalog, cid: str) -> list[pystac.Item]:
    child = catalog.get_child(cid)
    assert isinstance(child, pystac.Collection)
    return sorted(child.get_items(), key=lambda i: i.datetime or dt.datetime.min)


def _read(item: pystac.Item, key: str) -> np.ndarray:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return np.asarray(src.read(1))


def _scaled(item: pystac.Item, key: str) -> np.ndarray:
    """Asset values with the item's own raster:bands scale/offset applied (nodata -> NaN)."""
    rb = item.assets[key].extra_fields["raster:bands"][0]
    dn = _read(item, key)
    out = dn * rb.get("scale", 1.0) + rb.get("offset", 0.0)
    return np.where(dn == rb["nodata"], np.nan, out)


def _city_window(spec: DemoSpec, res: int) -> tuple[slice, slice]:
    g = city_grids(spec)
    r0, c0 = g.city_offset
    n = g.city.shape[0]
    k = res // 10
    return slice(r0 // k, (r0 + n) // k), slice(c0 // k, (c0 + n) // k)


def _clear_scene(items: list[pystac.Item], months: tuple[int, ...]) -> pystac.Item:
    clear = [
        i
        for i in items
        if i.datetime is not None
        and i.datetime.month in months
        and i.properties["eo:cloud_cover"] < 1.0
        and i.properties["s2:snow_ice_percentage"] < 1.0
    ]
    assert clear, "the scenario should have a clear scene in these months"
    return clear[0]


# --------------------------------------------------------------------------- layout
def test_output_layout_and_manifest(city: GeneratedCity) -> None:
    root = city.root
    assert city.manifest == root / "cities" / "tiny.yaml"
    assert city.catalog == root / "catalog" / "catalog.json"
    for p in (
        city.manifest,
        city.catalog,
        city.permits,
        city.consumption,
        city.truth_dir / "README.md",
    ):
        assert p.is_file(), p
    m = yaml.safe_load(city.manifest.read_text())
    assert list(m) == [
        "name",
        "title",
        "bbox",
        "crs",
        "resolution",
        "tile_size",
        "permits",
        "consumption",
    ]
    assert m["name"] == "tiny" and m["crs"] == "EPSG:32638"
    assert (m["resolution"], m["tile_size"]) == (10, 1000)
    assert (root / m["permits"]).is_file() and (root / m["consumption"]).is_file()
    w, s, e, n = m["bbox"]
    assert w < SPEC.center[0] < e and s < SPEC.center[1] < n
    # the bbox projected to UTM and snapped to the nearest tile gives the city square exactly
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", m["crs"], always_xy=True)
    xs, ys = to_utm.transform([w, e, w, e], [s, s, n, n])
    snapped = [round(min(xs), -3), round(min(ys), -3), round(max(xs), -3), round(max(ys), -3)]
    assert snapped == list(city_grids(SPEC).city.bounds)
    assert snapped[2] - snapped[0] == 2000 and snapped[3] - snapped[1] == 2000


def test_grids_are_aligned() -> None:
    g = city_grids(DemoSpec(size_km=6))
    left, bottom, right, top = g.city.bounds
    assert all(v % 1000 == 0 for v in g.city.bounds)
    assert (right - left, top - bottom) == (6000, 6000)
    assert g.s2_10.transform.c % 20 == 0 and g.s2_10.transform.f % 20 == 0
    assert g.landsat.transform.c % 30 == 15 and g.landsat.transform.f % 30 == 15
    sl, sb, sr, st = g.s2_10.bounds
    assert sl <= left - 500 and sr >= right + 500 and sb <= bottom - 500 and st >= top + 500


# --------------------------------------------------------------------------- sentinel-2
def test_s2_items_look_like_earth_search(catalog: pystac.Catalog) -> None:
    items = _items(catalog, "sentinel-2-l2a")
    assert len(items) == len({i.id for i in items}) >= 20
    item = items[0]
    assert item.id.endswith("_0_L2A") and item.id.split("_")[1] == "38SMH"
    raw = json.loads(Path(str(item.get_self_href())).read_text())  # as written, before migration
    p = raw["properties"]
    assert item.properties["proj:code"] == "EPSG:32638"
    assert p["s2:processing_baseline"] == "05.10"
    assert p["earthsearch:boa_offset_applied"] is False
    assert p["proj:epsg"] == 32638 and p["proj:code"] == "EPSG:32638"
    assert p["constellation"] == "sentinel-2" and p["platform"].startswith("sentinel-2")
    assert 0.0 <= p["eo:cloud_cover"] <= 100.0
    assert set(item.assets) == {*REFLECTANCE, "scl"}
    for key in REFLECTANCE:
        a = item.assets[key]
        rb = a.extra_fields["raster:bands"][0]
        assert (rb["scale"], rb["offset"], rb["nodata"], rb["data_type"]) == (
            0.0001,
            -0.1,
            0,
            "uint16",
        )
        assert a.extra_fields["eo:bands"][0]["common_name"] == key
        res = rb["spatial_resolution"]
        assert res == (20 if key.startswith("swir") else 10)
        t = a.extra_fields["proj:transform"]
        assert t[0] == res and t[2] % 20 == 0 and t[5] % 20 == 0
        with rasterio.open(a.get_absolute_href()) as src:
            assert src.dtypes[0] == "uint16" and src.nodata == 0
            assert src.crs.to_epsg() == 32638
            assert list(src.shape) == a.extra_fields["proj:shape"]
            assert list(src.transform)[:6] == t
            assert src.profile["compress"] == "deflate" and src.profile["blockxsize"] == 512
    assert item.assets["scl"].extra_fields["raster:bands"][0]["data_type"] == "uint8"

    assert EARTH_SEARCH.exists(), f"the reference Earth Search item {EARTH_SEARCH} is missing"
    real = next(
        f
        for f in json.loads(EARTH_SEARCH.read_text())["features"]
        if f["collection"] == "sentinel-2-l2a"
    )
    ours = raw
    assert set(ours["assets"]) <= set(real["assets"])
    for key in ours["assets"]:
        ours_rb = ours["assets"][key]["raster:bands"][0]
        real_rb = real["assets"][key]["raster:bands"][0]
        assert {k: ours_rb.get(k) for k in ("scale", "offset", "nodata", "data_type")} == {
            k: real_rb.get(k) for k in ("scale", "offset", "nodata", "data_type")
        }
        assert ours["assets"][key]["type"] == real["assets"][key]["type"]
    missing = set(real["properties"]) - set(ours["properties"])
    assert missing <= {
        "s2:degraded_msi_data_percentage",
        "s2:datatake_id",
        "s2:datatake_type",
        "s2:datastrip_id",
        "s2:granule_id",
        "earthsearch:s3_path",
        "earthsearch:payload_id",
    }
    assert set(real["stac_extensions"]) <= set(ours["stac_extensions"])


def test_odc_stac_loads_the_catalog(catalog: pystac.Catalog) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    items = _items(catalog, "sentinel-2-l2a")[:4]
    with warnings.catch_warnings():
        # odc-geo / shapely deprecations we do not control
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        ds = odc_stac.load(
            items, bands=["red", "nir", "swir16", "scl"], crs="EPSG:32638", resolution=10
        )
        ls = odc_stac.load(
            _items(catalog, "landsat-c2-l2")[:2],
            bands=["lwir11", "qa_pixel"],
            crs="EPSG:32638",
            resolution=30,
        )
        vi = odc_stac.load(_items(catalog, "viirs-ntl-monthly"), bands=["radiance", "cf_cvg"])
    g = city_grids(SPEC)
    assert ds.sizes["time"] == 4 and (ds.sizes["y"], ds.sizes["x"]) == g.s2_10.shape
    assert ds.red.dtype == np.uint16 and ds.scl.dtype == np.uint8
    assert int(ds.red.max()) > 1000
    assert ls.sizes["time"] == 2 and ls.lwir11.dtype == np.uint16
    assert vi.sizes["time"] == 7 and vi.radiance.dtype == np.float32


def test_reflectance_is_plausible_per_land_cover(
    city: GeneratedCity, catalog: pystac.Catalog
) -> None:
    truth = load_truth(city.truth_dir)
    with rasterio.open(truth.landcover["2025-01"]) as src:
        cover = src.read(1)
    item = _clear_scene(_items(catalog, "sentinel-2-l2a"), (6, 7))
    win = _city_window(SPEC, 10)
    b = {k: _scaled(item, k)[win] for k in ("blue", "red", "nir")}
    assert np.nanmin(b["red"]) > -0.05 and np.nanmax(b["nir"]) < 1.0
    orchard, water, bare, urban = (cover == 3), (cover == 4), (cover == 1), (cover == 5)
    assert orchard.any() and water.any() and bare.any() and urban.any()
    # summer canopy: NIR well above red; water: dark NIR; arid soil: bright red
    assert np.median(b["nir"][orchard]) > 2.0 * np.median(b["red"][orchard])
    assert np.median(b["nir"][water]) < 0.06
    assert np.median(b["red"][bare]) > 0.15
    ndvi = (b["nir"] - b["red"]) / (b["nir"] + b["red"])
    assert np.median(ndvi[orchard]) > 0.5 > np.median(ndvi[bare])
    sw = _scaled(item, "swir16")[_city_window(SPEC, 20)]
    assert 0.3 < np.median(sw[bare[::2, ::2]]) < 0.45 and np.median(sw[water[::2, ::2]]) < 0.05


def test_concrete_and_arid_soil_are_the_hard_case() -> None:
    from payesh.synthetic.spectra import MATERIALS, S2_BANDS

    concrete, soil = np.array(MATERIALS["concrete"]), np.array(MATERIALS["arid_soil"])
    i16, i22 = S2_BANDS.index("swir16"), S2_BANDS.index("swir22")
    assert abs(concrete[i16] - soil[i16]) < 0.06 and abs(concrete[i22] - soil[i22]) < 0.06
    ndbi = lambda r: (r[i16] - r[3]) / (r[i16] + r[3])  # noqa: E731
    assert abs(ndbi(concrete) - ndbi(soil)) < 0.1


def test_scl_marks_clouds(catalog: pystac.Catalog) -> None:
    items = _items(catalog, "sentinel-2-l2a")
    cloudy = [i for i in items if 15.0 < i.properties["eo:cloud_cover"] < 90.0]
    assert cloudy, "the scenario should have partly cloudy scenes"
    item = cloudy[0]
    scl = _read(item, "scl")
    blue = _scaled(item, "blue")[::2, ::2]
    assert np.isin(scl, (8, 9)).any()
    assert np.nanmean(blue[scl == 9]) > 0.35 > np.nanmean(blue[np.isin(scl, (4, 5))])
    share = 100.0 * np.isin(scl, (8, 9, 10)).mean()
    assert share == pytest.approx(item.properties["eo:cloud_cover"], abs=0.01)
    assert set(np.unique(scl)) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
    clear = _clear_scene(items, (5, 6, 7))
    clear_scl = _read(clear, "scl")
    assert not np.isin(clear_scl, (8, 9, 10)).any()
    assert {4, 5, 6} <= set(np.unique(clear_scl))
    # the whole period has a spread of cloudiness
    covers = [i.properties["eo:cloud_cover"] for i in items]
    assert min(covers) == 0.0 and max(covers) > 50.0


# --------------------------------------------------------------------------- landsat
def test_landsat_surface_temperature(catalog: pystac.Catalog) -> None:
    items = _items(catalog, "landsat-c2-l2")
    assert all(
        i.id.startswith(("LC08_L2SP_", "LC09_L2SP_")) and i.id.endswith("_02_T1") for i in items
    )
    for item in items:
        rb = item.assets["lwir11"].extra_fields["raster:bands"][0]
        assert (rb["scale"], rb["offset"], rb["unit"]) == (0.00341802, 149.0, "kelvin")
        qa = _read(item, "qa_pixel")
        assert set(np.unique(qa)) <= {21824, 21952, 22280, 21762, 23888, 54596}
        celsius = _scaled(item, "lwir11") - 273.15
        clear = qa == 21824
        if clear.mean() > 0.5:
            month = item.datetime.month if item.datetime else 0
            lo, hi = (
                (-10.0, 20.0) if month in (1, 2) else (15.0, 55.0) if month in (6, 7) else (-10, 55)
            )
            assert lo < np.median(celsius[clear]) < hi, (item.id, np.median(celsius[clear]))
        cloud = qa == 22280
        if cloud.any() and clear.any():
            assert np.median(celsius[cloud]) < np.median(celsius[clear]) - 5.0


def test_unregistered_load_heats_and_lights_up(
    city: GeneratedCity, catalog: pystac.Catalog
) -> None:
    truth = load_truth(city.truth_dir)
    assert truth.load is not None
    start = truth.load.start
    c = truth.load.geometry.centroid
    vi = _items(catalog, "viirs-ntl-monthly")
    before = [i for i in vi if i.datetime and i.datetime.date() < start]
    after = [i for i in vi if i.datetime and i.datetime.date() >= start]
    assert before and after

    def at_load(item: pystac.Item) -> float:
        with rasterio.open(item.assets["radiance"].get_absolute_href()) as src:
            r, col = src.index(c.x, c.y)
            return float(src.read(1)[r, col])

    assert min(at_load(i) for i in after) > max(at_load(i) for i in before) + 5.0


# --------------------------------------------------------------------------- viirs
def test_viirs_grid_and_missing_months(catalog: pystac.Catalog) -> None:
    items = _items(catalog, "viirs-ntl-monthly")
    assert [i.id for i in items] == [f"VNL_npp_2025{m:02d}_tiny" for m in range(1, 8)]
    missing = 0
    for item in items:
        assert item.properties["proj:code"] == "EPSG:4326" and set(item.assets) == {
            "radiance",
            "cf_cvg",
        }
        with rasterio.open(item.assets["radiance"].get_absolute_href()) as src:
            t = src.transform
            assert src.crs.to_epsg() == 4326 and src.dtypes[0] == "float32"
            assert t.a == pytest.approx(1 / 240, abs=1e-15) and t.e == pytest.approx(
                -1 / 240, abs=1e-15
            )
            assert (
                abs(t.c * 240 - round(t.c * 240)) < 1e-6
                and abs(t.f * 240 - round(t.f * 240)) < 1e-6
            )
            rad = src.read(1)
        cvg = _read(item, "cf_cvg")
        assert cvg.dtype == np.uint16 and cvg.shape == rad.shape
        if (cvg == 0).any():
            missing += 1
            assert item.datetime is not None and item.datetime.month in (12, 1, 2)
            assert np.all(rad[cvg == 0] == 0.0)
        else:
            assert rad.max() > 10.0 and np.percentile(rad, 5) < 1.5
    assert missing >= 1


# --------------------------------------------------------------------------- side files and truth
def test_permits_and_consumption(city: GeneratedCity) -> None:
    permits = json.loads(city.permits.read_text())
    assert permits["type"] == "FeatureCollection"
    ids = [f["properties"]["permit_id"] for f in permits["features"]]
    assert len(ids) == len(set(ids)) and all(i.startswith("P-2025-") for i in ids)
    for f in permits["features"]:
        dt.date.fromisoformat(f["properties"]["issued"])
        assert shape(f["geometry"]).is_valid
    truth = load_truth(city.truth_dir)
    parcels = {f["properties"]["permit_id"]: shape(f["geometry"]) for f in permits["features"]}
    used = {s.permit_id for s in truth.sites if s.permit_id}
    assert len(set(parcels) - used) >= 2, "a few permits are never built"
    for s in truth.sites:
        if s.permit_id:
            parcel = parcels[s.permit_id]
            assert parcel.contains(s.geometry) and parcel.area > s.geometry.area
    with city.consumption.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["month"] for r in rows] == [f"2025-{m:02d}" for m in range(1, 8)]
    assert all(float(r["mwh"]) > 0 for r in rows)


def test_truth_round_trips(city: GeneratedCity) -> None:
    truth = load_truth(city.truth_dir)
    sites = truth.sites
    assert 8 <= len(sites) <= 15
    assert all(s.area_m2 >= 4000 for s in sites)
    assert all(
        s.built.day == 1 and dt.date(2025, 2, 1) <= s.built <= dt.date(2025, 7, 1) for s in sites
    )
    statuses = {s.status for s in sites}
    assert statuses == {"permitted", "unauthorized"}
    late = [s for s in sites if s.permit_id and s.status == "unauthorized"]
    assert len(late) == 1 and late[0].permit_issued and late[0].permit_issued > late[0].built_date
    for s in sites:
        if s.status == "permitted":
            assert s.permit_issued is not None and s.permit_issued < s.built_date
    assert sum(1 for s in sites if s.permit_id is None) >= 2
    kinds = {t.kind: t for t in truth.traps}
    assert set(kinds) == {"cleared_field", "transient_bright"}
    assert kinds["transient_bright"].item_id is not None
    site_union = [s.geometry for s in sites]
    for t in truth.traps:
        assert not any(t.geometry.intersects(g) for g in site_union)
    assert truth.load is not None and truth.load.extra_mwh_per_month > 0
    first, last = truth.read_builtup("2025-01"), truth.read_builtup("2025-07")
    assert first.shape == last.shape == city_grids(SPEC).city.shape
    assert first.dtype == np.uint8 and set(np.unique(last)) <= {0, 1}
    new_px = int(last.sum() - first.sum())
    assert new_px * 100 == pytest.approx(sum(s.area_m2 for s in sites))
    with rasterio.open(truth.builtup["2025-07"]) as src:
        assert src.crs.to_epsg() == 32638 and tuple(src.bounds) == city_grids(SPEC).city.bounds
    assert truth.scenario["spec"]["seed"] == 3


def test_transient_bright_object_in_one_scene(city: GeneratedCity, catalog: pystac.Catalog) -> None:
    truth = load_truth(city.truth_dir)
    trap = next(t for t in truth.traps if t.kind == "transient_bright")
    items = {i.id: i for i in _items(catalog, "sentinel-2-l2a")}
    item = items[str(trap.item_id)]
    c = trap.geometry.centroid
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32638", always_xy=True).transform(c.x, c.y)

    def blue_at(it: pystac.Item) -> float:
        with rasterio.open(it.assets["blue"].get_absolute_href()) as src:
            r, col = src.index(x, y)
            return float(src.read(1)[r, col]) * 1e-4 - 0.1

    assert blue_at(item) > 0.35
    others = [
        i for i in items.values() if i.id != item.id and i.properties["eo:cloud_cover"] == 0.0
    ]
    others = [i for i in others if i.properties["s2:snow_ice_percentage"] == 0.0]
    assert others and all(blue_at(i) < 0.25 for i in others)


# --------------------------------------------------------------------------- determinism
def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def one_month(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    spec = DemoSpec(name="det", size_km=1, start="2025-06", end="2025-06", seed=7)
    a = generate_city(tmp_path_factory.mktemp("a"), spec)
    b = generate_city(tmp_path_factory.mktemp("b"), spec)
    c = generate_city(
        tmp_path_factory.mktemp("c"),
        DemoSpec(name="det", size_km=1, start="2025-06", end="2025-06", seed=8),
    )
    yield {"a": a, "b": b, "c": c}


def test_same_seed_same_bytes(one_month: dict[str, Any]) -> None:
    da, db = _digest(one_month["a"].root), _digest(one_month["b"].root)
    assert len(da) > 20 and da == db


def test_different_seed_differs(one_month: dict[str, Any]) -> None:
    a, c = one_month["a"], one_month["c"]
    ia = sorted((a.catalog.parent / "sentinel-2-l2a").rglob("B04.tif"))[0]
    ic = sorted((c.catalog.parent / "sentinel-2-l2a").rglob("B04.tif"))[0]
    with rasterio.open(ia) as sa, rasterio.open(ic) as sc:
        assert sa.shape == sc.shape
        assert not np.array_equal(sa.read(1), sc.read(1))
    assert (
        a.truth_dir.joinpath("sites.geojson").read_text()
        != c.truth_dir.joinpath("sites.geojson").read_text()
    )


def test_bad_spec_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name"):
        generate_city(tmp_path, DemoSpec(name="Bad Name"))
    with pytest.raises(ValueError, match="end"):
        generate_city(tmp_path, DemoSpec(start="2025-05", end="2025-01"))


def test_sites_are_far_from_each_other_and_inside_city(city: GeneratedCity) -> None:
    truth = load_truth(city.truth_dir)
    m = yaml.safe_load(city.manifest.read_text())
    city_box = box(*m["bbox"])
    geoms = [s.geometry for s in truth.sites]
    assert all(city_box.contains(g) for g in geoms)
    for i, g in enumerate(geoms):
        assert not any(g.intersects(h) for h in geoms[i + 1 :])
