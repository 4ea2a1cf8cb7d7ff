"""Energy indicators: night-light tiling, anomalies, trends, heat, electricity, suspects."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from scipy import stats

from payesh.city import City
from payesh.grid import aligned_geobox, ntl_geobox, tile_grid
from payesh.indicators.anomaly import ntl_anomaly
from payesh.indicators.electricity import electricity_estimate
from payesh.indicators.lst import lst_tile_indicators
from payesh.indicators.nightlights import _pixel_polygons, ntl_tile_indicators, ntl_tile_weights
from payesh.indicators.suspect import load_suspect
from payesh.indicators.tiles import tile_coords_dataset, tile_reduce
from payesh.indicators.trend import ntl_trend


def _raise_if_computes(dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("a Dask graph was computed while building indicators")


def _city(tile_size: float = 500.0) -> City:
    return City.model_validate(
        {
            "name": "t",
            "title": "test",
            "bbox": (44.96, 38.54, 44.98, 38.56),
            "crs": "EPSG:32638",
            "tile_size": tile_size,
        }
    )


def _months(n: int, start: str = "2022-01-01") -> np.ndarray:
    return pd.date_range(start, periods=n, freq="MS").values.astype("datetime64[ns]")


def _ntl(city: City, n_time: int = 3, seed: int = 0) -> xr.Dataset:
    gbox = ntl_geobox(city)
    ny, nx = gbox.shape
    rng = np.random.default_rng(seed)
    rad = rng.gamma(2.0, 5.0, size=(n_time, ny, nx)).astype("float32")
    cf = np.full((n_time, ny, nx), 5, dtype="uint16")
    ys = gbox.coords["latitude"].values
    xs = gbox.coords["longitude"].values
    return xr.Dataset(
        {
            "radiance": (("time", "y", "x"), rad),
            "cf_cvg": (("time", "y", "x"), cf),
        },
        coords={"time": _months(n_time), "y": ys, "x": xs},
    )


@pytest.mark.parametrize("tile_size", [250.0, 500.0, 1000.0])
def test_ntl_sum_conserved_across_tile_sizes(tile_size: float) -> None:
    city = _city(tile_size)
    tg = tile_grid(city)
    gbox = ntl_geobox(city)
    w = ntl_tile_weights(gbox, tg)
    # independent share of each night-light pixel inside the city grid
    pix = _pixel_polygons(gbox, str(tg.geobox.crs))
    city_poly = tg.geobox.extent.geom
    share = shapely.area(shapely.intersection(pix, city_poly)) / shapely.area(pix)
    colsum = np.asarray(w.sum(axis=0)).ravel()
    np.testing.assert_allclose(colsum, share, atol=1e-9)
    inside = shapely.within(pix, city_poly)
    assert inside.any()
    np.testing.assert_allclose(colsum[inside], 1.0, atol=1e-9)

    ntl = _ntl(city)
    ds = ntl_tile_indicators(ntl, w, tg)
    total = ds["ntl_sum"].sum(("tile_y", "tile_x")).values
    expected = (ntl["radiance"].values.reshape(3, -1).astype("float64") * share).sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    assert ds["ntl_sum"].dims == ("time", "tile_y", "tile_x")
    assert ds["ntl_sum"].sizes["tile_y"] == tg.shape[0]
    np.testing.assert_allclose(ds["ntl_valid_fraction"].values, 1.0, atol=1e-6)
    for name in ds.data_vars:
        assert {"units", "long_name", "description"} <= set(ds[name].attrs)


def test_city_total_independent_of_tile_size_for_interior_pixels() -> None:
    # same radiance field, tile sizes 500 and 1000: totals agree over pixels inside both grids
    c1, c2 = _city(500.0), _city(1000.0)
    t1, t2 = tile_grid(c1), tile_grid(c2)
    g1, g2 = ntl_geobox(c1), ntl_geobox(c2)
    w1, w2 = ntl_tile_weights(g1, t1), ntl_tile_weights(g2, t2)
    # radiance only on pixels of g1 that lie inside both city grids (others dark)
    pix = _pixel_polygons(g1, str(t1.geobox.crs))
    inside_both = shapely.within(pix, t1.geobox.extent.geom) & shapely.within(
        pix, t2.geobox.extent.geom
    )
    rng = np.random.default_rng(3)
    rad1 = np.where(inside_both.reshape(g1.shape), rng.uniform(1, 50, g1.shape), 0.0)
    # place the same field on g2 (pixel-aligned grids, both on multiples of 1/240 degree)
    off_y = round((g2.transform.f - g1.transform.f) / g1.transform.e)
    off_x = round((g1.transform.c - g2.transform.c) / g1.transform.a)
    rad2 = np.zeros(g2.shape)
    rad2[off_y : off_y + g1.shape[0], off_x : off_x + g1.shape[1]] = rad1
    s1 = w1 @ rad1.ravel()
    s2 = w2 @ rad2.ravel()
    assert s1.sum() == pytest.approx(rad1.sum(), rel=1e-9)
    assert s2.sum() == pytest.approx(rad1.sum(), rel=1e-9)


def test_missing_months_stay_nan_and_partial_coverage() -> None:
    city = _city(1000.0)
    tg = tile_grid(city)
    ntl = _ntl(city, n_time=3)
    ntl["cf_cvg"][1] = 0  # a month with no clear observation
    ntl["radiance"][2, :, : ntl.sizes["x"] // 2] = np.nan  # west half missing
    ds = ntl_tile_indicators(ntl, ntl_tile_weights(ntl_geobox(city), tg), tg)
    assert np.isnan(ds["ntl_sum"][1]).all()
    assert np.isnan(ds["ntl_mean"][1]).all()
    assert (ds["ntl_valid_fraction"][1] == 0).all()
    vf = ds["ntl_valid_fraction"][2].values
    assert (vf < 0.5).any() and (vf > 0.5).any()
    s = ds["ntl_sum"][2].values
    assert np.isnan(s[vf < 0.5]).all()
    assert np.isfinite(s[vf >= 0.5]).all()
    assert np.isfinite(ds["ntl_sum"][0]).all()


def test_ntl_dask_matches_numpy_and_is_lazy() -> None:
    city = _city(500.0)
    tg = tile_grid(city)
    ntl = _ntl(city, n_time=4)
    ntl["radiance"][1, 0, 0] = np.nan
    w = ntl_tile_weights(ntl_geobox(city), tg)
    eager = ntl_tile_indicators(ntl, w, tg)
    with dask.config.set(scheduler=_raise_if_computes):
        lazy = ntl_tile_indicators(ntl.chunk({"time": 1, "y": 2}), w, tg)
        anom = ntl_anomaly(lazy["ntl_sum"], valid_fraction=lazy["ntl_valid_fraction"])
        trend = ntl_trend(lazy["ntl_sum"])
    assert isinstance(lazy["ntl_sum"].data, dsa.Array)
    xr.testing.assert_allclose(eager, lazy.compute())
    xr.testing.assert_allclose(
        ntl_anomaly(eager["ntl_sum"], valid_fraction=eager["ntl_valid_fraction"]),
        anom.compute(),
    )
    xr.testing.assert_allclose(ntl_trend(eager["ntl_sum"]), trend.compute())


def _tile_series(n_time: int, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    season = 100 + 20 * np.sin(2 * np.pi * t / 12)
    data = season[:, None, None] + rng.normal(0, 2, size=(n_time, 2, 3))
    return xr.DataArray(
        data.astype("float32"),
        dims=("time", "tile_y", "tile_x"),
        coords={"time": _months(n_time)},
    )


def test_anomaly_flags_jump_not_low_coverage_month() -> None:
    x = _tile_series(36)
    vf = xr.ones_like(x)
    x[30, 0, 0] += 80  # a real jump
    x[20, 1, 1] += 500  # an artefact of a barely observed month
    vf[20, 1, 1] = 0.2
    z = ntl_anomaly(x, valid_fraction=vf)
    assert z[30, 0, 0] > 5
    assert np.isnan(z[20, 1, 1])
    others = z.values.copy()
    others[30, 0, 0] = 0
    assert np.nanmax(np.abs(others)) < 5
    assert z.attrs["units"] == "1"


def test_anomaly_short_series_fallback_and_flat_history() -> None:
    x = _tile_series(10)  # no calendar month repeats: baseline = the preceding months
    x[7:, 0, 1] += 200  # a load switched on and left on
    z = ntl_anomaly(x)
    assert z[7, 0, 1] > 3  # the onset stands out against the trailing history
    assert np.isnan(z[:2]).all()  # fewer than 2 preceding months: no baseline
    flat = xr.full_like(x, 10.0)
    flat[5] = 10.2  # MAD = 0: the floor (0.5 units) keeps z small
    zf = ntl_anomaly(flat)
    assert np.isfinite(zf[2:]).all()
    assert float(np.abs(zf[2:]).max()) <= 0.5


def test_trend_matches_scipy() -> None:
    rng = np.random.default_rng(42)
    n_t = 30
    data = rng.normal(0, 1, size=(n_t, 3, 4)) + 0.2 * np.arange(n_t)[:, None, None]
    data[rng.random(data.shape) < 0.2] = np.nan
    data[:, 2, 3] = np.round(data[:, 2, 3])  # ties
    data[:, 0, 0] = np.nan
    data[:3, 0, 0] = [1.0, 2.0, 3.0]  # fewer than 4 points → NaN
    x = xr.DataArray(data, dims=("time", "tile_y", "tile_x"), coords={"time": _months(n_t)})
    out = ntl_trend(x)
    t = x["time"].values.astype("int64")
    years = (t - t[0]) / (86400e9 * 365.25)
    assert np.isnan(out["ntl_trend"][0, 0]) and np.isnan(out["ntl_trend_p"][0, 0])
    for r in range(3):
        for c in range(4):
            if (r, c) == (0, 0):
                continue
            y = data[:, r, c]
            ok = np.isfinite(y)
            slope = stats.theilslopes(y[ok], years[ok]).slope
            p = stats.kendalltau(years[ok], y[ok], method="asymptotic").pvalue
            assert float(out["ntl_trend"][r, c]) == pytest.approx(slope, rel=1e-5)
            assert float(out["ntl_trend_p"][r, c]) == pytest.approx(p, rel=1e-4, abs=1e-7)


def test_lst_tile_indicators_on_30m_grid() -> None:
    city = _city(500.0)
    tg = tile_grid(city)
    gbox = aligned_geobox(city, 30)
    ny, nx = gbox.shape
    n_t = 14
    rng = np.random.default_rng(1)
    lst = 20 + rng.normal(0, 0.5, size=(n_t, ny, nx)).astype("float32")
    count = np.ones((n_t, ny, nx), dtype="int16")
    lst[3] = np.nan  # cloudy month
    count[3] = 0
    k30 = ny // tg.shape[0]
    lst[13, :k30, :k30] += 6  # one tile heats up (a city-wide hot month is not an anomaly)
    lst[12] += 8  # the whole city in a heat wave
    coords = {"time": _months(n_t), "y": gbox.coords["y"].values, "x": gbox.coords["x"].values}
    da = xr.DataArray(lst, dims=("time", "y", "x"), coords=coords, name="lst")
    cnt = xr.DataArray(count, dims=("time", "y", "x"), coords=coords, name="lst_count")
    ds = lst_tile_indicators(da, cnt, tg)
    assert ds["lst_mean"].shape == (n_t, *tg.shape)
    assert np.isnan(ds["lst_mean"][3]).all()
    assert (ds["lst_valid_fraction"][3] == 0).all()
    np.testing.assert_allclose(ds["lst_valid_fraction"][0], 1.0)
    np.testing.assert_allclose(ds["lst_mean"][0], 20, atol=0.2)
    heat = ds["lst_anomaly"].values
    assert heat[13, 0, 0] > 5
    assert np.nanmax(np.abs(heat[13][1:, :])) < 1 and np.nanmax(np.abs(heat[12])) < 1
    assert np.isnan(ds["lst_anomaly"][3]).all()
    assert ds["lst_mean"].attrs["units"] == "degC"
    with dask.config.set(scheduler=_raise_if_computes):
        lazy = lst_tile_indicators(da.chunk({"time": 5}), cnt.chunk({"time": 5}), tg)
    # in memory the pixel terms are taken a month at a time, on Dask over the whole cube:
    # each month's reductions are its own, so the same values bit for bit
    xr.testing.assert_identical(ds, lazy.compute())


def test_lst_of_staged_months_equals_lst_of_months_in_memory(tmp_path: Path) -> None:
    """A run stages its Landsat months as made (``staging.stage_whole``, read back lazily
    a month whole) instead of holding the year: the same tiles, bit for bit, as from the
    months in memory; and months kept in the month cache (blocks of 500 px) too."""
    from payesh import staging
    from payesh.parallel import whole_along
    from payesh.rundata import MonthlyData

    city = _city(500.0)
    tg = tile_grid(city)
    gbox = aligned_geobox(city, 30)
    ny, nx = gbox.shape
    rng = np.random.default_rng(7)
    months = []
    for i, t in enumerate(_months(5)):
        lst = (15 + 3 * i + rng.normal(0, 2, (1, ny, nx))).astype("float32")
        lst[0, rng.random((ny, nx)) < 0.3] = np.nan
        count = np.where(np.isnan(lst), 0, rng.integers(1, 3, (1, ny, nx))).astype("int16")
        coords = {"time": [t], "y": gbox.coords["y"].values, "x": gbox.coords["x"].values}
        months.append(
            xr.Dataset(
                {"lst": (("time", "y", "x"), lst), "lst_count": (("time", "y", "x"), count)},
                coords=coords,
                attrs={"source_items": [f"LC-{i}"]},
            )
        )
    held = MonthlyData.from_lists({"landsat": months}).landsat
    assert held is not None and held["lst"].chunks is None
    expected = lst_tile_indicators(held["lst"], held["lst_count"], tg)
    staged = [staging.stage_whole(m, tmp_path, f"landsat-{i}") for i, m in enumerate(months)]
    assert staged[0]["lst"].chunks == ((1,), (ny,), (nx,))  # a month whole
    blocks = [  # as the month cache keeps them
        staging.open_staged(staging.stage_dataset(m, tmp_path, f"kept-{i}", block=7))
        for i, m in enumerate(months)
    ]
    for parts in (staged, blocks):
        lazy = MonthlyData.from_lists({"landsat": parts}).landsat
        assert lazy is not None and lazy["lst"].chunks is not None
        whole = whole_along(lazy, "y", "x")
        got = lst_tile_indicators(whole["lst"], whole["lst_count"], tg).compute()
        xr.testing.assert_identical(got, expected)


def test_tile_reduce_sum_mean_count() -> None:
    city = _city(500.0)
    tg = tile_grid(city)
    ny, nx = tg.geobox.shape
    data = np.ones((ny, nx), dtype="float32")
    data[:10, :10] = np.nan
    da = xr.DataArray(
        data,
        dims=("y", "x"),
        coords={"y": tg.geobox.coords["y"].values, "x": tg.geobox.coords["x"].values},
    )
    k = tg.tile_pixels
    assert float(tile_reduce(da, tg, how="sum")[0, 0]) == k * k - 100
    assert int(tile_reduce(da, tg, how="count")[0, 0]) == k * k - 100
    assert float(tile_reduce(da, tg, how="mean")[0, 0]) == 1.0
    coords = tile_coords_dataset(tg)
    assert coords["tile"].values[0, 1] == "r000c001"
    assert coords["lon"].shape == tg.shape


def _tiles_for_electricity(n_t: int, seed: int = 0) -> tuple[xr.Dataset, pd.Series]:
    rng = np.random.default_rng(seed)
    ntl = rng.uniform(10, 100, size=(1, 3, 3)) * (1 + 0.02 * np.arange(n_t))[:, None, None]
    ntl = ntl * (1 + rng.normal(0, 0.02, size=(n_t, 3, 3)))
    bf = np.clip(ntl / 200, 0, 1)
    lst = 20 + 12 * np.sin(2 * np.pi * np.arange(n_t) / 12)[:, None, None] + np.zeros((1, 3, 3))
    ds = xr.Dataset(
        {
            "ntl_sum": (("time", "tile_y", "tile_x"), ntl.astype("float32")),
            "builtup_fraction": (("time", "tile_y", "tile_x"), bf.astype("float32")),
            "lst_mean": (("time", "tile_y", "tile_x"), lst.astype("float32")),
        },
        coords={
            "time": _months(n_t),
            "tile_y": [2500.0, 1500.0, 500.0],
            "tile_x": [500.0, 1500, 2500],
        },
    )
    total = ntl.sum(axis=(1, 2))
    cons = pd.Series(
        300 + 4.0 * total + rng.normal(0, 5, n_t), index=pd.DatetimeIndex(_months(n_t))
    )
    return ds, cons


def test_electricity_estimate_calibrates_and_distributes() -> None:
    ds, cons = _tiles_for_electricity(24)
    ds["ntl_sum"][5, 0, 0] = np.nan
    est, card = electricity_estimate(ds, cons, seed=0)
    assert est is not None
    assert est.name == "electricity_mwh" and est.attrs["units"] == "MWh"
    assert card["n_months"] == 24 and "3 consecutive months" in card["cv"]
    assert card["cv_r2"] > 0.8
    assert card["cv_mape"] < 0.05
    # every nested feature set is scored; lights carry this synthetic consumption
    assert set(card["cv_by_features"]) == {
        "lights",
        "lights + built-up",
        "lights + heat",
        "lights + built-up + heat",
    }
    assert card["cv_by_features"]["lights"]["cv_r2"] > 0.8
    assert card["cv_by_features"]["lights + built-up + heat"]["cv_r2"] == card["cv_r2"]
    assert len(card["months"]) == len(card["reported_mwh"]) == 24
    assert np.isnan(est[5, 0, 0])
    assert (est.fillna(0) >= 0).all()
    # tile estimates add up to the city estimate in fully observed months
    city = est.sum(("tile_y", "tile_x")).values
    np.testing.assert_allclose(city[[0, 10, 20]], cons.to_numpy()[[0, 10, 20]], rtol=0.05)
    # brighter tiles get more
    m0 = est[0].values.ravel()
    assert np.corrcoef(m0, ds["ntl_sum"][0].values.ravel())[0, 1] > 0.9


def test_electricity_absent_without_consumption() -> None:
    ds, cons = _tiles_for_electricity(12)
    est, card = electricity_estimate(ds, None)
    assert est is None and card["n_months"] == 0
    est, card = electricity_estimate(ds, cons.iloc[:4])
    assert est is None and "need" in card["reason"]


def test_load_suspect_flags_unexplained_light() -> None:
    dims = ("time", "tile_y", "tile_x")
    z = np.zeros((3, 1, 3), dtype="float32")
    heat = np.zeros_like(z)
    bf = np.full_like(z, 0.3)
    bf[2] = [0.5, 0.5, 0.3]
    z[2] = [4.0, 4.0, 4.0]
    heat[2] = [6.2, 0.0, 3.0]
    # tile 0: grew but hot; tile 1: light only (bloom from a neighbour); tile 2: static, hot
    z[1, 0, 0] = np.nan
    ds = xr.Dataset(
        {"ntl_anomaly": (dims, z), "lst_anomaly": (dims, heat), "builtup_fraction": (dims, bf)},
        coords={"time": _months(3)},
    )
    out = load_suspect(ds)
    flag = out["load_suspect"].values
    assert flag.dtype == np.int8
    assert flag[2].tolist() == [[1, 0, 1]]
    assert flag[:2].sum() == 0
    reason = out["load_suspect_reason"].values
    assert reason[2, 0, 0].startswith("light +4.0σ; heat +6.2 °C")
    assert "built-up unchanged" in reason[2, 0, 2]
    assert reason[2, 0, 1] == ""  # light alone never accuses
    assert reason[0, 0, 0] == ""
    ev = out["load_suspect_evidence"]
    assert ev.dtype == np.int8 and ev.attrs["flag_masks"] == [1, 2, 4]
    assert ev.attrs["flag_meanings"] == "light heat builtup_unchanged"
    # tile 0 grew (light + heat), tile 1 grew (light only), tile 2 static (all three)
    assert ev.values[2].tolist() == [[1 | 2, 1, 1 | 2 | 4]]
    assert ev.values[0].tolist() == [[4, 4, 4]]  # quiet and unchanged: only "static"
    score = out["load_suspect_score"].values
    assert np.isnan(score[1, 0, 0])
    assert score[2, 0, 0] >= 0.25 and score[2, 0, 1] < score[2, 0, 0]
    lazy = load_suspect(ds.chunk({"time": 1}))
    xr.testing.assert_identical(out, lazy.compute())


def test_ntl_on_odc_grid_dims_and_crs_coord_dropped() -> None:
    from odc.geo.xr import xr_zeros

    city = _city(500.0)
    tg = tile_grid(city)
    gbox = ntl_geobox(city)
    z = xr_zeros(gbox, dtype="float32", time=_months(2))  # dims (time, latitude, longitude)
    ntl = xr.Dataset({"radiance": z + 3, "cf_cvg": (z + 5).astype("uint16")})
    w = ntl_tile_weights(gbox, tg)
    out = ntl_tile_indicators(ntl, w, tg)
    assert "spatial_ref" not in out.coords  # the EPSG:4326 grid's CRS is not the tiles'
    np.testing.assert_allclose(out["ntl_mean"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out["lit_fraction"], 0.0)
    np.testing.assert_allclose(out["ntl_valid_fraction"], 1.0, atol=1e-6)
    # one or two clear nights count a third / two thirds (MIN_CLEAR_NIGHTS = 3)
    for nights, share in ((1, 1 / 3), (2, 2 / 3), (9, 1.0)):
        few = ntl_tile_indicators(ntl.assign(cf_cvg=(z + nights).astype("uint16")), w, tg)
        np.testing.assert_allclose(few["ntl_valid_fraction"], share, rtol=1e-5)
        assert np.isnan(few["ntl_sum"]).all() == (share < 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nonnegative_linear_is_sklearns_positive_regression(seed: int) -> None:
    """The electricity model, written out without scikit-learn, fits, predicts, scores and
    cross-validates as ``LinearRegression(positive=True)`` with ``GroupKFold`` does."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from payesh.indicators.electricity import CV_BLOCK_MONTHS, NonNegativeLinear, _block_cv

    rng = np.random.default_rng(seed)
    n = 24
    x = np.column_stack(
        [rng.uniform(1e4, 5e4, n), rng.uniform(5, 9, n), np.maximum(rng.normal(2, 3, n), 0)]
    )
    # one coefficient negative in truth: nnls must clip it, as scikit-learn does
    y = 3.0 * x[:, 0] - 4000.0 * x[:, 1] + 500.0 * x[:, 2] + 2e5 + rng.normal(0, 5e3, n)
    ours = NonNegativeLinear.fit(x, y)
    ref = LinearRegression(positive=True).fit(x, y)
    assert (ours.coef_ >= 0).all() and ours.coef_[1] == 0.0
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-9, atol=1e-12)
    assert ours.intercept_ == pytest.approx(float(ref.intercept_), rel=1e-9)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), rtol=1e-9)
    assert ours.score(x, y) == pytest.approx(ref.score(x, y), rel=1e-9)

    months = pd.date_range("2024-01-01", periods=n, freq="MS")[rng.permutation(n)]
    r2, mape = _block_cv(x, y, pd.DatetimeIndex(months))
    order = np.argsort(months.values)
    groups = np.empty(n, dtype="int64")
    groups[order] = np.arange(n) // CV_BLOCK_MONTHS
    pred = cross_val_predict(
        LinearRegression(positive=True),
        x,
        y,
        cv=GroupKFold(int(groups.max()) + 1),
        groups=groups,
    )
    assert r2 == pytest.approx(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-9)
    assert mape == pytest.approx(float(np.mean(np.abs(pred - y) / np.abs(y))), rel=1e-9)


def test_energy_facade_reexports_the_public_names() -> None:
    """``payesh.indicators.energy`` is a facade: every public name it had before it was
    split is still there, and is the very object of the module that holds it."""
    from payesh.indicators import anomaly, electricity, energy, lst, nightlights, suspect, trend

    homes = (nightlights, anomaly, trend, lst, electricity, suspect)
    for module in homes:
        for name in module.__all__:
            assert getattr(energy, name) is getattr(module, name), name
    assert set(energy.__all__) <= {name for module in homes for name in module.__all__}
    assert {"ntl_tile_indicators", "ntl_anomaly", "electricity_estimate"} <= set(energy.__all__)
