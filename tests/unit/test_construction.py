"""Construction: persistence, sites, permits, tile indicators."""

from __future__ import annotations

import dask
import dask.array as dsa
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from payesh.city import City
from payesh.errors import PayeshError
from payesh.grid import TileGrid, tile_grid
from payesh.indicators import builtup_persistence
from payesh.indicators.construction import (
    construction_tile_indicators,
    extract_sites,
    match_permits,
    persistence,
    persistent_builtup,
)
from payesh.indicators.tiles import tile_counts, tile_reduce
from payesh.records import NoPermitsWarning


def _raise_if_computes(dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("a Dask graph was computed while building indicators")


def _tg() -> TileGrid:
    city = City.model_validate(
        {
            "name": "t",
            "title": "t",
            "bbox": (44.96, 38.54, 44.98, 38.56),
            "crs": "EPSG:32638",
            "tile_size": 500,
        }
    )
    return tile_grid(city)


MONTHS = pd.date_range("2024-01-01", periods=8, freq="MS").values.astype("datetime64[ns]")


def _prob_series(values: list[float]) -> xr.DataArray:
    data = np.asarray(values, dtype="float32")[:, None, None]
    return xr.DataArray(data, dims=("time", "y", "x"), coords={"time": MONTHS})


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], None),  # never built
        ([0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1], None),  # one bright scene
        ([0.1, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], None),  # a cleared field, back to soil
        ([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], None),  # existed before the period
        ([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9], 4),  # a 4-month building
        ([0.1, 0.1, 0.1, np.nan, 0.9, np.nan, 0.9, 0.9], 4),  # with cloudy months skipped
        ([0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, np.nan], None),  # only 2 clear built months
        ([np.nan, 0.1, 0.1, 0.9, 0.2, 0.9, 0.9, 0.9], 3),  # one dark month inside the run
        ([np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan], None),
    ],
)
def test_persistence(series: list[float], expected: int | None) -> None:
    fs = persistent_builtup(_prob_series(series)).values[0, 0]
    if expected is None:
        assert np.isnat(fs)
    else:
        assert fs == MONTHS[expected]


def _prob_cube(tg: TileGrid, seed: int = 0) -> xr.DataArray:
    ny, nx = tg.geobox.shape
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.3, size=(MONTHS.size, ny, nx)).astype("float32")
    p[:, 100:110, 100:112] = 0.95  # existing building block
    p[3:, 20:30, 20:30] = 0.9  # new 10x10 site = 10 000 m2, from month 3
    p[5:, 60:64, 60:64] = 0.9  # new 4x4 = 1600 m2: below the minimum area
    p[2:, 45:55, 195:200] = 0.85  # new 10x5 site = 5000 m2 at the east edge, month 2
    p[4, :, :50] = np.nan  # a cloudy month over the west
    coords = {"time": MONTHS, "y": tg.geobox.coords["y"].values, "x": tg.geobox.coords["x"].values}
    return xr.DataArray(p, dims=("time", "y", "x"), coords=coords, name="builtup_prob")


