"""The Icechunk indicator store: round trip, month replacement, versions, crashes, locking."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
import zarr
from pyproj import CRS

from payesh import store as st
from payesh.errors import StoreError
from payesh.store import write as st_write
from payesh.store.repo import _city_lock, open_repo

CRS_UTM = "EPSG:32638"


def _months(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="MS")


def make_tiles(times: pd.DatetimeIndex, seed: int = 0, *, dask_backed: bool = True) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    ny, nx = 3, 4
    ys = 4_270_000.0 - (np.arange(ny) + 0.5) * 1000
    xs = 500_000.0 + (np.arange(nx) + 0.5) * 1000
    names = np.array([[f"r{r:03d}c{c:03d}" for c in range(nx)] for r in range(ny)], dtype=object)
    lon = 45.0 + np.arange(nx)[None, :] * 0.01 + np.zeros((ny, 1))
    lat = 38.5 - np.arange(ny)[:, None] * 0.01 + np.zeros((1, nx))
    ntl = rng.random((len(times), ny, nx)).astype("float32")
    ntl[0, 0, 0] = np.nan
    data = da.from_array(ntl, chunks=(1, ny, nx)) if dask_backed else ntl
    flag = rng.integers(0, 2, (len(times), ny, nx)).astype("int8")
    ds = xr.Dataset(
        {
            "ntl_sum": (
                ("time", "tile_y", "tile_x"),
                data,
                {"units": "nW cm-2 sr-1", "long_name": "sum of lights"},
            ),
            "load_flag": (("time", "tile_y", "tile_x"), flag, {"units": "1", "long_name": "flag"}),
            "ntl_trend": (("tile_y", "tile_x"), rng.random((ny, nx)), {"units": "1 a-1"}),
        },
        coords={
            "time": times,
            "tile_y": ys,
            "tile_x": xs,
            "tile": (("tile_y", "tile_x"), names),
            "lon": (("tile_y", "tile_x"), lon),
            "lat": (("tile_y", "tile_x"), lat),
        },
        attrs={"crs": CRS_UTM},
    )
    return ds


def make_pixels(times: pd.DatetimeIndex, seed: int = 1) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    n = 8
    first = np.full((n, n), np.datetime64("2025-02-01", "ns"))
    first[0, :3] = np.datetime64("NaT", "ns")
    ds = xr.Dataset(
        {
            "builtup_prob": (
                ("time", "y", "x"),
                rng.random((len(times), n, n)).astype("float32"),
                {"units": "1", "long_name": "built-up probability"},
            ),
            "first_seen": (("y", "x"), first, {"long_name": "first built-up"}),
        },
        coords={
            "time": times,
            "y": 4_270_000.0 - (np.arange(n) + 0.5) * 10,
            "x": 500_000.0 + (np.arange(n) + 0.5) * 10,
        },
    )
    return ds.assign_coords(spatial_ref=xr.DataArray(0, attrs={"crs_wkt": CRS(CRS_UTM).to_wkt()}))


def make_ntl(times: pd.DatetimeIndex) -> xr.Dataset:
    res = 1 / 240
    lats = 38.6 - (np.arange(5) + 0.5) * res
    lons = 44.9 + (np.arange(6) + 0.5) * res
    shape = (len(times), 5, 6)
    return xr.Dataset(
        {
            "radiance": (("time", "y", "x"), np.ones(shape, "float32"), {"units": "nW cm-2 sr-1"}),
            "cf_cvg": (("time", "y", "x"), np.full(shape, 3, "int16"), {"units": "1"}),
        },
        coords={"time": times, "y": lats, "x": lons},
        attrs={"crs": "EPSG:4326"},
    )


def make_sites() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "site_id": ["s1", "s2"],
            "first_seen": pd.to_datetime(["2025-02-01", "2025-03-01"]),
            "area_m2": [400.0, 1200.0],
            "tile": ["r000c000", "r001c002"],
            "status": ["unauthorized", "permitted"],
            "permit_id": [None, "P-17"],
            "confidence": np.array([0.8, 0.95], dtype="float32"),
        },
        geometry=[
            shapely.box(500_010, 4_269_950, 500_030, 4_269_970),
            shapely.box(502_100, 4_268_100, 502_140, 4_268_130),
        ],
        crs=CRS_UTM,
    )


PROV = {
    "code_version": "0.1.0",
    "source_items": {"viirs-ntl-monthly": ["a", "b"]},
    "model_versions": {"builtup": "1"},
}


def write_all(root: Path, times: pd.DatetimeIndex, seed: int = 0, message: str = "run") -> str:
    groups = {
        "tiles": make_tiles(times, seed),
        "pixels": make_pixels(times, seed),
        "ntl": make_ntl(times),
        "sites": make_sites(),
    }
    return st.write_run("demo", groups, store=root, message=message, provenance=PROV)


def test_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert st.store_path("khoy", tmp_path) == str(tmp_path / "khoy")
    monkeypatch.setenv("PAYESH_STORE", str(tmp_path / "x"))
    assert st.store_path("khoy") == str(tmp_path / "x" / "khoy")
    monkeypatch.delenv("PAYESH_STORE")
    assert st.store_path("khoy") == str(Path("data/store/khoy"))
    assert st.store_path("khoy", "s3://bucket/p/") == "s3://bucket/p/khoy"
    with pytest.raises(StoreError, match="invalid city name"):
        st.store_path("../etc", tmp_path)


def test_round_trip(tmp_path: Path) -> None:
    times = _months("2025-01-01", 3)
    write_all(tmp_path, times)
    tiles = make_tiles(times)
    got = st.open_indicators("demo", store=tmp_path)
    assert got["ntl_sum"].chunks is not None  # lazy
    assert got["ntl_sum"].dims == ("time", "tile_y", "tile_x")
    np.testing.assert_array_equal(got["ntl_sum"].values, tiles["ntl_sum"].values)
    np.testing.assert_array_equal(got["load_flag"].values, tiles["load_flag"].values)
    assert got["load_flag"].dtype == np.int8
    assert got["ntl_sum"].dtype == np.float32
    np.testing.assert_array_equal(got["time"].values, times.values)
    assert [str(t) for t in got["tile"].values.ravel()] == list(tiles["tile"].values.ravel())
    np.testing.assert_allclose(got["lon"].values, tiles["lon"].values)
    assert got["ntl_sum"].attrs["units"] == "nW cm-2 sr-1"
    assert got["ntl_sum"].attrs["long_name"] == "sum of lights"
    assert got["ntl_sum"].attrs["grid_mapping"] == "spatial_ref"
    assert CRS.from_wkt(got["spatial_ref"].attrs["crs_wkt"]) == CRS(CRS_UTM)
    gt = [float(v) for v in got["spatial_ref"].attrs["GeoTransform"].split()]
    assert gt == [500_000.0, 1000.0, 0.0, 4_270_000.0, 0.0, -1000.0]
    assert got.attrs["Conventions"] == "CF-1.10"
    assert got.attrs["city"] == "demo"
    assert got.attrs["code_version"] == "0.1.0"
    assert '"viirs-ntl-monthly"' in got.attrs["source_items"]
    assert "created" in got.attrs
    # one order for one snapshot, whatever order the store lists its arrays in
    assert list(got.data_vars) == sorted(got.data_vars) and len(got.data_vars) > 2

    px = st.open_indicators("demo", store=tmp_path, group="pixels")
    first = px["first_seen"].values
    assert np.isnat(first[0, 0]) and first[1, 1] == np.datetime64("2025-02-01")
    assert px["builtup_prob"].attrs["grid_mapping"] == "spatial_ref"
    ntl = st.open_indicators("demo", store=tmp_path, group="ntl")
    assert CRS.from_wkt(ntl["spatial_ref"].attrs["crs_wkt"]) == CRS("EPSG:4326")
    assert ntl["x"].attrs["units"] == "degrees_east"

    sites = st.open_sites("demo", store=tmp_path)
    expected = make_sites()
    assert list(sites.columns) == list(st.SITE_COLUMNS)
    assert CRS(sites.crs) == CRS(CRS_UTM)
    assert list(sites["permit_id"]) == [None, "P-17"]
    assert list(sites["site_id"]) == ["s1", "s2"]
    assert sites.geometry.geom_equals_exact(expected.geometry, tolerance=0).all()
    pd.testing.assert_series_equal(sites["first_seen"], expected["first_seen"], check_dtype=False)


def test_checksum_codec_in_metadata(tmp_path: Path) -> None:
    write_all(tmp_path, _months("2025-01-01", 2))
    repo = open_repo("demo", tmp_path)
    root = zarr.open_group(repo.readonly_session(branch="main").store, mode="r")
    for path in ("tiles/ntl_sum", "tiles/tile", "pixels/first_seen", "sites/geometry_wkb"):
        names = [c.to_dict()["name"] for c in root[path].metadata.codecs]
        assert names[-1] == "crc32c", (path, names)
        assert "zstd" in names


def test_rerun_replaces_given_months_and_keeps_others(tmp_path: Path) -> None:
    first = write_all(tmp_path, _months("2025-01-01", 3), seed=0, message="jan-mar")
    second = write_all(tmp_path, _months("2025-02-01", 3), seed=5, message="feb-apr")
    got = st.open_indicators("demo", store=tmp_path)
    np.testing.assert_array_equal(got["time"].values, _months("2025-01-01", 4).values)
    old = make_tiles(_months("2025-01-01", 3), 0)
    new = make_tiles(_months("2025-02-01", 3), 5)
    np.testing.assert_array_equal(got["ntl_sum"].values[0], old["ntl_sum"].values[0])
    np.testing.assert_array_equal(got["ntl_sum"].values[1:], new["ntl_sum"].values)
    np.testing.assert_array_equal(got["ntl_trend"].values, new["ntl_trend"].values)
    assert got["ntl_sum"].attrs["units"] == "nW cm-2 sr-1"
    assert got["load_flag"].dtype == np.int8
    np.testing.assert_array_equal(got["load_flag"].values[1:], new["load_flag"].values)
    px = st.open_indicators("demo", store=tmp_path, group="pixels")
    assert px.sizes["time"] == 4
    assert np.isnat(px["first_seen"].values[0, 0])

    hist = st.history("demo", store=tmp_path)
    assert [h["snapshot_id"] for h in hist] == [second, first]
    assert [h["message"] for h in hist] == ["feb-apr", "jan-mar"]
    assert hist[0]["time"] >= hist[1]["time"]
    assert hist[0]["metadata"]["groups"] == ["ntl", "pixels", "sites", "tiles"]

    v1 = st.open_indicators("demo", store=tmp_path, version=first)
    np.testing.assert_array_equal(v1["time"].values, _months("2025-01-01", 3).values)
    np.testing.assert_array_equal(v1["ntl_sum"].values, old["ntl_sum"].values)
    assert len(st.open_sites("demo", store=tmp_path, version=first)) == 2


def test_partial_run_keeps_other_groups(tmp_path: Path) -> None:
    write_all(tmp_path, _months("2025-01-01", 2))
    tiles = make_tiles(_months("2025-03-01", 1), seed=3, dask_backed=False)
    st.write_run("demo", {"tiles": tiles}, store=tmp_path, message="march", provenance=PROV)
    assert st.open_indicators("demo", store=tmp_path).sizes["time"] == 3
    assert st.open_indicators("demo", store=tmp_path, group="pixels").sizes["time"] == 2


def test_crash_before_commit_keeps_last_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_all(tmp_path, _months("2025-01-01", 3))
    real = st_write._write_group
    calls = []

    def crashing(session: object, name: str, ds: xr.Dataset) -> None:
        real(session, name, ds)
        calls.append(name)
        raise RuntimeError("worker died")

    monkeypatch.setattr(st_write, "_write_group", crashing)
    with pytest.raises(RuntimeError, match="worker died"):
        write_all(tmp_path, _months("2025-03-01", 3), seed=9)
    assert calls == ["tiles"]
    monkeypatch.setattr(st_write, "_write_group", real)

    assert st.history("demo", store=tmp_path)[0]["snapshot_id"] == good
    got = st.open_indicators("demo", store=tmp_path)
    np.testing.assert_array_equal(got["time"].values, _months("2025-01-01", 3).values)
    np.testing.assert_array_equal(
        got["ntl_sum"].values, make_tiles(_months("2025-01-01", 3))["ntl_sum"].values
    )
    # the lock was released and the next run works
    write_all(tmp_path, _months("2025-03-01", 2), seed=2)
    assert st.open_indicators("demo", store=tmp_path).sizes["time"] == 4


def test_a_run_written_group_by_group_and_in_parts_equals_write_run(tmp_path: Path) -> None:
    """open_run: the pixels' months first, then first_seen and the other groups, gives the
    store write_run gives — stored months kept, the stored first_seen replaced."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for root in (whole, parts):
        write_all(root, _months("2025-01-01", 3), seed=0, message="jan-mar")
    later = _months("2025-02-01", 3)
    groups = {
        "tiles": make_tiles(later, 5),
        "pixels": make_pixels(later, 5),
        "ntl": make_ntl(later),
        "sites": make_sites(),
    }
    # a first_seen unlike the stored one, so that replacing it shows
    groups["pixels"]["first_seen"][:] = np.datetime64("2025-04-01", "ns")
    st.write_run("demo", groups, store=whole, message="feb-apr", provenance=PROV)
    with st.open_run("demo", store=parts) as run:
        run.write("pixels", groups["pixels"][["builtup_prob"]])
        assert run.written("pixels") == {"builtup_prob"}
        run.write("pixels", groups["pixels"][["first_seen"]])
        assert run.written("pixels") == {"builtup_prob", "first_seen"}
        for name in ("tiles", "ntl", "sites"):
            run.write(name, groups[name])
        snapshot = run.commit("feb-apr", PROV)
    assert st.history("demo", store=parts)[0]["snapshot_id"] == snapshot
    for group in ("pixels", "tiles", "ntl"):
        a = st.open_indicators("demo", store=whole, group=group).load()
        b = st.open_indicators("demo", store=parts, group=group).load()
        for ds in (a, b):  # the snapshot and the second of its writing differ
            del ds.attrs["snapshot_id"], ds.attrs["created"]
        xr.testing.assert_identical(a, b)
    px = st.open_indicators("demo", store=parts, group="pixels")
    assert px.sizes["time"] == 4
    assert (px["first_seen"].values == np.datetime64("2025-04-01", "ns")).all()
    assert len(st.open_sites("demo", store=parts)) == 2


