"""Bad input corpus (#11, part 4): every input payesh parses, broken on purpose.

Each case of :data:`CASES` is one broken input, of one of two kinds:

``error``
    Run through the CLI in-process (``payesh.cli.main``): exit code 2, ONE
    ``payesh: error:`` line naming the culprit (the file, and the key, feature, column,
    item or value), no ``Traceback``, and the store, which holds a committed version,
    untouched (not one file added, changed or removed).
``skip``
    Documented degraded-but-usable data (SPEC §8): the run completes, the bad item or
    month is counted (``valid_fraction``, the ``skipped_items`` provenance, a typed
    warning naming it) and nothing is silently zero — values are NaN where no valid
    data was behind them.

The files are in ``tests/data/bad/`` (manifests, permits, consumption, catalogs). The
imagery cases are made by :func:`bad_catalog` from ``tiny_city``'s real COGs (truncated,
corrupt, bit-flipped, wrong CRS, missing assets, all-cloud, ±1e30 radiance) and run once
through the library pipeline (plan → months → indicators → commit), shared by every case.
The module records its figures once (``figures.record("bad_input", ...)``).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import shapely
import yaml
from figures import record
from servers import flip_one_tile_byte, multihash_sha256

from payesh import pipeline
from payesh.city import load_city
from payesh.cli import main
from payesh.errors import BadItemWarning, CloudyMonthWarning, MissingDataWarning, PayeshWarning
from payesh.grid import city_geobox
from payesh.monthly import s2_month, viirs_month
from payesh.period import Period
from payesh.plan import plan_run
from payesh.records import PermitsRepairedWarning, read_permits
from payesh.store import open_indicators

pytestmark = pytest.mark.integration

BAD = Path(__file__).resolve().parents[2] / "data" / "bad"
START, END = "2025-02", "2025-04"
FEB, MAR, APR = (pd.Timestamp(m) for m in ("2025-02-01", "2025-03-01", "2025-04-01"))
COLLECTIONS = ["sentinel-2-l2a", "viirs-ntl-monthly"]  # Landsat adds time, not cases


@dataclass(frozen=True)
class Case:
    """One broken input: ``kind`` ``error`` (CLI) or ``skip`` (counted, not zero)."""

    id: str
    kind: str
    needles: tuple[str, ...] = ()
    manifest: str | None = None  # a corpus manifest, run as is
    permits: str | None = None  # a corpus permits file, behind a valid manifest
    consumption: str | None = None  # a corpus consumption file, behind a valid manifest
    catalog: str | None = None  # a corpus catalog, with the tiny city's manifest
    args: tuple[str, ...] = ()  # other CLI arguments (the tiny city and its catalog)
    check: str | None = None  # skip cases: the name of the check in SKIP_CHECKS


def _m(name: str, *needles: str) -> Case:
    return Case(f"manifest-{name}", "error", needles, manifest=f"manifests/{name}")


def _p(name: str, *needles: str) -> Case:
    return Case(f"permits-{name}", "error", needles, permits=f"permits/{name}")


def _c(name: str, *needles: str) -> Case:
    return Case(f"consumption-{name}", "error", needles, consumption=f"consumption/{name}")


def _cat(name: str, *needles: str) -> Case:
    return Case(f"catalog-{name}", "error", needles, catalog=f"catalogs/{name}")


CASES: list[Case] = [
    # --- city manifests: each key wrong in turn, and the file itself ---------------------
    _m("missing-name.yaml", "'name'", "required key is missing"),
    _m("missing-title.yaml", "'title'", "required key is missing"),
    _m("missing-bbox.yaml", "'bbox'", "required key is missing"),
    _m("missing-crs.yaml", "'crs'", "required key is missing"),
    _m("name-wrong-type.yaml", "'name'", "['bad', 'worse']"),
    _m("name-number.yaml", "'name'", "42"),
    _m("name-bad-chars.yaml", "'name'", "'Bad City'"),
    _m("title-wrong-type.yaml", "'title'", "valid string"),
    _m("bbox-string.yaml", "'bbox'", "'44.95,38.54,44.97,38.56'"),
    _m("bbox-three-numbers.yaml", "'bbox"),
    _m("bbox-inverted.yaml", "'bbox'", "west < east"),
    _m("bbox-lat-lon-swapped.yaml", "'bbox'", "south < north"),
    _m("bbox-out-of-range.yaml", "'bbox'", "200.0"),
    _m("bbox-too-large.yaml", "'bbox'", "more than 2 degrees"),
    _m("bbox-nan.yaml", "'bbox'", "nan"),
    _m("bbox-inf.yaml", "'bbox'", "inf"),
    _m("bbox-huge.yaml", "'bbox'", "1e+30"),
    _m("crs-geographic.yaml", "'crs'", "'EPSG:4326' is not projected"),
    _m("crs-unknown.yaml", "'crs'", "'EPSG:999999'"),
    _m("crs-number.yaml", "'crs'", "32638"),
    _m("crs-wrong-zone.yaml", "'crs'", "'EPSG:32610'", "-126..-120"),
    _m("resolution-negative.yaml", "'resolution'", "-10"),
    _m("resolution-zero.yaml", "'resolution'", "greater than 0"),
    _m("resolution-string.yaml", "'resolution'", "'ten metres'"),
    _m("resolution-bool.yaml", "'resolution'", "True"),
    _m("resolution-nan.yaml", "'resolution'", "nan"),
    _m("resolution-inf.yaml", "'resolution'", "inf"),
    _m("resolution-huge.yaml", "'resolution'", "1e+30"),
    _m("tile-size-not-multiple.yaml", "'tile_size'", "1005"),
    _m("tile-size-negative.yaml", "'tile_size'", "-1000"),
    _m("tile-size-huge.yaml", "'tile_size'", "1e+30"),
    _m("tile-size-inf.yaml", "'tile_size'", "inf"),
    _m("unknown-key.yaml", "'tilesize'", "unknown key"),
    _m("permits-wrong-type.yaml", "'permits'", "expected a path"),
    _m("permits-missing-file.yaml", "'permits'", "nowhere.geojson", "does not exist"),
    _m("consumption-missing-file.yaml", "'consumption'", "nowhere.csv", "does not exist"),
    _m("duplicate-key.yaml", "'crs' is given twice", "line 5"),
    _m("list-not-mapping.yaml", "YAML mapping", "list"),
    _m("scalar-not-mapping.yaml", "YAML mapping", "str"),
    _m("empty.yaml", "empty"),
    _m("comment-only.yaml", "empty"),
    _m("yaml-syntax.yaml", "not valid YAML", "line 4"),
    _m("json-syntax.json", "not valid YAML", "line 3"),
    _m("non-utf8.yaml", "not UTF-8", "byte 19"),
    _m("utf16.yaml", "not UTF-8", "byte 0"),
    # --- building permits --------------------------------------------------------------
    _p("null-geometry.geojson", "feature 1 (permit_id 'P-2') has no geometry"),
    _p("empty-polygon.geojson", "feature 1 (permit_id 'P-2') has no geometry"),
    _p("mixed-point.geojson", "feature 1 (permit_id 'P-2')", "(Point)"),
    _p("mixed-line.geojson", "feature 1 (permit_id 'P-2')", "(LineString)"),
    _p("mixed-collection.geojson", "feature 1 (permit_id 'P-2')", "(GeometryCollection)"),
    _p("zero-area.geojson", "feature 1 (permit_id 'P-2')", "not a polygon with area"),
    _p("coordinates-out-of-range.geojson", "feature 1 (permit_id 'P-2')", "out of range"),
    _p("unknown-column.geojson", "unknown permit column(s) ['owner']"),
    _p("misspelt-issued.geojson", "'issued' column", "issue_date"),
    _p("issued-not-a-date.geojson", "feature 1 (permit_id 'P-2')", "'last spring'"),
    _p("missing-permit-id.geojson", "feature 1 has no permit_id"),
    _p("no-features.geojson", "no features"),
    _p("truncated.geojson", "cannot read permits"),
    _p("empty.geojson", "empty"),
    _p("non-utf8.geojson", "not UTF-8", "byte 2"),
    _p("not-geodata.csv", "no geometry column"),
    Case("permits-no-crs", "error", ("no-crs.parquet", "permits have no CRS")),
    # --- reported consumption ----------------------------------------------------------
    _c("mwh-negative.csv", "2025-02", "-1e+30"),
    _c("mwh-huge.csv", "2025-02", "1e+30"),
    _c("mwh-inf.csv", "2025-02", "inf"),
    _c("mwh-not-a-number.csv", "2025-02", "'n/a'"),
    _c("wrong-column.csv", "'mwh' column", "kwh"),
    _c("month-twice.csv", "month 2025-01 is given twice"),
    _c("empty.csv", "cannot read consumption"),
    _c("non-utf8.csv", "not UTF-8", "byte 2"),
    # --- STAC catalogs and searches ----------------------------------------------------
    _cat("syntax-error.json", "cannot read the STAC catalog"),
    _cat("empty.json", "cannot read the STAC catalog", "empty"),
    _cat("non-utf8.json", "cannot read the STAC catalog", "utf-8"),
    _cat("not-stac.json", "cannot read the STAC catalog", "FeatureCollection"),
    _cat("json-list.json", "cannot read the STAC catalog"),
    _cat("dangling-child.json", "cannot read the STAC catalog", "nowhere/collection.json"),
    _cat("broken-child/catalog.json", "cannot read the STAC catalog", "sentinel-2-l2a"),
    _cat("no-collections.json", "no sentinel-2-l2a", "items over demo", "no collections"),
    _cat("nowhere/catalog.json", "does not exist"),
    Case(
        "search-empty",
        "error",
        ("no sentinel-2-l2a", "items over demo", "2031-01..2031-02"),
        args=("--start", "2031-01", "--end", "2031-02"),
    ),
    Case(
        "period-inverted",
        "error",
        ("--end 2025-02 is before --start 2025-08",),
        args=("--start", "2025-08", "--end", "2025-02"),
    ),
    Case("period-garbage", "error", ("'99999-01'", "YYYY-MM"), args=("--end", "99999-01")),
    # --- imagery: documented skips, counted and never zero -----------------------------
    Case("s2-truncated-cog", "skip", check="truncated"),
    Case("s2-corrupt-cog", "skip", check="corrupt"),
    Case("s2-empty-cog", "skip", check="empty_file"),
    Case("s2-checksum-mismatch", "skip", check="checksum"),
    Case("s2-wrong-crs", "skip", check="wrong_crs"),
    Case("s2-missing-asset", "skip", check="missing_asset"),
    Case("s2-no-crs", "skip", check="no_crs"),
    Case("s2-every-item-bad", "skip", check="all_bad_month"),
    Case("s2-some-items-bad", "skip", check="partly_bad_month"),
    Case("s2-all-cloud-month", "skip", check="all_cloud"),
    Case("ntl-radiance-1e30", "skip", check="huge_radiance"),
    Case("ntl-every-item-bad", "skip", check="ntl_all_bad"),
    Case("s2-dn-saturated", "skip", check="saturated"),
    Case("permits-bowtie-repaired", "skip", check="bowtie"),
]


# --- the broken imagery ------------------------------------------------------------------


@dataclass
class BadRun:
    """The shared run over :func:`bad_catalog`: what it stored and what it warned."""

    store: Path
    catalog: Path  # the broken copy; the original is tiny_city's
    original: Path
    city: str
    warned: list[tuple[type[Warning], str]]
    provenance: dict[str, Any]
    tiles: Any
    pixels: Any
    ntl: Any
    bad: dict[str, str] = field(default_factory=dict)  # what was broken -> item id

    def messages(self, category: type[Warning]) -> list[str]:
        return [m for c, m in self.warned if issubclass(c, category)]

    def skipped(self, product: str) -> list[str]:
        return list(json.loads(self.provenance["skipped_items"]).get(product, []))


def _replace(path: Path, data: bytes) -> None:
    path.unlink()  # the catalog copy hard-links the originals: never write through them
    path.write_bytes(data)


def _rewrite_raster(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(change(data))


def _edit_item(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    item = json.loads(path.read_text())
    change(item)
    _replace(path, json.dumps(item).encode())


def bad_catalog(tiny: Any, root: Path) -> tuple[Path, dict[str, str]]:
    """A copy of ``tiny``'s catalog with broken items; returns it and {breakage: item id}.

    February: every Sentinel-2 item bad, each differently. March: some bad (missing
    asset, no CRS, a truncated SCL), the others good; night lights with -1e30, 1e30 and
    inf radiance. April: every Sentinel-2 scene all cloud; the night-light file truncated.
    """
    src = tiny.catalog.parent
    shutil.copytree(src, root, copy_function=os.link)
    s2 = root / "sentinel-2-l2a"

    def items(month: str) -> list[Path]:
        return sorted(s2.glob(f"*_2025{month}??_*/*.json"), key=lambda p: p.stem.split("_")[2])

    feb, mar, apr = items("02"), items("03"), items("04")
    assert len(feb) >= 6 and len(mar) >= 4 and apr
    bad: dict[str, str] = {}

    def tif(item: Path, name: str) -> Path:
        return item.parent / name

    # February: truncated, corrupt, empty, checksum mismatch, wrong CRS, truncated
    data = tif(feb[0], "B04.tif").read_bytes()
    _replace(tif(feb[0], "B04.tif"), data[: len(data) * 2 // 3])
    bad["truncated"] = feb[0].stem
    _replace(tif(feb[1], "SCL.tif"), b"II*\x00" + bytes(range(256)) * 8)
    bad["corrupt"] = feb[1].stem
    _replace(tif(feb[2], "B11.tif"), b"")
    bad["empty_file"] = feb[2].stem
    flipped = tif(feb[3], "B02.tif")
    checksum = multihash_sha256(flipped)
    flip_one_tile_byte(flipped, root / "flipped.tif")
    flipped.unlink()
    (root / "flipped.tif").rename(flipped)

    def declare_checksum(item: dict[str, Any]) -> None:
        for asset in item["assets"].values():
            if asset["href"].endswith("B02.tif"):
                asset["file:checksum"] = checksum

    _edit_item(feb[3], declare_checksum)
    bad["checksum"] = feb[3].stem

    def wrong_crs(item: dict[str, Any]) -> None:
        for where in (item["properties"], *item["assets"].values()):
            if "proj:epsg" in where or "proj:code" in where:
                where["proj:epsg"], where["proj:code"] = 32639, "EPSG:32639"

    _edit_item(feb[4], wrong_crs)
    bad["wrong_crs"] = feb[4].stem
    for rest in feb[5:]:
        data = tif(rest, "B08.tif").read_bytes()
        _replace(tif(rest, "B08.tif"), data[: len(data) // 3])

    # March: two items bad in their metadata, one in its file; the others good
    def no_nir(item: dict[str, Any]) -> None:
        key = next(k for k, a in item["assets"].items() if a["href"].endswith("B08.tif"))
        del item["assets"][key]

    def no_crs(item: dict[str, Any]) -> None:
        for where in (item["properties"], *item["assets"].values()):
            where.pop("proj:epsg", None)
            where.pop("proj:code", None)

    _edit_item(mar[0], no_nir)
    bad["missing_asset"] = mar[0].stem
    _edit_item(mar[1], no_crs)
    bad["no_crs"] = mar[1].stem
    data = tif(mar[2], "SCL.tif").read_bytes()
    _replace(tif(mar[2], "SCL.tif"), data[: len(data) // 2])
    bad["truncated_mar"] = mar[2].stem

    def saturate(a: np.ndarray) -> np.ndarray:  # DN above the valid range, in a clear scene
        a = a.copy()
        a[:, : a.shape[1] // 2, : a.shape[2] // 2] = 65535
        return a

    for band in ("B02", "B03", "B04", "B08", "B11", "B12"):  # a bright roof saturates all
        _rewrite_raster(tif(mar[3], f"{band}.tif"), saturate)
    bad["saturated"] = mar[3].stem

    # April: every scene is cloud (SCL 9, "cloud high probability") everywhere
    for item in apr:
        _rewrite_raster(tif(item, "SCL.tif"), lambda a: np.full_like(a, 9))

    # night lights: impossible radiance in March, an unreadable file in April
    ntl = root / "viirs-ntl-monthly"

    def impossible(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        r, c = np.indices(a.shape[1:])
        a[0][(r + c) % 5 == 0] = -1e30
        a[0][(r + c) % 5 == 2] = 1e30
        a[0][(r + c) % 5 == 4] = np.inf
        return a

    _rewrite_raster(ntl / "VNL_npp_202503_demo" / "radiance.tif", impossible)
    rad = ntl / "VNL_npp_202504_demo" / "radiance.tif"
    data = rad.read_bytes()
    _replace(rad, data[: len(data) // 2])
    bad["ntl_apr"] = "VNL_npp_202504_demo"
    return root / "catalog.json", bad


@pytest.fixture(scope="module")
def bad_run(tiny_city: Any, tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    """The library pipeline once over :func:`bad_catalog`, committed to a fresh store."""
    root = tmp_path_factory.mktemp("bad-input")
    catalog, bad = bad_catalog(tiny_city, root / "catalog")
    store = root / "store"
    city = load_city(tiny_city.manifest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PayeshWarning)
        plan = plan_run(city, str(catalog), Period.parse(START, END), collections=COLLECTIONS)
        gbox = city_geobox(city)
        monthly: dict[str, list[Any]] = {"s2": [], "viirs": []}
        for month in plan.months:
            comp = s2_month(plan.month_items("s2", month), gbox, month).compute()
            monthly["s2"].append(pipeline.s2_month_layers(comp))
            monthly["viirs"].append(
                viirs_month(plan.month_items("viirs", month), plan.ntl_grid(), month).compute()
            )
        result = pipeline.compute_indicators(plan, pipeline.MonthlyData.from_lists(monthly))
        pipeline.commit(plan, result, store=str(store))
    warned = [(w.category, str(w.message)) for w in caught if issubclass(w.category, Warning)]
    unexpected = [w for w in caught if not issubclass(w.category, PayeshWarning)]
    assert not [w for w in unexpected if "payesh" in str(w.filename)], unexpected
    return BadRun(
        store=store,
        catalog=catalog,
        original=Path(tiny_city.catalog),
        city=city.name,
        warned=warned,
        provenance=dict(result.provenance),
        tiles=open_indicators(city.name, store=str(store)).compute(),
        pixels=open_indicators(city.name, store=str(store), group="pixels").compute(),
        ntl=open_indicators(city.name, store=str(store), group="ntl").compute(),
        bad=bad,
    )


# --- checks of the skip cases: each returns the number of silent zeros it found ----------


def _missing(da: Any, what: str) -> int:
    """0 if ``da`` is all NaN (missing); otherwise the count of values, zeros among them."""
    values = np.asarray(da.values, dtype="float64")
    assert np.isnan(values).all(), f"{what}: {values}"
    return 0


def _zeros_where_missing(da: Any) -> int:
    return int((np.asarray(da.values, dtype="float64") == 0).sum())


def _skipped_item(run: BadRun, key: str, *words: str) -> int:
    item = run.bad[key]
    msgs = [m for m in run.messages(BadItemWarning) if f"item {item!r}" in m]
    assert msgs, f"no BadItemWarning names {item}: {run.messages(BadItemWarning)}"
    assert all(any(w in m for m in msgs) for w in words), (words, msgs)
    assert item in run.skipped("s2"), run.provenance["skipped_items"]
    return 0


def _month_missing(run: BadRun, month: pd.Timestamp) -> int:
    vf = run.tiles["valid_fraction"].sel(time=month)
    assert (vf == 0).all(), vf.values
    zeros = 0
    for name in ("builtup_prob",):
        zeros += _zeros_where_missing(run.pixels[name].sel(time=month))
        _missing(run.pixels[name].sel(time=month), name)
    for name in ("builtup_fraction",):
        zeros += _zeros_where_missing(run.tiles[name].sel(time=month))
        _missing(run.tiles[name].sel(time=month), name)
    return zeros


def _check_all_bad_month(run: BadRun) -> int:
    feb = [m for m in run.messages(MissingDataWarning) if "Sentinel-2 2025-02" in m]
    assert feb and "every one of its" in feb[0] and "stored as missing" in feb[0], feb
    feb_ids = {v for k, v in run.bad.items() if k in ("truncated", "corrupt", "checksum")}
    assert feb_ids <= set(run.skipped("s2"))
    n_feb = int(feb[0].split("every one of its ")[1].split(" ")[0])
    assert len([i for i in run.skipped("s2") if "_202502" in i]) == n_feb
    return _month_missing(run, FEB)


def _check_partly_bad_month(run: BadRun) -> int:
    bad = {run.bad[k] for k in ("missing_asset", "no_crs", "truncated_mar")}
    assert bad <= set(run.skipped("s2"))
    read = [i for i in json.loads(run.provenance["source_items"])["s2"] if "_202503" in i]
    assert read and not bad & set(read), read  # the month's good items were read
    vf = run.tiles["valid_fraction"].sel(time=MAR).values
    prob = run.pixels["builtup_prob"].sel(time=MAR).values
    assert (vf > 0).any(), vf
    # valid_fraction counts exactly the pixels with a value: NaN elsewhere, never 0
    assert float(np.isfinite(prob).mean()) == pytest.approx(float(vf.mean()), abs=1e-6)
    return 0


def _check_all_cloud(run: BadRun) -> int:
    cloudy = run.messages(CloudyMonthWarning)
    assert any("Sentinel-2 2025-04: no clear observation" in m for m in cloudy), cloudy
    return _month_missing(run, APR)


def _check_huge_radiance(run: BadRun) -> int:
    msgs = [m for m in run.messages(MissingDataWarning) if "night lights 2025-03" in m]
    assert msgs and "VNL_npp_202503_demo" in msgs[0], run.warned
    assert "from -1e+30 to inf" in msgs[0], msgs[0]
    n_bad = int(msgs[0].split(": ")[1].split(" pixel(s)")[0])
    rad = run.ntl["radiance"].sel(time=MAR).values
    assert 0 < n_bad <= int(np.isnan(rad).sum()) < rad.size
    finite = rad[np.isfinite(rad)]
    assert finite.size and float(np.abs(finite).max()) < 1e5
    ntl_sum = run.tiles["ntl_sum"].sel(time=MAR).values
    assert np.all(np.abs(ntl_sum[np.isfinite(ntl_sum)]) < 1e9), ntl_sum
    assert (run.tiles["ntl_valid_fraction"].sel(time=MAR) < 1).any()
    return 0


def _check_ntl_all_bad(run: BadRun) -> int:
    msgs = [m for m in run.messages(BadItemWarning) if "VNL_npp_202504_demo" in m]
    assert msgs and "radiance" in msgs[0], run.messages(BadItemWarning)
    assert "VNL_npp_202504_demo" in run.skipped("viirs")
    assert (run.tiles["ntl_valid_fraction"].sel(time=APR) == 0).all()
    zeros = _zeros_where_missing(run.tiles["ntl_sum"].sel(time=APR))
    _missing(run.tiles["ntl_sum"].sel(time=APR), "ntl_sum")
    zeros += _zeros_where_missing(run.ntl["radiance"].sel(time=APR))
    _missing(run.ntl["radiance"].sel(time=APR), "radiance")
    return zeros


def _check_saturated(run: BadRun) -> int:
    item_id = run.bad["saturated"]
    gbox = city_geobox(load_city(run.original.parents[1] / "cities" / "demo.yaml"))
    red = {}
    for which, catalog in (("broken", run.catalog), ("original", run.original)):
        path = catalog.parent / "sentinel-2-l2a" / item_id / f"{item_id}.json"
        red[which] = s2_month([pystac.Item.from_file(path)], gbox, MAR, bands=("red",))[
            "red"
        ].values
    sat, orig = red["broken"], red["original"]
    assert float(np.nanmax(orig)) < 1.5
    assert np.isnan(sat).sum() > np.isnan(orig).sum()  # the saturated pixels are missing
    assert float(np.nanmax(sat)) < 1.5  # not read as a reflectance of 6.5
    ok = np.isfinite(sat)
    np.testing.assert_array_equal(sat[ok], orig[ok])  # and nothing else changed
    return 0


def _check_bowtie(_: BadRun) -> int:
    path = BAD / "permits" / "bowtie.geojson"
    with pytest.warns(
        PermitsRepairedWarning, match=r"bowtie\.geojson.*feature 1 \(permit_id 'P-2'\)"
    ):
        permits = read_permits(path)
    geoms = np.asarray(permits.geometry.values)
    assert shapely.is_valid(geoms).all() and (shapely.area(geoms) > 0).all()
    return 0


SKIP_CHECKS: dict[str, Callable[[BadRun], int]] = {
    "truncated": lambda r: _skipped_item(r, "truncated", "asset 'red'", "truncated"),
    "corrupt": lambda r: _skipped_item(r, "corrupt", "asset 'scl'", "cannot be read"),
    "empty_file": lambda r: _skipped_item(r, "empty_file", "asset 'swir16'"),
    "checksum": lambda r: _skipped_item(r, "checksum", "asset 'blue'", "file:checksum"),
    "wrong_crs": lambda r: _skipped_item(r, "wrong_crs", "EPSG:32639", "EPSG:32638"),
    "missing_asset": lambda r: _skipped_item(r, "missing_asset", "no asset for band 'nir'"),
    "no_crs": lambda r: _skipped_item(r, "no_crs", "declares no CRS"),
    "all_bad_month": _check_all_bad_month,
    "partly_bad_month": _check_partly_bad_month,
    "all_cloud": _check_all_cloud,
    "huge_radiance": _check_huge_radiance,
    "ntl_all_bad": _check_ntl_all_bad,
    "bowtie": _check_bowtie,
    "saturated": _check_saturated,
}


# --- running the error cases through the CLI ---------------------------------------------


def _tree(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in store.rglob("*")
        if p.is_file()
    }


def _valid_manifest(tmp: Path, tiny: Any, **keys: str) -> Path:
    data = yaml.safe_load(Path(tiny.manifest).read_text())
    data.pop("permits", None)
    data.pop("consumption", None)
    data.update(keys)
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli_args(case: Case, tiny: Any, tmp: Path) -> tuple[list[str], Path | None]:
    """The ``payesh run`` arguments of ``case`` and the file its error must name."""
    catalog, culprit = str(tiny.catalog), None if case.args else Path(tiny.catalog)
    if case.manifest is not None:
        manifest = culprit = BAD / case.manifest
    elif case.permits is not None:
        culprit = BAD / case.permits
        manifest = _valid_manifest(tmp, tiny, permits=str(culprit))
    elif case.id == "permits-no-crs":  # GeoParquet may omit its CRS; GeoJSON may not
        culprit = tmp / "no-crs.parquet"
        permits = read_permits(tiny.permits)
        geoms = list(permits.geometry.values)
        gpd.GeoDataFrame(permits.drop(columns="geometry"), geometry=geoms).to_parquet(culprit)
        manifest = _valid_manifest(tmp, tiny, permits=str(culprit))
    elif case.consumption is not None:
        culprit = BAD / case.consumption
        manifest = _valid_manifest(tmp, tiny, consumption=str(culprit))
    else:
        manifest = Path(tiny.manifest)
        if case.catalog is not None:
            catalog, culprit = str(BAD / case.catalog), BAD / case.catalog
    args = ["run", str(manifest), "--catalog", catalog, "--start", START, "--end", END]
    return [*args, *case.args], culprit


@dataclass
class Tally:
    tried: int = 0
    clear_errors: int = 0
    documented_skips: int = 0
    tracebacks: int = 0
    silent_zeros: int = 0


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    counts = Tally()
    yield counts
    if counts.tried == len(CASES):  # the whole corpus ran: its figures, once
        record(
            "bad_input",
            "tests/integration/reliability/test_bad_input.py::test_bad_input",
            inputs_tried=counts.tried,
            clear_errors=counts.clear_errors,
            documented_skips=counts.documented_skips,
            tracebacks=counts.tracebacks,
            silent_zeros=counts.silent_zeros,
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    bad_run: BadRun,
    tally: Tally,
    tiny_city: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tally.tried += 1
    if case.kind == "skip":
        assert case.check is not None
        zeros = SKIP_CHECKS[case.check](bad_run)
        tally.silent_zeros += zeros
        assert zeros == 0
        tally.documented_skips += 1
        return
    argv, culprit = _cli_args(case, tiny_city, tmp_path)
    before = _tree(bad_run.store)
    capsys.readouterr()
    try:
        code = main([*argv, "--store", str(bad_run.store)])
    except BaseException:
        tally.tracebacks += 1
        raise
    err = capsys.readouterr().err
    if "Traceback" in err:
        tally.tracebacks += 1
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("payesh: error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    for needle in (*([str(culprit)] if culprit else []), *case.needles):
        assert needle in errors[0], (needle, errors[0])
    assert _tree(bad_run.store) == before, "the store changed"
    tally.clear_errors += 1