def test_sites_and_permits() -> None:
    tg = _tg()
    prob = _prob_cube(tg)
    fs = persistent_builtup(prob)
    sites = extract_sites(fs, tg, prob=prob)
    assert len(sites) == 2
    assert sites.crs == tg.geobox.crs
    big = sites.loc[sites["area_m2"].idxmax()]
    assert big["area_m2"] == pytest.approx(10_000)
    assert big["geometry"].area == pytest.approx(10_000)
    assert big["first_seen"] == pd.Timestamp(MONTHS[3])
    assert big["tile"] == "r000c000" and big["site_id"] == "r000c000-01"
    small = sites.loc[sites["area_m2"].idxmin()]
    assert small["area_m2"] == pytest.approx(5_000)
    assert small["first_seen"] == pd.Timestamp(MONTHS[2])
    assert ((sites["confidence"] > 0) & (sites["confidence"] <= 1)).all()
    assert big["confidence"] > small["confidence"]

    # permits in WGS84: one before the big site (bow-tie geometry, repaired), one after the small
    big_geom = gpd.GeoSeries([big.geometry], crs=sites.crs).to_crs("EPSG:4326").iloc[0]
    small_geom = gpd.GeoSeries([small.geometry], crs=sites.crs).to_crs("EPSG:4326").iloc[0]
    minx, miny, maxx, maxy = big_geom.bounds
    bowtie = shapely.Polygon([(minx, miny), (maxx, maxy), (maxx, miny), (minx, maxy)])
    assert not bowtie.is_valid
    permits = gpd.GeoDataFrame(
        {
            "permit_id": ["P-1", "P-2"],
            "issued": pd.to_datetime(["2023-11-20", "2024-04-02"]),
        },
        geometry=[bowtie, small_geom.buffer(1e-5)],
        crs="EPSG:4326",
    )
    matched = match_permits(sites, permits)
    m_big = matched.loc[big.name]
    m_small = matched.loc[small.name]
    assert m_big["status"] == "permitted" and m_big["permit_id"] == "P-1"
    assert m_small["status"] == "unauthorized" and m_small["permit_id"] is None
    with pytest.warns(NoPermitsWarning, match="all 2 construction site"):
        none = match_permits(sites, None)
    assert (none["status"] == "unauthorized").all()

    ds = construction_tile_indicators(prob, fs, matched, tg)
    assert ds["unauthorized_sites"].dims == ("time", "tile_y", "tile_x")
    n = ds["unauthorized_sites"].sum(("tile_y", "tile_x")).values
    assert n.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(ds["unauthorized_m2"].sum(("tile_y", "tile_x")).values[2:], 5000)
    new = ds["new_builtup_m2"].sum(("tile_y", "tile_x")).values
    np.testing.assert_allclose(new[[1, 2, 3, 7]], [0, 5000, 15000, 15000 + 1600])
    bf = ds["builtup_fraction"]
    k2 = tg.tile_pixels**2
    assert float(bf[0, 2, 2]) == pytest.approx(120 / k2)  # the existing block
    assert float(bf[0, 1, 1]) == 0 and float(bf[7, 1, 1]) == pytest.approx(16 / k2)
    assert float(ds["builtup_valid_fraction"][4, 0, 0]) == 0
    assert np.isnan(ds["builtup_fraction"][4, 0, 0])
    assert float(ds["builtup_fraction"][7, 0, 0]) == pytest.approx(100 / k2)
    for name in ds.data_vars:
        assert ds[name].dims == ("time", "tile_y", "tile_x")
        assert {"units", "long_name", "description"} <= set(ds[name].attrs)


def test_no_sites_gives_empty_frame() -> None:
    tg = _tg()
    prob = _prob_cube(tg)
    prob[:] = 0.1
    sites = extract_sites(persistent_builtup(prob), tg)
    assert len(sites) == 0 and "site_id" in sites.columns
    matched = match_permits(sites, None)
    ds = construction_tile_indicators(prob, persistent_builtup(prob), matched, tg)
    assert int(ds["unauthorized_sites"].sum()) == 0


def test_dask_matches_numpy_and_is_lazy() -> None:
    tg = _tg()
    prob = _prob_cube(tg)
    fs = persistent_builtup(prob)
    with pytest.warns(NoPermitsWarning):
        sites = match_permits(extract_sites(fs, tg), None)
    eager = construction_tile_indicators(prob, fs, sites, tg)
    chunked = prob.chunk({"time": 2, "y": 50, "x": 100})
    with dask.config.set(scheduler=_raise_if_computes):
        fs_lazy = persistent_builtup(chunked)
        lazy = construction_tile_indicators(chunked, fs_lazy, sites, tg)
    assert isinstance(fs_lazy.data, dsa.Array)
    assert isinstance(lazy["builtup_fraction"].data, dsa.Array)
    xr.testing.assert_identical(fs, fs_lazy.compute())
    xr.testing.assert_allclose(eager, lazy.compute())


def test_months_in_chunks_of_their_own_keep_their_blocks() -> None:
    # a year as the store holds it (a month per chunk): the time axis is joined block by
    # block, the spatial blocks stay as they were (Dask's own rechunk split them into
    # quarters, and 12 monthly blocks of a 24 km city into ~8 700 rechunk tasks)
    tg = _tg()
    prob = _prob_cube(tg)
    monthly = prob.chunk({"time": 1, "y": 50, "x": 100})
    out = persistence(monthly)
    assert out["first_seen"].chunks == monthly.chunks[1:]
    assert out["mean_prob_since"].chunks == monthly.chunks[1:]
    blocks = len(monthly.data.blocks.ravel()) // prob.sizes["time"]
    tasks = len(dict(out["first_seen"].data.__dask_graph__()))
    assert tasks <= 4 * prob.sizes["time"] * blocks  # reads, the join, the kernel: no splits
    xr.testing.assert_identical(out.compute(), persistence(prob))


def test_persistence_in_batches_gives_first_seen_and_the_mean_since() -> None:
    tg = _tg()
    prob = _prob_cube(tg)
    fs = persistent_builtup(prob)
    whole = persistence(prob)
    xr.testing.assert_identical(whole["first_seen"], fs)
    # the confidence term as written with xarray (clear months at or after first_seen)
    expected = prob.where(prob["time"] >= fs).mean("time", skipna=True)
    got = whole["mean_prob_since"]
    assert got.dtype == np.float32 and got.attrs["units"] == "1"
    assert int(np.isfinite(got).sum()) == int((~np.isnat(fs.values)).sum()) > 0
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-6, equal_nan=True)
    # batches that split blocks anywhere, on Dask blocks: the same values
    chunked = prob.chunk({"time": 3, "y": 37, "x": 101})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtup_persistence, "_BATCH_PX", 97)
        lazy = persistence(chunked)
        assert isinstance(lazy["first_seen"].data, dsa.Array)
        xr.testing.assert_identical(lazy.compute(), whole)
        xr.testing.assert_identical(persistent_builtup(prob), fs)