def test_a_run_refuses_later_months_and_writes_after_its_commit(tmp_path: Path) -> None:
    times = _months("2025-01-01", 2)
    with st.open_run("demo", store=tmp_path) as run:
        run.write("pixels", make_pixels(times)[["builtup_prob"]])
        with pytest.raises(StoreError, match="'pixels' was already written in this run"):
            run.write("pixels", make_pixels(times)[["builtup_prob"]])
        run.write("sites", make_sites())
        with pytest.raises(StoreError, match="'sites' was already written in this run"):
            run.write("sites", make_sites())
        run.commit("m", PROV)
        with pytest.raises(StoreError, match="is committed"):
            run.write("tiles", make_tiles(times))
    with st.open_run("demo", store=tmp_path) as run, pytest.raises(StoreError, match="no groups"):
        run.commit("nothing", PROV)
    assert len(st.history("demo", store=tmp_path)) == 1


def test_a_run_left_without_its_commit_stores_nothing(tmp_path: Path) -> None:
    good = write_all(tmp_path, _months("2025-01-01", 2))
    with pytest.raises(RuntimeError, match="indicators failed"):
        with st.open_run("demo", store=tmp_path) as run:
            run.write("pixels", make_pixels(_months("2025-03-01", 2), seed=7)[["builtup_prob"]])
            raise RuntimeError("indicators failed")
    assert [h["snapshot_id"] for h in st.history("demo", store=tmp_path)] == [good]
    px = st.open_indicators("demo", store=tmp_path, group="pixels")
    np.testing.assert_array_equal(px["time"].values, _months("2025-01-01", 2).values)
    # the lock was released: the next run commits
    with st.open_run("demo", store=tmp_path, lock_timeout=1) as run:
        run.write("tiles", make_tiles(_months("2025-03-01", 1)))
        run.commit("march", PROV)
    assert st.open_indicators("demo", store=tmp_path).sizes["time"] == 3