def test_sites_from_mean_prob_equal_sites_from_prob() -> None:
    tg = _tg()
    prob = _prob_cube(tg)
    held = persistence(prob)
    from_prob = extract_sites(held["first_seen"], tg, prob=prob)
    from_mean = extract_sites(held["first_seen"], tg, mean_prob=held["mean_prob_since"])
    assert len(from_prob) == 2
    pd.testing.assert_frame_equal(
        pd.DataFrame(from_prob.drop(columns="geometry")),
        pd.DataFrame(from_mean.drop(columns="geometry")),
    )
    # confidence = mean prob of the site's pixels since first_seen x the size factor
    big = from_mean.loc[from_mean["area_m2"].idxmax()]
    assert big["confidence"] == pytest.approx(0.9, abs=1e-6)  # 10 000 m2: factor 1
    with pytest.raises(PayeshError, match="mean_prob of shape"):
        extract_sites(held["first_seen"], tg, mean_prob=np.zeros((3, 3), "float32"))


def _reference_first_seen(
    p: np.ndarray, times: np.ndarray, threshold: float, n: int, m: int, baseline: int
) -> np.ndarray:
    """The vectorised numpy formulation payesh used before its compiled kernel (git
    c439e2d): first_seen (n_pix,) of ``p`` (n_pix, time), kept as the reference."""
    n_pix, n_t = p.shape
    valid = np.isfinite(p)
    # clear months first, in time order (stable sort keeps the order)
    order = np.argsort(~valid, axis=-1, kind="stable")
    pc = np.take_along_axis(p, order, axis=-1)
    n_clear = valid.sum(axis=-1)
    q = np.arange(n_t)
    inside = q[None, :] < n_clear[:, None]
    above = inside & (pc > threshold)
    existing = (above & (q[None, :] < baseline)).any(axis=-1)
    cs = np.concatenate(
        [np.zeros((n_pix, 1), np.int16), np.cumsum(above, axis=-1, dtype=np.int16)], axis=-1
    )
    start = np.maximum(q - m + 1, 0)
    count = cs[:, q + 1] - cs[:, start]
    satisfied = inside & (q[None, :] >= baseline) & (count >= n)
    last = n_clear - 1
    ok_last = np.take_along_axis(satisfied, np.maximum(last, 0)[:, None], axis=-1)[:, 0]
    new = ~existing & (n_clear >= baseline + n) & ok_last
    # start of the final run of satisfied windows that lasts to the last clear composite
    unsat = inside & ~satisfied
    last_unsat = np.where(unsat, q[None, :], -1).max(axis=-1)
    q0 = last_unsat + 1
    # first built-up composite inside the window ending at q0
    lo = np.maximum(q0 - m + 1, 0)
    in_win = above & (q[None, :] >= lo[:, None]) & (q[None, :] <= q0[:, None])
    j = np.argmax(in_win, axis=-1)
    month_idx = np.take_along_axis(order, j[:, None], axis=-1)[:, 0]
    return np.where(new, times[month_idx], np.datetime64("NaT", "ns"))


@settings(max_examples=60, deadline=None)
@given(
    n_t=st.integers(0, 14),
    nan_share=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    rule=st.sampled_from([(3, 4, 1), (1, 1, 0), (2, 3, 2), (4, 4, 0)]),
    seed=st.integers(0, 2**16),
)
def test_compiled_first_seen_equals_the_numpy_formulation(
    n_t: int, nan_share: float, rule: tuple[int, int, int], seed: int
) -> None:
    """Random series of every length (values on the threshold, NaN and inf included) give
    the first_seen of the vectorised formulation, for several (n, m, baseline)."""
    n, m, baseline = rule
    rng = np.random.default_rng(seed)
    p = rng.choice(np.array([0.1, 0.5, 0.6, 0.9], "float32"), size=(3000, n_t))
    p[rng.random(p.shape) < nan_share] = np.nan
    p[rng.random(p.shape) < 0.02] = np.inf  # not finite: not a clear month
    times = pd.date_range("2024-01-01", periods=n_t, freq="MS").values.astype("datetime64[ns]")
    got = builtup_persistence._persistence_batch(p, times, 0.5, n, m, baseline)
    if n_t == 0:  # no months: nothing is newly built (the reference cannot index them)
        assert got.shape == (3000,) and np.isnat(got).all()
        return
    np.testing.assert_array_equal(got, _reference_first_seen(p, times, 0.5, n, m, baseline))
    if nan_share == 0.0 and n_t >= baseline + n + 4:  # not a vacuous comparison
        assert (~np.isnat(got)).sum() > 20


def _tile_sums_as_written_with_xarray(
    prob: xr.DataArray, first_seen: xr.DataArray, tg: TileGrid, threshold: float
) -> xr.Dataset:
    """The tile terms of construction_tile_indicators as coarsen sums of whole (time, y, x)
    arrays — how they were computed before the compiled counts."""
    k = tg.tile_pixels
    valid = prob.notnull()
    n_valid = tile_reduce(valid.astype("float32"), tg, how="sum", pixels_per_tile=k)
    n_built = tile_reduce(
        (prob > threshold).where(valid).astype("float32"), tg, how="sum", pixels_per_tile=k
    )
    area = abs(tg.geobox.resolution.x * tg.geobox.resolution.y)
    is_new = (first_seen <= prob["time"]).astype("float32")
    return xr.Dataset(
        {
            "builtup_fraction": (n_built / n_valid.where(n_valid > 0)).astype("float32"),
            "builtup_valid_fraction": (n_valid / float(k * k)).astype("float32"),
            "new_builtup_m2": (tile_reduce(is_new, tg, how="sum", pixels_per_tile=k) * area)
            .astype("float32")
            .transpose("time", "tile_y", "tile_x"),
        }
    )


@pytest.mark.parametrize("chunks", [None, {"time": 3, "y": 37, "x": 101}, {"y": 100, "x": 50}])
@pytest.mark.parametrize("threshold", [0.5, 0.55])
def test_compiled_tile_counts_equal_the_xarray_sums(
    chunks: dict[str, int] | None, threshold: float
) -> None:
    tg = _tg()
    prob = _prob_cube(tg, seed=3)
    rng = np.random.default_rng(1)
    values = prob.values
    values[rng.random(values.shape) < 0.2] = np.nan  # scattered clouds in every month
    values[2, :50, :50] = np.float32(threshold)  # exactly at the threshold: not built
    prob = prob.copy(data=values)
    fs = persistent_builtup(prob, threshold=threshold)
    fs = fs.where(rng.random(fs.shape) < 0.5, np.datetime64(MONTHS[1]))  # before, at, NaT
    assert (~np.isnat(fs.values)).sum() > 0 and np.isnat(fs.values).sum() > 0
    shuffled = prob.isel(time=rng.permutation(MONTHS.size))  # months in any order
    sites = gpd.GeoDataFrame(
        {"status": [], "first_seen": [], "tile": []}, geometry=[], crs=tg.geobox.crs
    )
    for p in (prob, shuffled):
        expected = _tile_sums_as_written_with_xarray(p, fs, tg, threshold)
        if chunks is None:
            given_p, given_fs = p, fs
        else:
            spatial = {d: n for d, n in chunks.items() if d != "time"}
            given_p, given_fs = p.chunk(chunks), fs.chunk(spatial)
        got = construction_tile_indicators(given_p, given_fs, sites, tg, threshold=threshold)
        for name, want in expected.data_vars.items():
            have = got[name].compute()
            assert have.dtype == want.dtype == np.float32, name
            np.testing.assert_array_equal(have.values, want.values, err_msg=name)
    assert float(expected["new_builtup_m2"].max()) > 0


@pytest.mark.parametrize("chunks", [None, {"time": 2, "y": 30, "x": 70}])
def test_tile_counts_of_integers_and_of_leading_dims(chunks: dict[str, int] | None) -> None:
    tg = _tg()
    rng = np.random.default_rng(2)
    ny, nx = tg.geobox.shape
    coords = {"time": MONTHS, "y": tg.geobox.coords["y"].values, "x": tg.geobox.coords["x"].values}
    count = xr.DataArray(
        rng.integers(0, 3, size=(MONTHS.size, ny, nx)).astype("int16"),
        dims=("time", "y", "x"),
        coords=coords,
    )
    given = count if chunks is None else count.chunk(chunks)
    valid, over = tile_counts(given, tg, above=0)
    assert valid.dims == over.dims == ("time", "tile_y", "tile_x")
    np.testing.assert_array_equal(valid.values, tg.tile_pixels**2)  # no integer is NaN
    expected = tile_reduce((count > 0).astype("float32"), tg, how="sum")
    np.testing.assert_array_equal(over.values, expected.values)
    assert over["tile"].shape == tg.shape and (over["time"].values == MONTHS).all()
    with pytest.raises(PayeshError, match="does not cover"):
        tile_counts(count.isel(x=slice(1, None)), tg, above=0, pixels_per_tile=tg.tile_pixels)