def test_second_writer_times_out_on_lock(tmp_path: Path) -> None:
    write_all(tmp_path, _months("2025-01-01", 1))
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with _city_lock(str(tmp_path), "demo", timeout=5):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(StoreError, match="locked by another writer"):
            st.write_run(
                "demo",
                {"tiles": make_tiles(_months("2025-02-01", 1))},
                store=tmp_path,
                message="blocked",
                provenance=PROV,
                lock_timeout=0.3,
            )
    finally:
        release.set()
        t.join()
    assert len(st.history("demo", store=tmp_path)) == 1


def test_missing_store_and_group(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no store for city demo at .* run `payesh run demo`"):
        st.open_indicators("demo", store=tmp_path)
    with pytest.raises(StoreError, match="no store"):
        st.history("demo", store=tmp_path)
    st.write_run(
        "demo",
        {"tiles": make_tiles(_months("2025-01-01", 1))},
        store=tmp_path,
        message="m",
        provenance=PROV,
    )
    with pytest.raises(StoreError, match="no group 'pixels'"):
        st.open_indicators("demo", store=tmp_path, group="pixels")
    with pytest.raises(StoreError, match="unknown group"):
        st.open_indicators("demo", store=tmp_path, group="nope")
    with pytest.raises(StoreError, match="no version"):
        st.open_indicators("demo", store=tmp_path, version="0" * 20)


def test_bad_input_is_rejected(tmp_path: Path) -> None:
    tiles = make_tiles(_months("2025-01-01", 1))
    with pytest.raises(StoreError, match="unknown group"):
        st.write_run("demo", {"tile": tiles}, store=tmp_path, message="m", provenance={})
    no_crs = tiles.copy()
    no_crs.attrs = {}
    with pytest.raises(StoreError, match="no CRS"):
        st.write_run("demo", {"tiles": no_crs}, store=tmp_path, message="m", provenance={})
    mid_month = make_tiles(pd.DatetimeIndex(["2025-01-15"]))
    with pytest.raises(StoreError, match="month starts"):
        st.write_run("demo", {"tiles": mid_month}, store=tmp_path, message="m", provenance={})
    no_units = tiles.copy()
    no_units["ntl_sum"].attrs = {}
    with pytest.raises(StoreError, match="no `units`"):
        st.write_run("demo", {"tiles": no_units}, store=tmp_path, message="m", provenance={})
    assert not (tmp_path / "demo").exists()


def test_rerun_with_other_variables(tmp_path: Path) -> None:
    st.write_run(
        "demo",
        {"tiles": make_tiles(_months("2025-01-01", 2))},
        store=tmp_path,
        message="1",
        provenance=PROV,
    )
    new = make_tiles(_months("2025-02-01", 2), seed=3).drop_vars("load_flag")
    new["electricity_mwh"] = (new["ntl_sum"] * 2).assign_attrs(units="MWh")
    st.write_run("demo", {"tiles": new}, store=tmp_path, message="2", provenance=PROV)
    got = st.open_indicators("demo", store=tmp_path)
    assert got.sizes["time"] == 3
    # a variable missing from some months is missing there, never zero
    assert np.isnan(got["load_flag"].values[1:]).all()
    assert not np.isnan(got["load_flag"].values[0]).any()
    assert np.isnan(got["electricity_mwh"].values[0]).all()
    np.testing.assert_allclose(got["electricity_mwh"].values[1:], new["electricity_mwh"].values)
    assert got["electricity_mwh"].attrs["units"] == "MWh"


def test_write_on_a_distributed_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    times = _months("2025-01-01", 2)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        tiles = make_tiles(times).persist()  # futures that only the cluster can compute
        st.write_run("demo", {"tiles": tiles}, store=tmp_path, message="m", provenance=PROV)
        got = st.open_indicators("demo", store=tmp_path)
        np.testing.assert_array_equal(got["ntl_sum"].values, make_tiles(times)["ntl_sum"].values)


_KILLED_WRITER = """
import os, sys
import pandas as pd
sys.path.insert(0, {tests!r})
from test_store import PROV, make_pixels, make_tiles
from payesh import store as st
from payesh.store import write as st_write

real = st_write._write_group
def dying(session, name, ds):
    real(session, name, ds)
    os._exit(3)  # the process dies after writing chunks, before the commit
st_write._write_group = dying
t = pd.date_range("2025-04-01", periods=2, freq="MS")
st.write_run("demo", {{"tiles": make_tiles(t, 7), "pixels": make_pixels(t)}},
             store={root!r}, message="never", provenance=PROV)
"""


def test_killed_writer_leaves_store_intact_and_lock_free(tmp_path: Path) -> None:
    good = write_all(tmp_path, _months("2025-01-01", 3))
    code = _KILLED_WRITER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()
    assert [h["snapshot_id"] for h in st.history("demo", store=tmp_path)] == [good]
    got = st.open_indicators("demo", store=tmp_path)
    np.testing.assert_array_equal(got["time"].values, _months("2025-01-01", 3).values)
    # the OS released the dead writer's lock: the next run does not wait
    st.write_run(
        "demo",
        {"tiles": make_tiles(_months("2025-04-01", 1))},
        store=tmp_path,
        message="after",
        provenance=PROV,
        lock_timeout=1,
    )
    assert st.open_indicators("demo", store=tmp_path).sizes["time"] == 4


@pytest.mark.parametrize("dates", ["mixed", "all NaT", "hourly"])
def test_a_raster_of_dates_is_stored_as_xarray_stores_it(tmp_path: Path, dates: str) -> None:
    """``first_seen`` is encoded chunk by chunk (xarray's encoding of the whole array held
    ~3 times its size); the stored numbers, units, calendar and dtype are those of
    xarray's own eager ``to_zarr``, whatever the dates (units inferred from the valid
    ones: the first valid date in order is the reference)."""
    rng = np.random.default_rng(4)
    n = 40
    first = np.datetime64("2025-03-01", "ns") + rng.integers(0, 9, (n, n)) * np.timedelta64(31, "D")
    first[rng.random((n, n)) < 0.7] = np.datetime64("NaT", "ns")
    first[0, 0] = np.datetime64("NaT", "ns")  # the reference is not the first pixel
    if dates == "all NaT":
        first[:] = np.datetime64("NaT", "ns")
    if dates == "hourly":
        first[5, 5] = np.datetime64("2025-04-02T06:00", "ns")
    y = 4_270_000.0 - (np.arange(n) + 0.5) * 10
    x = 500_000.0 + (np.arange(n) + 0.5) * 10
    ds = make_pixels(pd.date_range("2025-01-01", periods=2, freq="MS"))
    ds = xr.Dataset(
        {
            "builtup_prob": (("time", "y", "x"), np.zeros((2, n, n), "float32"), {"units": "1"}),
            "first_seen": (("y", "x"), first, {"long_name": "first built-up"}),
        },
        coords={"time": ds["time"], "y": y, "x": x, "spatial_ref": ds["spatial_ref"]},
    )
    st.write_run("c", {"pixels": ds}, store=tmp_path / "s", message="m", provenance=PROV)
    stored = zarr.open_array(
        open_repo("c", tmp_path / "s").readonly_session("main").store,
        path="pixels/first_seen",
        mode="r",
    )
    plain = tmp_path / "plain.zarr"
    xr.Dataset({"first_seen": (("y", "x"), first)}).to_zarr(
        plain, zarr_format=3, consolidated=False
    )
    eager = zarr.open_array(plain, path="first_seen", mode="r")
    for key in ("units", "calendar"):
        assert stored.attrs[key] == eager.attrs[key], key
    assert stored.dtype == eager.dtype == np.dtype("int64")
    np.testing.assert_array_equal(stored[:], eager[:])
    back = st.open_indicators("c", store=tmp_path / "s", group="pixels")["first_seen"].values
    np.testing.assert_array_equal(back, first)


def test_a_raster_of_dates_is_chunked_without_a_copy_of_the_whole() -> None:
    """Dask's ``from_array`` copies a numpy array whole before chunking it (46 MB more
    at a 24 km run's commit, its peak then): ``chunked`` hands the store chunks that are
    views of the caller's dates, and the same values."""
    from payesh.store.layout import chunked

    first = np.full((1100, 700), np.datetime64("NaT", "ns"))
    first[3, 4] = np.datetime64("2025-03-01", "ns")
    out, encoding = chunked(xr.Dataset({"first_seen": (("y", "x"), first)}))
    lazy = out["first_seen"].data
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((1024, 76), (700,))
    assert encoding["first_seen"]["chunks"] == (1024, 700)
    # the chunk a store task is given (``compute`` copies its result once more)
    block = dask.get(dict(lazy.__dask_graph__()), (lazy.name, 1, 0))
    assert block.shape == (76, 700)
    assert np.shares_memory(block, first)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), first)
